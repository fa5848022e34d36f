"""The state store's migrations, one file per revision (``0001_initial.py`` is the schema of the first release)."""
