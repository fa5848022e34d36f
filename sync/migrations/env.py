"""Alembic's entry point for the state store's migrations.

:func:`sync.store.upgrade_store` runs it on a connection it passes in
``config.attributes["connection"]``, inside a transaction it holds (with the schema
lock) and commits. Without one (``alembic.command`` on :func:`sync.store.alembic_config`
with a URL, e.g. to draft a revision with autogenerate) it opens its own engine.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from sync.store import make_engine
from sync.tables import TABLES

OURS = {t.__tablename__ for t in TABLES}


def include_name(name: str | None, type_: str, _parents: dict) -> bool:
    """Autogenerate compares the state store's tables only."""
    return type_ != "table" or name in OURS


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        include_name=include_name,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


config = context.config
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=SQLModel.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run_migrations(config.attributes["connection"])
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()
