"""``python -m oscdeep`` runs the command-line interface."""

from oscdeep.cli import main

main()
