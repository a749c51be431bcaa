"""``python -m templatekit`` runs the command line."""

from .cli import main

main()
