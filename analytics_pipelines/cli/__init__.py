"""`analytics-pipelines`: the operator's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from analytics_pipelines.cli import catalog, demo, dev, devdb, files, health, kpi, quarantine
from analytics_pipelines.lib.catalog import CatalogError
from analytics_pipelines.lib.settings import SettingsError

# Each module adds its own sub-commands; a sub-command sets `func(args) -> int`.
COMMAND_MODULES = [health, dev, devdb, catalog, demo, quarantine, kpi, files]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analytics-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from dotenv import load_dotenv

    load_dotenv(override=False)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    except CatalogError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
