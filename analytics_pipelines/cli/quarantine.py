"""`analytics-pipelines quarantine show|replay SOURCE` and `clean rebuild SOURCE`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analytics_pipelines.lib.catalog import SourceSpec
    from analytics_pipelines.lib.clean.reference_changes import LookupUses
    from analytics_pipelines.lib.warehouse import Warehouse


def register(commands: Any) -> None:
    parser = commands.add_parser("quarantine", help="inspect and replay quarantined rows")
    sub = parser.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="list why rows of a source are quarantined, with counts")
    show.add_argument("source")
    show.set_defaults(func=run_show)
    replay = sub.add_parser(
        "replay", help="validate quarantined rows again (after fixing the catalog)"
    )
    replay.add_argument("source")
    replay.set_defaults(func=run_replay)

    clean = commands.add_parser("clean", help="operate on clean tables")
    clean_sub = clean.add_subparsers(dest="clean_command", required=True, metavar="ACTION")
    rebuild = clean_sub.add_parser(
        "rebuild", help="drop clean.SOURCE and its quarantine and clean every loaded file again"
    )
    rebuild.add_argument("source")
    rebuild.set_defaults(func=run_rebuild)


class UnknownSource(Exception):
    """The command names a source the catalog does not declare."""


@contextmanager
def _source_and_warehouse(name: str) -> Iterator[tuple[SourceSpec, Warehouse, LookupUses]]:
    """The declared source, a one-connection warehouse (closed when the command ends) and the
    lookups that read the source (a reference source's changes touch their periods)."""
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.settings import load_settings
    from analytics_pipelines.lib.warehouse import Warehouse

    settings = load_settings()
    catalog = load_catalog(settings.catalog_dir)
    source = catalog.sources.get(name)
    if source is None:
        raise UnknownSource(f"unknown source {name!r}: it is not declared in the catalog")
    warehouse = Warehouse(settings.database_url_plain, pool_size=1)
    try:
        yield source, warehouse, catalog.lookups_of(name)
    finally:
        warehouse.dispose()


def _reports_unknown_source(
    run: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except UnknownSource as error:
            sys.stderr.write(f"{error}\n")
            return 2

    return wrapper


@_reports_unknown_source
def run_show(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.clean.replay import quarantine_summary

    with _source_and_warehouse(args.source) as (source, warehouse, _):
        summary = quarantine_summary(warehouse, source)
    print(f"{summary.rows} quarantined rows in {source.name}")
    if summary.reasons:
        width = max(len(f"{r.column}.{r.rule}") for r in summary.reasons)
        for reason in summary.reasons:
            label = f"{reason.column}.{reason.rule}"
            print(f"{reason.rows:>10}  {label:<{width}}  {reason.message}")
    return 0


@_reports_unknown_source
def run_replay(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.clean.replay import replay_quarantine
    from analytics_pipelines.lib.clean.schema import SchemaDriftError

    with _source_and_warehouse(args.source) as (source, warehouse, lookups):
        try:
            report = replay_quarantine(warehouse, source, lookups)
        except SchemaDriftError as error:
            sys.stderr.write(f"{error}\n")
            return 1
    print(
        f"{source.name}: {report.examined} quarantined rows re-validated, {report.released} now"
        f" pass ({report.landed} into clean, {report.replaced} replaced by newer rows),"
        f" {report.still_quarantined} still quarantined"
    )
    return 0


@_reports_unknown_source
def run_rebuild(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.clean.replay import rebuild_clean

    with _source_and_warehouse(args.source) as (source, warehouse, lookups):
        report = rebuild_clean(warehouse, source, lookups)
    print(
        f"clean.{source.name} rebuilt: {report.files} file versions, {report.clean_rows} clean,"
        f" {report.quarantined_rows} quarantined, {report.replaced_rows} replaced"
    )
    return 0
