"""`analytics-pipelines access show | check | apply`: who may read which KPI rows.

    analytics-pipelines access show [--format table|json]    audiences, their KPIs and filters
    analytics-pipelines access check ROLE [--format ...]     what ROLE reads, queried as ROLE
    analytics-pipelines access apply                         roles, policies, grants from the catalog

`check` and `apply` connect with ACCESS_ADMIN_DATABASE_URL (a role that may manage roles and act
as the others), else DATABASE_URL. `show` and `check` load no SQLAlchemy (lib/pg.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

FORMATS = ("table", "json")


def register(commands: Any) -> None:
    parser = commands.add_parser("access", help="audiences: who may read which KPI rows")
    sub = parser.add_subparsers(dest="access_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="the audiences of the catalog, their KPIs and filters")
    show.add_argument(
        "--dir", type=Path, default=None, help="catalog folder (default: CATALOG_DIR)"
    )
    show.add_argument("--format", choices=FORMATS, default="table")
    show.set_defaults(func=run_show)
    check = sub.add_parser("check", help="what a role can actually read, queried as that role")
    check.add_argument("role", help="an audience name, its role (ap_audience_…) or a login role")
    check.add_argument("--format", choices=FORMATS, default="table")
    check.set_defaults(func=run_check)
    apply = sub.add_parser(
        "apply", help="create or update the audiences' roles, policies and grants (idempotent)"
    )
    apply.set_defaults(func=run_apply)


def run_show(args: argparse.Namespace) -> int:
    from analytics_pipelines.cli.catalog import catalog_dir
    from analytics_pipelines.lib.access.report import audiences_of, describe_audience
    from analytics_pipelines.lib.catalog import load_catalog

    catalog = load_catalog(catalog_dir(args.dir))
    described = [describe_audience(access) for access in audiences_of(catalog)]
    if args.format == "json":
        print(json.dumps(described, indent=2))
        return 0
    if not described:
        print(f"no audiences declared (add {catalog.root / 'access'}/*.yaml)")
        return 0
    for entry in described:
        print(
            f"{entry['audience']} (role {entry['role']})"
            + (f": {entry['description']}" if entry["description"] else "")
        )
        print(f"  KPIs: {', '.join(entry['kpis'])}")
        print(f"  rows: {entry['filter'] or 'all'}")
        if entry["totals_hidden_over"]:
            print(f"  totals hidden over: {', '.join(entry['totals_hidden_over'])}")
        for kpi, reason in entry["withheld"].items():
            print(f"  withheld: {kpi} ({reason})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.access.report import (
        RoleCheckError,
        audiences_of,
        out_of_date,
        reading_lines,
        resolve_role,
        role_reading,
    )
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.pg import read_only
    from analytics_pipelines.lib.settings import get_settings

    settings = get_settings()
    catalog = load_catalog(settings.catalog_dir)
    with read_only(settings.access_admin_url_plain) as conn:
        try:
            reading = role_reading(conn, resolve_role(conn, args.role, catalog))
        except RoleCheckError as error:
            print(error)
            return 2
    audience = next((a for a in audiences_of(catalog) if a.audience.role == reading.role), None)
    stale = out_of_date(reading, audience) if audience is not None else []
    if args.format == "json":
        print(json.dumps({**reading.as_json(), "out_of_date": stale}, indent=2))
    else:
        print("\n".join(reading_lines(reading)))
        if stale:
            print("out of date with the catalog (run `analytics-pipelines access apply`):")
            print("\n".join(f"  {line}" for line in stale))
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.access.policies import AccessApplyError, apply_from_url
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.settings import get_settings

    settings = get_settings()
    catalog = load_catalog(settings.catalog_dir)
    try:
        lines = apply_from_url(settings.access_admin_url_plain, catalog)
    except AccessApplyError as error:
        print(f"access not applied: {error}")
        return 2
    print("\n".join(lines))
    return 0
