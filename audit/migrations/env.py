"""Alembic environment for the pacecds audit store.

Run by `AuditStore.migrate()` with an open connection (in `config.attributes`), or by
the alembic CLI with `-x url=...` / PACECDS_DATABASE_URL.
"""
import sqlalchemy as sa
from alembic import context

VERSION_TABLE = "pacecds_audit_alembic_version"
config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, version_table=VERSION_TABLE, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()
else:
    from audit.config import database_url

    url = context.get_x_argument(as_dictionary=True).get("url") or database_url()
    if context.is_offline_mode():
        context.configure(url=url, version_table=VERSION_TABLE, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            context.configure(connection=conn, version_table=VERSION_TABLE)
            with context.begin_transaction():
                context.run_migrations()
