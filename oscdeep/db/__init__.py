"""The library database: SQLAlchemy models, engine and queries. No image maths here."""
