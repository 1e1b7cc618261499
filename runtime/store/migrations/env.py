"""Alembic environment for the registry: always run through runtime.store.migrate with a live connection."""

from alembic import context

from runtime.store.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
