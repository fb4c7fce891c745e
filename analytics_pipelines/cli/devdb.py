"""`analytics-pipelines dev-db`: the project-local PostgreSQL used by `make dev`.

`start` and `url` give the URL of the pipelines' role (`analytics_pipelines`, with its password);
`admin-url` the superuser's, through the server's socket (role management, `psql` as the DBA).
"""

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
    parser.add_argument("action", choices=["start", "stop", "url", "admin-url", "status"])
    parser.add_argument("--datadir", type=Path, default=DEFAULT_DATADIR)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        server = LocalPostgres(args.datadir, args.port, password_auth=True)
        password_file = args.datadir.parent / "runtime-db-password"
        if args.action == "start":
            from analytics_pipelines.lib.access.runtime_role import runtime_login

            server.start()
            print(runtime_login(server, password_file)[0])
        elif args.action == "stop":
            server.stop()
        elif args.action == "url":
            if not password_file.exists():
                sys.stderr.write("no runtime role yet: run `analytics-pipelines dev-db start`\n")
                return 1
            from analytics_pipelines.lib.access.runtime_role import runtime_password, runtime_url

            print(
                runtime_url(
                    "127.0.0.1", args.port, server.database, runtime_password(password_file)
                )
            )
        elif args.action == "admin-url":
            print(server.admin_url)
        else:
            running = server.is_running()
            print("running" if running else "stopped")
            return 0 if running else 1
    except PostgresUnavailable as error:
        sys.stderr.write(f"{error}\n")
        return 1
    return 0
