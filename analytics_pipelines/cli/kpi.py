"""`analytics-pipelines kpi list | show`: the declared KPIs and their computed values.

analytics-pipelines kpi list [--format table|csv|json]
analytics-pipelines kpi anomalies NAME [--from 2026-01-01] [--to 2026-01-31] [--json]
analytics-pipelines kpi show NAME [--grain month] [--from 2026-01-01] [--to 2026-06-30]
                                  [--by region[,channel]] [--compare] [--format table|csv|json]

csv and json always carry the previous and year-ago values, differences and growth
(lib/kpi/period_over_period.py); the table shows them with --compare.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from analytics_pipelines.cli.catalog import catalog_dir
from analytics_pipelines.lib.catalog import Catalog, KpiSpec, load_catalog
from analytics_pipelines.lib.catalog.models import GRAIN_ORDER, Grain, TargetSpec
from analytics_pipelines.lib.kpi.display import format_number, format_value
from analytics_pipelines.lib.kpi.period_over_period import COLUMNS as COMPARISON_COLUMNS

FORMATS = ("table", "csv", "json")


def register(commands: Any) -> None:
    parser = commands.add_parser("kpi", help="list KPIs and show their values")
    sub = parser.add_subparsers(dest="kpi_command", required=True, metavar="ACTION")

    listing = sub.add_parser("list", help="the KPIs declared in the catalog")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.set_defaults(func=run_list)

    show = sub.add_parser("show", help="computed values of one KPI")
    show.add_argument("name", help="KPI name (see `kpi list`)")
    show.add_argument("--grain", choices=GRAIN_ORDER, default=None, help="default: finest")
    show.add_argument("--from", dest="first", type=iso_date, default=None, help="YYYY-MM-DD")
    show.add_argument("--to", dest="last", type=iso_date, default=None, help="YYYY-MM-DD")
    show.add_argument(
        "--by",
        action="append",
        default=[],
        help="dimension(s) to break down by, e.g. --by region or --by region,channel",
    )
    show.add_argument(
        "--compare",
        action="store_true",
        help="table: add the previous and year-ago values and their growth",
    )
    show.add_argument("--format", choices=FORMATS, default="table")
    show.set_defaults(func=run_show)

    anomalies = sub.add_parser(
        "anomalies", help="day values judged anomalous (kpi.anomalies, lib/ml)"
    )
    anomalies.add_argument("name", help="KPI name (one that declares anomalies)")
    anomalies.add_argument("--from", dest="first", type=iso_date, default=None, help="YYYY-MM-DD")
    anomalies.add_argument("--to", dest="last", type=iso_date, default=None, help="YYYY-MM-DD")
    anomalies.add_argument("--format", choices=FORMATS, default="table")
    anomalies.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    anomalies.set_defaults(func=run_anomalies)


def iso_date(text: str) -> dt.date:
    """argparse type of the --from/--to dates of `kpi show` and `refresh`."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _growth(value: Decimal | None) -> str:
    """A growth ratio as people read it: +12.5%, -3%, empty when there is no base."""
    if value is None:
        return ""
    return f"{value * 100:+.1f}%".replace(".0%", "%")


