"""Alembic environment: runs on the connection handed over by `Ledger.migrate`,
or on `sqlalchemy.url` when alembic is run by hand."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from reka_ingest.ledger.schema import Base

config = context.config
target = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
