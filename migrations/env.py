"""Alembic environment: the URL comes from DATABASE_URL through the project settings."""

from __future__ import annotations

import sys
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from analytics_pipelines.lib.settings import normalise_database_url
from analytics_pipelines.lib.warehouse import describe_db_error

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    explicit = config.attributes.get("database_url")
    if explicit:
        return normalise_database_url(str(explicit))
    from analytics_pipelines.lib.settings import SettingsError, load_database_url

    try:
        return load_database_url()
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        raise SystemExit(2) from None


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), literal_binds=True, version_table_schema="public")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = sa.create_engine(
        _database_url(), poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5}
    )
    try:
        connection = engine.connect()
    except sa.exc.OperationalError as error:
        sys.stderr.write(f"cannot migrate: {describe_db_error(error)}\n")
        raise SystemExit(1) from None
    with connection:
        # Each revision runs in the one transaction: a failure leaves the schema as it was.
        context.configure(connection=connection, transaction_per_migration=False)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