def _json_number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def render(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, numeric: Sequence[str] = ()
) -> str:
    """A table for people, or CSV / JSON (a list of objects) for tools."""
    if fmt == "json":
        return json.dumps([dict(zip(headers, row, strict=True)) for row in rows], indent=2) + "\n"
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(cells)
        return out.getvalue()
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if h in numeric else v.ljust(w)
            for v, w, h in zip(values, widths, headers, strict=True)
        ]
        return "  ".join(parts).rstrip()

    text = [line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    return "\n".join(text) + "\n"


def target_summary(target: TargetSpec, grain: Grain) -> str:
    """One line saying what is good for this grain, e.g. `target: >= 30000 per month (total)`."""
    value = target.for_grain(grain)
    if value is None:
        return f"target: none per {grain}"
    sign = ">=" if target.direction == "higher" else "<="
    cells = "every cell" if target.applies_to == "every_cell" else "the total only"
    return (
        f"target: {sign} {format_number(value)} per {grain} ({target.direction} is better; {cells})"
    )


def run_list(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.kpi.plan import kpi_sources, plan_catalog

    catalog = load_catalog(catalog_dir(None))
    plans = plan_catalog(catalog)
    headers = [
        "name",
        "value_chain",
        "source",
        "unit",
        "dimensions",
        "grains",
        "timezone",
        "refresh_cron",
        "description",
    ]
    rows = [
        [
            k.name,
            k.value_chain,
            ", ".join(s.name for s in kpi_sources(plans, k.name)),
            k.unit,
            ",".join(k.dimensions),
            ",".join(k.grains),
            k.timezone,
            k.refresh_cron,
            k.description.strip().splitlines()[0],
        ]
        for k in sorted(catalog.kpis.values(), key=lambda k: (k.value_chain, k.name))
    ]
    sys.stdout.write(render(headers, rows, args.format))
    return 0


def _declared(catalog: Catalog, name: str) -> KpiSpec | None:
    """The KPI `name`, or None after saying which KPIs there are."""
    kpi = catalog.kpis.get(name)
    if kpi is None:
        sys.stderr.write(
            f"unknown KPI {name!r}; known: {', '.join(sorted(catalog.kpis)) or 'none'}\n"
        )
    return kpi


def run_show(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from analytics_pipelines.lib.kpi.query import KpiQueryError, period_label, read_values
    from analytics_pipelines.lib.pg import read_only
    from analytics_pipelines.lib.settings import get_settings

    settings = get_settings()
    catalog = load_catalog(settings.catalog_dir)
    kpi = _declared(catalog, args.name)
    if kpi is None:
        return 2
    grain = args.grain or kpi.grains[0]
    by = [d.strip() for item in args.by for d in item.split(",") if d.strip()]
    last = args.last or dt.datetime.now(ZoneInfo(kpi.timezone)).date()
    first = args.first or last - dt.timedelta(days=30 if grain in ("hour", "day") else 365)
    try:
        with read_only(settings.database_url_plain) as conn:
            values = read_values(conn, kpi, grain, first, last, by, with_total=True)
    except KpiQueryError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    dims = sorted(set(by))
    # Target columns only for a KPI with a target: other KPIs print as before.
    targeted = kpi.target is not None
    value_header = kpi.unit or "value"
    compared = ["previous", "vs previous", "year ago", "vs year ago"] if args.compare else []
    if args.format == "table":
        headers = [
            "period",
            *dims,
            value_header,
            *(["target", "status"] if targeted else []),
            *compared,
        ]
        rows: list[list[Any]] = [
            [
                period_label(grain, v.period_start, kpi.fiscal_year_start_month),
                # A period's total follows its breakdown rows (`--by region`: north, south, total).
                *((v.dimensions.get(d) if v.dimensions else "total") for d in dims),
                format_value(v.value, kpi.unit),
                *([format_value(v.target, kpi.unit), v.target_status] if targeted else []),
                *(
                    [
                        format_value(v.previous_value, kpi.unit),
                        _growth(v.previous_growth),
                        format_value(v.year_ago_value, kpi.unit),
                        _growth(v.year_ago_growth),
                    ]
                    if compared
                    else []
                ),
            ]
            for v in values
        ]
    elif args.format == "json":
        records = [
            {
                "kpi": kpi.name,
                "unit": kpi.unit,
                "grain": grain,
                "period": period_label(grain, v.period_start, kpi.fiscal_year_start_month),
                "period_start": v.period_start.isoformat(),
                "breakdown": sorted(v.dimensions),  # [] for the total
                **{d: v.dimensions.get(d) for d in dims},
                "value": _json_number(v.value),
                **(
                    {"target": _json_number(v.target), "target_status": v.target_status}
                    if targeted
                    else {}
                ),
                **{name: _json_number(getattr(v, name)) for name in COMPARISON_COLUMNS},
            }
            for v in values
        ]
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return 0
    else:
        headers = [
            "kpi",
            "unit",
            "grain",
            "period",
            "period_start",
            "breakdown",
            *dims,
            "value",
            *(["target", "target_status"] if targeted else []),
            *COMPARISON_COLUMNS,
        ]
        rows = [
            [
                kpi.name,
                kpi.unit,
                grain,
                period_label(grain, v.period_start, kpi.fiscal_year_start_month),
                v.period_start.isoformat(),
                ",".join(sorted(v.dimensions)),
                *(v.dimensions.get(d) for d in dims),
                format_number(v.value),
                *([format_number(v.target), v.target_status] if targeted else []),
                *(format_number(getattr(v, name)) for name in COMPARISON_COLUMNS),
            ]
            for v in values
        ]
    if args.format == "table":
        sys.stdout.write(
            f"{kpi.name} ({kpi.description.strip().splitlines()[0]}) per {grain}, "
            f"{first} .. {last}, {kpi.timezone}\n"
        )
        if kpi.target is not None:
            sys.stdout.write(target_summary(kpi.target, grain) + "\n")
        if not values:
            sys.stdout.write("no values stored for this range (materialise the KPI first)\n")
            return 0
    numeric = [value_header, "value", "target", *compared, *COMPARISON_COLUMNS]
    sys.stdout.write(render(headers, rows, args.format, numeric=numeric))
    return 0


def run_anomalies(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.ml.read import read_anomalies
    from analytics_pipelines.lib.pg import read_only
    from analytics_pipelines.lib.settings import get_settings

    settings = get_settings()
    catalog = load_catalog(settings.catalog_dir)
    kpi = _declared(catalog, args.name)
    if kpi is None:
        return 2
    if kpi.anomalies is None:
        judged = sorted(k.name for k in catalog.kpis.values() if k.anomalies is not None)
        sys.stderr.write(
            f"kpi {kpi.name} declares no anomalies (add `anomalies: {{sensitivity: medium}}` "
            f"to it in the catalog); KPIs that do: {', '.join(judged) or 'none'}\n"
        )
        return 2
    with read_only(settings.database_url_plain) as conn:
        found = read_anomalies(conn, kpi.name, args.first, args.last)
    if args.format == "json":
        sys.stdout.write(json.dumps([a.as_json() for a in found], indent=2) + "\n")
        return 0
    headers = ["period", "series", "value", "expected", "interval", "direction", "deviation"]

    def shown(number: float) -> str:
        return format_value(Decimal(f"{number:.2f}"), kpi.unit)

    rows = [
        [
            a.period_date.isoformat(),
            a.series,
            format_value(a.value, kpi.unit),
            shown(a.expected),
            f"{shown(a.lo)} .. {shown(a.hi)} ({a.level:g} %)",
            a.direction,
            f"{'+' if a.deviation >= 0 else ''}{shown(a.deviation)} "
            + (
                f"({a.score:+.1f} half-widths)" if a.score is not None else "(interval of no width)"
            ),
        ]
        for a in found
    ]
    if args.format == "table":
        span = f"{args.first or 'first'} .. {args.last or 'last'}"
        sys.stdout.write(
            f"{kpi.name}: {len(found)} anomalous day value(s), {span} "
            f"(judged against the days before each; {kpi.timezone})\n"
        )
        if not found:
            return 0
    sys.stdout.write(render(headers, rows, args.format, numeric=["value", "expected"]))
    return 0
