"""`analytics-pipelines catalog validate | import`: check the catalog, or import a sheet into it.

    analytics-pipelines catalog validate [--dir DIR]
    analytics-pipelines catalog import FILE.xlsx|FILE.csv [--dir DIR] [--out DIR]

The sheet layout is described in `analytics_pipelines.lib.catalog.importer`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser("catalog", help="work with the source and KPI catalog")
    sub = parser.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    validate = sub.add_parser("validate", help="validate the catalog folder")
    validate.add_argument(
        "--dir", type=Path, default=None, help="catalog folder (default: CATALOG_DIR)"
    )
    validate.set_defaults(func=run_validate)
    importer = sub.add_parser(
        "import", help="turn a sheet (.xlsx/.csv) of KPI and source definitions into catalog YAML"
    )
    importer.add_argument("file", type=Path, help="the .xlsx or .csv sheet")
    importer.add_argument(
        "--dir", type=Path, default=None, help="catalog to check against (default: CATALOG_DIR)"
    )
    importer.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder to write the resulting catalog to (the checked catalog's files plus the "
        "imported ones, so that it validates on its own); default: the catalog folder itself",
    )
    importer.set_defaults(func=run_import)


def catalog_dir(explicit: Path | None) -> Path:
    """The folder to use: an explicit --dir, else CATALOG_DIR, else the shipped demo catalog."""
    if explicit is not None:
        return explicit
    import os

    from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR

    return Path(os.environ["CATALOG_DIR"]) if os.environ.get("CATALOG_DIR") else DEMO_CATALOG_DIR


def run_validate(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.catalog import load_catalog

    catalog = load_catalog(catalog_dir(args.dir))
    print(
        f"catalog {catalog.root}: {len(catalog.sources)} sources, {len(catalog.kpis)} KPIs, all valid"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.catalog.importer import CatalogImportError, import_sheet
    from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR

    if not args.file.is_file():
        sys.stderr.write(f"{args.file}: no such file\n")
        return 2
    checked = catalog_dir(args.dir)
    if args.out is None and checked.resolve() == DEMO_CATALOG_DIR.resolve():
        # The demo catalog ships inside the package: an upgrade would silently drop the import.
        sys.stderr.write(
            f"{args.file}: nothing written: the catalog is the demo catalog shipped in the "
            f"package ({checked}); pass --out DIR to write a catalog of your own (the demo's "
            "files plus the import), or set CATALOG_DIR / --dir to your catalog folder\n"
        )
        return 2
    try:
        result = import_sheet(args.file, checked, args.out)
    except CatalogImportError as error:
        sys.stderr.write(f"{args.file}: nothing written, {len(error.problems)} problem(s):\n")
        for problem in error.problems:
            sys.stderr.write(f"  {problem}\n")
        return 1
    print(
        f"imported {len(result.kpis)} KPIs and {len(result.sources)} sources from {args.file}: "
        + ", ".join(str(p) for p in result.written)
    )
    if result.copied:
        print(
            f"with the {len(result.copied)} file(s) of {checked} beside them, {args.out} holds a "
            f"complete catalog: CATALOG_DIR={args.out}"
        )
    return 0
