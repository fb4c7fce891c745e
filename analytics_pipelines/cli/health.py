"""`analytics-pipelines health`: are the database, the object store, the landing prefixes and the
latest deliveries ok?"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "health",
        help="check the database, the object store, the landing prefixes and the latest deliveries",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.health import check_health, store_from_settings
    from analytics_pipelines.lib.settings import load_settings

    settings = load_settings()
    sources = load_catalog(settings.catalog_dir).sources.values()
    report = check_health(settings.database_url_plain, store_from_settings(settings), sources)
    print(json.dumps(report))
    return 0 if report["status"] == "ok" else 1
