"""`analytics-pipelines catalog validate`: check the declared sources and KPIs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from analytics_pipelines.lib.catalog import load_catalog
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR


def register(commands: Any) -> None:
    parser = commands.add_parser("catalog", help="work with the source and KPI catalog")
    sub = parser.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    validate = sub.add_parser("validate", help="validate the catalog folder")
    validate.add_argument(
        "--dir", type=Path, default=None, help="catalog folder (default: CATALOG_DIR)"
    )
    validate.set_defaults(func=run_validate)


def catalog_dir(explicit: Path | None) -> Path:
    """The folder to use: an explicit --dir, else CATALOG_DIR, else the shipped demo catalog."""
    if explicit is not None:
        return explicit
    import os

    return Path(os.environ["CATALOG_DIR"]) if os.environ.get("CATALOG_DIR") else DEMO_CATALOG_DIR


def run_validate(args: argparse.Namespace) -> int:
    catalog = load_catalog(catalog_dir(args.dir))
    print(
        f"catalog {catalog.root}: {len(catalog.sources)} sources, {len(catalog.kpis)} KPIs, all valid"
    )
    return 0
