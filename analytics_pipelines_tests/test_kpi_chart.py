"""Every KPI materialisation carries a chart of its recent values; the tests decode the image."""

from __future__ import annotations

import base64
import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Any

import dagster as dg
import pytest

from analytics_pipelines.defs.kpis.factory import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    build_kpi_definitions,
    kpi_asset_key,
)
from analytics_pipelines.lib.kpi.chart import (
    MAX_SERIES,
    RECENT_PERIODS,
    ChartData,
    Series,
    render_svg,
)
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    create_clean,
    make_catalog,
    make_kpi,
    make_source,
    unique,
)

SVG = "{http://www.w3.org/2000/svg}"
DATA_URI = re.compile(r"^!\[[^\]]*\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)$")


POINT = re.compile(r"[ML](-?[\d.]+) (-?[\d.]+)")


def decode_chart(markdown: str) -> dict[str, dict[str, float]]:
    """{series label: {period: value read back from the point's position}} of a chart."""
    match = DATA_URI.match(markdown)
    assert match, markdown[:80]
    root = ET.fromstring(base64.b64decode(match.group(1)))
    assert root.tag == f"{SVG}svg"
    low, high = float(root.attrib["data-y-min"]), float(root.attrib["data-y-max"])
    left, top, width, height = (float(v) for v in root.attrib["data-plot"].split())
    periods = root.attrib["data-periods"].split(",")
    series: dict[str, dict[str, float]] = {}
    for group in root.iter(f"{SVG}g"):
        points: dict[str, float] = {}
        for path in group.iter(f"{SVG}path"):
            for x, y in POINT.findall(path.attrib["d"]):
                index = round((float(x) - left) / width * (len(periods) - 1))
                points[periods[index]] = low + (top + height - float(y)) / height * (high - low)
        series[group.attrib["data-series"]] = points
    return series


def _rows(days: list[dt.date]) -> list[dict[str, Any]]:
    """Orders of varying size: north grows day by day, south stays, east only on even days."""
    rows = []
    for n, day in enumerate(days):
        at = dt.datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
        for region, qty in (("north", n + 1), ("south", 5), ("east", 3 if n % 2 == 0 else 0)):
            if qty:
                rows.append({"line_id": f"{day}-{region}", "at": at, "region": region, "qty": qty})
    return rows


def test_materialisation_carries_a_chart_of_the_last_periods_per_dimension_value(
    warehouse: Warehouse,
) -> None:
    source = make_source(unique("chart"))
    kpi = make_kpi(
        unique("units"), source.name, measure="sum(qty)", dimensions=["region", "channel"],
        grains=["day", "month"], timezone="Europe/Berlin", unit="pieces",
    )  # fmt: skip
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(40)]
    rows = _rows(days)
    create_clean(warehouse, source, rows)
    built = build_kpi_definitions(make_catalog([source], [kpi]), start="2025-12-01")

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        built.assets,
        resources={"warehouse": WarehouseResource(database_url=str(warehouse.url))},
        tags={RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()},
        instance=instance,
    )

    assert result.success
    events = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == kpi_asset_key(kpi.name)
    ]
    assert len(events) == len(days)  # one materialisation per partition of the range
    # The chart (and the preview) ride on the range's last day only, the asset's latest
    # materialisation: a long backfill does not store a copy per partition.
    charted = [e.partition for e in events if e is not None and "chart" in e.metadata]
    assert charted == [days[-1].isoformat()]
    latest = instance.get_latest_materialization_event(kpi_asset_key(kpi.name))
    assert latest is not None and latest.asset_materialization is not None
    assert latest.asset_materialization.partition == days[-1].isoformat()
    chart = str(latest.asset_materialization.metadata["chart"].value)
    assert "preview" in latest.asset_materialization.metadata
    drawn = decode_chart(chart)
    # Expected, in plain Python: the Berlin day of each order (09:00 UTC is the same day there).
    expected: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        day = row["at"].date().isoformat()
        for label in ("total", row["region"]):
            expected[label][day] = expected[label].get(day, 0) + row["qty"]
    recent = {d.isoformat() for d in days[-RECENT_PERIODS:]}
    # One line for the total and one per region (the first dimension), never per channel.
    assert set(drawn) == {"total", "north", "south", "east"}
    for label, points in drawn.items():
        wanted = {day: value for day, value in expected[label].items() if day in recent}
        assert set(points) == set(wanted), label  # east: only the days it sold
        for day, value in points.items():
            assert value == pytest.approx(wanted[day], abs=0.05), (label, day)


def test_many_dimension_values_are_capped_and_gaps_break_the_line() -> None:
    periods = [f"2026-01-{d:02d}" for d in range(1, 6)]
    members = [Series(f"shop_{i:02d}", [float(i)] * 5) for i in range(MAX_SERIES)]
    data = ChartData(
        kpi="sales", unit="EUR", grain="day", dimension="shop", periods=periods,
        series=[Series("total", [10.0, None, 30.0, 40.0, 50.0]), *members], omitted=3,
    )  # fmt: skip
    svg = render_svg(data)
    root = ET.fromstring(svg)
    total = next(g for g in root.iter(f"{SVG}g") if g.attrib["data-series"] == "total")
    # The period without a value is not bridged: a line from the 3rd day, a dot on the 1st.
    pieces = [re.sub(r"[\d. -]", "", p.attrib["d"]) for p in total.iter(f"{SVG}path")]
    assert pieces == ["MLL", "Mh"]
    assert len(list(root.iter(f"{SVG}g"))) == 1 + MAX_SERIES
    assert "+3 more not drawn" in svg
    decoded = decode_chart(
        f"![c](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"
    )
    assert decoded["total"] == pytest.approx(
        {"2026-01-01": 10, "2026-01-03": 30, "2026-01-04": 40, "2026-01-05": 50}, abs=0.05
    )


def test_a_kpi_without_values_yet_gets_a_chart_that_says_so() -> None:
    empty = ChartData(kpi="sales", unit="EUR", grain="day", dimension=None, periods=[])
    root = ET.fromstring(render_svg(empty))
    assert [t.text for t in root.iter(f"{SVG}text")][-1] == "no values yet"
    assert list(root.iter(f"{SVG}path")) == []
