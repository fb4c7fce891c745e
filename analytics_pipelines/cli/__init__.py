"""`analytics-pipelines`: the operator's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from analytics_pipelines.cli import (
    access,
    catalog,
    demo,
    dev,
    devdb,
    files,
    health,
    kpi,
    quarantine,
    refresh,
)

# Each module adds its own sub-commands; a sub-command sets `func(args) -> int`.
COMMAND_MODULES = [health, dev, devdb, catalog, demo, quarantine, kpi, files, refresh, access]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analytics-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from analytics_pipelines.lib.settings import resolve_environment

    resolve_environment()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if _is_users_to_fix(error):
            sys.stderr.write(f"{error}\n")
            return 2
        unreachable = _database_unreachable(error)
        if unreachable is not None:
            sys.stderr.write(f"{unreachable}\n")
            return 1
        raise


# Errors whose message says all (bad settings, invalid catalog): no traceback. Their modules are
# looked up only if the command imported them, so building the parser imports neither.
_USER_ERRORS = (
    ("analytics_pipelines.lib.settings", "SettingsError"),
    ("analytics_pipelines.lib.catalog", "CatalogError"),
)


def _database_unreachable(error: Exception) -> str | None:
    """One line instead of a traceback when the database cannot be reached (or refuses us)."""
    pg = sys.modules.get("analytics_pipelines.lib.pg")
    if pg is None:
        return None
    if isinstance(error, pg.WarehouseError):
        return str(error)
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(error, sqlalchemy_exc.OperationalError):
        return pg.describe_db_error(error)
    return None


def _is_users_to_fix(error: Exception) -> bool:
    for module_name, class_name in _USER_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, getattr(module, class_name)):
            return True
    return False


if __name__ == "__main__":
    raise SystemExit(main())
