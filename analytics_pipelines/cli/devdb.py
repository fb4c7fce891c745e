"""`analytics-pipelines dev-db`: the project-local PostgreSQL used by `make dev`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from analytics_pipelines.lib.pgserver import LocalPostgres, PostgresUnavailable

DEFAULT_DATADIR = Path(".data/postgres")
DEFAULT_PORT = 54329


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dev-db", help="start or stop the project-local PostgreSQL under .data/"
    )
    parser.add_argument("action", choices=["start", "stop", "url", "status"])
    parser.add_argument("--datadir", type=Path, default=DEFAULT_DATADIR)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        server = LocalPostgres(args.datadir, args.port)
        if args.action == "start":
            print(server.start())
        elif args.action == "stop":
            server.stop()
        elif args.action == "url":
            print(server.url)
        else:
            running = server.is_running()
            print("running" if running else "stopped")
            return 0 if running else 1
    except PostgresUnavailable as error:
        sys.stderr.write(f"{error}\n")
        return 1
    return 0
