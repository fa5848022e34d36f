"""Alembic migrations of the state store (applied by :func:`sync.store.upgrade_store`; ``env.py`` is Alembic's entry point)."""
