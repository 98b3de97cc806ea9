"""Alembic migrations of the library database (installed as ``oscdeep.migrations``)."""
