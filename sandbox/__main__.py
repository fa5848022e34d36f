"""``python -m sandbox``: the same as ``appt-sync sandbox``."""

from .cli import main

main()
