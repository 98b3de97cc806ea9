"""File formats: reading frames and their metadata, writing outputs. No database here."""
