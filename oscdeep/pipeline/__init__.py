"""Joins files, processing and the database; returns results, never prints."""
