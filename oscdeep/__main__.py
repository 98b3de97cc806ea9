"""``python -m oscdeep`` runs the command-line interface."""

from oscdeep.cli import entry

entry()
