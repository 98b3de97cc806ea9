"""Errors whose messages are safe to show a user: what went wrong, where, what to do."""

from __future__ import annotations

from pathlib import Path


class OscdeepError(Exception):
    """Base of every error oscdeep reports to a user as one line."""


class ConfigError(OscdeepError):
    """A setting or option is invalid."""


class DatabaseError(OscdeepError):
    """The library database cannot be opened, created or upgraded."""


class QueryError(OscdeepError):
    """A frame selection query cannot be parsed."""


class FrameReadError(OscdeepError):
    """A file cannot be read as an image frame."""

    def __init__(self, path: Path | str, cause: str) -> None:
        self.path = Path(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class UnsupportedFileError(FrameReadError):
    """A file is not a format oscdeep reads."""


class NotFoundError(OscdeepError):
    """A named session, target, master or stack does not exist."""


class RegistrationError(OscdeepError):
    """A frame's stars could not be matched to the reference's; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
