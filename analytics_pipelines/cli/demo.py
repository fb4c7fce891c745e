"""`analytics-pipelines demo generate`: write realistic demo files into the landing area."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics_pipelines.cli.catalog import catalog_dir
from analytics_pipelines.lib.demo.defaults import DEFAULT_START, Shares

if TYPE_CHECKING:
    from analytics_pipelines.lib.storage import ObjectStore


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 0.2:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 0.2, got {text}")
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def register(commands: Any) -> None:
    parser = commands.add_parser("demo", help="generate demo data")
    sub = parser.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    gen = sub.add_parser(
        "generate",
        help="write demo files for every catalog source under its landing prefix",
        description=(
            "Write deterministic, realistic landing files for the catalog's demo sources, "
            "with a small share of bad rows, repeated primary keys and late-arriving events. "
            "The same arguments always give byte-identical files."
        ),
    )
    gen.add_argument(
        "--rows", type=_non_negative, default=10_000, help="rows per source (all files)"
    )
    gen.add_argument("--days", type=_positive, default=7, help="business days covered")
    gen.add_argument("--seed", type=_non_negative, default=42, help="random seed")
    gen.add_argument(
        "--start-date",
        type=_day,
        default=DEFAULT_START,
        help=f"first business day (default {DEFAULT_START.isoformat()})",
    )
    gen.add_argument(
        "--files-per-source",
        type=_positive,
        default=None,
        help="files per source (default: one per day)",
    )
    gen.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="NAME",
        help="only this source (repeatable; default: all)",
    )
    gen.add_argument("--bad-share", type=_share, default=Shares.bad, help="share of bad rows")
    gen.add_argument(
        "--duplicate-share", type=_share, default=Shares.duplicate, help="share of repeated keys"
    )
    gen.add_argument(
        "--late-share", type=_share, default=Shares.late, help="share of late rows per later file"
    )
    gen.add_argument(
        "--catalog-dir", type=Path, default=None, help="catalog folder (default: CATALOG_DIR)"
    )
    gen.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="write into this local folder instead of STORAGE_URL",
    )
    gen.set_defaults(func=run_generate)


def _store(folder: Path | None) -> ObjectStore:
    from analytics_pipelines.lib.storage import LocalFolderStore

    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        return LocalFolderStore(folder.resolve())
    from analytics_pipelines.lib.health import store_from_settings
    from analytics_pipelines.lib.settings import get_settings

    return store_from_settings(get_settings())


def run_generate(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.demo import DemoError, generate_demo
    from analytics_pipelines.lib.storage import StorageError

    catalog = load_catalog(catalog_dir(args.catalog_dir))
    names = args.source or sorted(catalog.sources)
    unknown = [name for name in names if name not in catalog.sources]
    if unknown:
        sys.stderr.write(
            f"unknown source(s) {', '.join(unknown)}; the catalog declares "
            f"{', '.join(sorted(catalog.sources))}\n"
        )
        return 2
    try:
        store = _store(args.folder)
        summaries = generate_demo(
            store,
            [catalog.sources[name] for name in names],
            rows=args.rows,
            days=args.days,
            seed=args.seed,
            start=args.start_date,
            files_per_source=args.files_per_source,
            shares=Shares(bad=args.bad_share, duplicate=args.duplicate_share, late=args.late_share),
        )
    except DemoError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    except StorageError as error:
        sys.stderr.write(f"cannot write demo files: {error}\n")
        return 1
    where = store.describe().rstrip("/")
    for summary in summaries:
        print(
            f"{summary.source}: {len(summary.files)} files, {summary.rows} rows "
            f"({summary.bad} bad, {summary.duplicates} duplicates, {summary.late} late) "
            f"-> {where}/{summary.prefix}"
        )
    return 0
