"""Alembic's environment, run only through ``oos_notify.store.migrate``.

There is no alembic.ini: ``migrate`` builds the configuration and hands over an open connection in
``config.attributes["connection"]``, so it chooses the engine, the lock and the transaction.
Offline (``--sql``) mode is not supported.
"""

from alembic import context

from oos_notify.store.migrations_options import context_options

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through oos_notify.store.migrate, which passes a connection")

context.configure(connection=connection, **context_options(connection))
with context.begin_transaction():
    context.run_migrations()
