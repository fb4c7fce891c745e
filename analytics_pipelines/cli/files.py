"""`analytics-pipelines files`: what became of each delivered file, and retrying failed ones.

The database and catalog modules are imported inside the commands: `--help` pays for neither,
and the listing reads the ledger through psycopg2 alone (no SQLAlchemy: it answers at once).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analytics_pipelines.lib.catalog import SourceSpec
    from analytics_pipelines.lib.ingest.file_status import FileVersion
    from analytics_pipelines.lib.settings import Settings

USAGE = """
  analytics-pipelines files [SOURCE] [--status STATUS] [--format table|json] [--limit N]
  analytics-pipelines files retry SOURCE KEY|--file-id N|--all-failed"""
DEFAULT_LIMIT = 50
REASON_WIDTH = 100


class CommandError(Exception):
    """Wrong words on the command line, or something they name does not exist (exit 2)."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("expected a whole number of at least 1")
    return value


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "files",
        help="list file versions (newest first) and retry failed ones",
        usage=USAGE,
        description=(
            "Lists the ledger's file versions: key, version (file id and etag), status, rows, "
            "reason and when. `files retry` marks failed versions so the landing sensor loads "
            "them again on its next tick."
        ),
    )
    parser.add_argument(
        "words", nargs="*", metavar="SOURCE", help="a source, or `retry SOURCE [KEY]`"
    )
    parser.add_argument("--status", help="only versions with this status (e.g. failed)")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument("--limit", type=_positive, default=DEFAULT_LIMIT, help="at most N versions")
    parser.add_argument("--file-id", type=int, help="retry: the failed version with this file id")
    parser.add_argument(
        "--all-failed", action="store_true", help="retry: every failed current version of SOURCE"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.words[:1] == ["retry"]:
            return _retry(args, args.words[1:])
        return _list(args, args.words)
    except CommandError as error:
        sys.stderr.write(f"{error}\n")
        return 2


def _settings_and_sources() -> tuple[Settings, dict[str, SourceSpec]]:
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.settings import load_settings

    settings = load_settings()
    return settings, load_catalog(settings.catalog_dir).sources


def _declared(sources: dict[str, SourceSpec], name: str) -> SourceSpec:
    if name not in sources:
        declared = ", ".join(sorted(sources)) or "none"
        raise CommandError(
            f"unknown source {name!r}: it is not declared in the catalog (declared: {declared})"
        )
    return sources[name]


def _when(version: FileVersion) -> str:
    return version.when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _status(version: FileVersion) -> str:
    return f"{version.status} (retry requested)" if version.retry_requested_at else version.status


def _reason(version: FileVersion) -> str:
    text = " ".join((version.reason or "").split())
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"


def _table(versions: Sequence[FileVersion], with_source: bool) -> list[str]:
    header = ["KEY", "VERSION", "STATUS", "ROWS", "WHEN", "REASON"]
    rows = [
        [
            v.key,
            v.version,
            _status(v),
            "-" if v.rows is None else str(v.rows),
            _when(v),
            _reason(v),
        ]
        for v in versions
    ]
    if with_source:
        header.insert(0, "SOURCE")
        for row, version in zip(rows, versions, strict=True):
            row.insert(0, version.source)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    right = {header.index("ROWS")}
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row[:-1])
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


def _list(args: argparse.Namespace, words: list[str]) -> int:
    from analytics_pipelines.lib.ingest import file_status
    from analytics_pipelines.lib.pg import read_only

    if len(words) > 1:
        raise CommandError(f"expected at most one SOURCE, got {' '.join(words)!r}\nusage:{USAGE}")
    if args.file_id is not None or args.all_failed:
        raise CommandError("--file-id and --all-failed belong to `files retry SOURCE`")
    if args.status is not None and args.status not in file_status.STATUSES:
        raise CommandError(
            f"unknown status {args.status!r}: expected one of {', '.join(file_status.STATUSES)}"
        )
    settings, sources = _settings_and_sources()
    source = _declared(sources, words[0]).name if words else None
    with read_only(settings.database_url_plain) as conn:
        versions = file_status.list_versions(
            conn, source=source, status=args.status, limit=args.limit + 1
        )
    more, versions = len(versions) > args.limit, versions[: args.limit]
    if args.format == "json":
        print(json.dumps([v.as_json() for v in versions], indent=2))
        return 0
    what = " ".join(filter(None, [args.status, "file versions"]))
    if not versions:
        print(f"no {what}" + (f" of {source}" if source else ""))
        return 0
    print("\n".join(_table(versions, with_source=source is None)))
    if more:
        print(f"(the newest {args.limit} {what}; --limit N shows more)")
    return 0


def _retry(args: argparse.Namespace, words: list[str]) -> int:
    from analytics_pipelines.lib.ingest.config import sensor_interval_seconds
    from analytics_pipelines.lib.ingest.file_retry import RetryRefused, request_retry
    from analytics_pipelines.lib.warehouse import Warehouse

    if not words or len(words) > 2:
        raise CommandError(f"expected `files retry SOURCE KEY|--file-id N|--all-failed`{USAGE}")
    key = words[1] if len(words) == 2 else None
    if [key is not None, args.file_id is not None, args.all_failed].count(True) != 1:
        raise CommandError("name what to retry: exactly one of KEY, --file-id N, --all-failed")
    settings, sources = _settings_and_sources()
    source = _declared(sources, words[0])
    if key is not None and not key.startswith(source.landing_prefix):
        # A key relative to the landing prefix is what people copy from a file listing.
        key = source.landing_prefix + key
    warehouse = Warehouse(settings.database_url_plain, pool_size=1)
    try:
        with warehouse.begin() as conn:
            result = request_retry(
                conn, source.name, key=key, file_id=args.file_id, all_failed=args.all_failed
            )
    except RetryRefused as error:
        sys.stderr.write(f"{error}\n")
        return 1
    finally:
        warehouse.dispose()
    if args.format == "json":
        print(
            json.dumps(
                {
                    "marked": [v.as_json() for v in result.marked],
                    "already_requested": [v.as_json() for v in result.already_requested],
                },
                indent=2,
            )
        )
        return 0
    if not result.marked and not result.already_requested:
        print(f"{source.name} has no failed version to retry")
        return 0
    if result.marked:
        print(f"marked {len(result.marked)} failed version(s) of {source.name} for retry:")
        print("\n".join("  " + line for line in _table(result.marked, with_source=False)))
    if result.already_requested:
        print(f"already marked for retry, not yet picked up ({len(result.already_requested)}):")
        for version in result.already_requested:
            print(f"  {version.key}  {version.version}")
    print(
        f"The landing sensor landing_{source.name} loads them again on its next tick (every "
        f"{sensor_interval_seconds()} s) if the objects are still under {source.landing_prefix}; "
        f"each attempt is a new version: `analytics-pipelines files {source.name}` shows it."
    )
    return 0
