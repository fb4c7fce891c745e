"""`analytics-pipelines kpi list | show` on a catalog folder and values in PostgreSQL."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from analytics_pipelines.cli import kpi as kpi_cli
from analytics_pipelines.lib.catalog import KpiSpec, SourceSpec, load_catalog
from analytics_pipelines.lib.kpi.display import format_value
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    create_clean,
    make_kpi,
    make_source,
    unique,
)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="analytics-pipelines")
    kpi_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def write_catalog(folder: Path, sources: list[SourceSpec], kpis: list[KpiSpec]) -> Path:
    for sub, key, specs in (("sources", "sources", sources), ("kpis", "kpis", kpis)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        entries = [s.model_dump(mode="json", exclude_none=True) for s in specs]
        (folder / sub / "test.yaml").write_text(yaml.safe_dump({key: entries}))
    return folder


@pytest.fixture
def shown(
    warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[KpiSpec, KpiSpec]:
    source = make_source(unique("kpi_cli"))
    rows = [
        {"line_id": f"{m}-{i}", "at": dt.datetime(2026, m, 10, 12, tzinfo=UTC),
         "region": ("north", "south")[i % 2], "channel": "web", "qty": m}
        for m in range(1, 7)
        for i in range(3)
    ]  # fmt: skip
    create_clean(warehouse, source, rows)
    units = make_kpi(
        unique("units"), source.name, measure="sum(qty)", unit="units",
        dimensions=["region", "channel"], grains=["day", "month"], timezone="Europe/Berlin",
        description="Units sold.\nSecond line is not shown.",
    )  # fmt: skip
    ratio = make_kpi(
        unique("ratio"), source.name, derived=f"{units.name} / 7",
        dimensions=["region", "channel"], grains=["month"], timezone="Europe/Berlin",
    )  # fmt: skip
    folder = write_catalog(tmp_path / "catalog", [source], [units, ratio])
    monkeypatch.setenv("CATALOG_DIR", str(folder))
    monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path}/store")
    catalog = load_catalog(folder)
    for kpi in (units, ratio):
        refresh_kpi(
            warehouse, plan_kpi(catalog, kpi.name), dt.date(2026, 1, 1), dt.date(2026, 6, 30)
        )
    return units, ratio


def test_list_shows_every_kpi(shown: tuple[KpiSpec, KpiSpec], capsys: Any) -> None:
    units, ratio = shown
    assert run(["kpi", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "name", "value_chain", "source", "unit", "dimensions", "grains", "timezone",
        "refresh_cron", "description",
    ]  # fmt: skip
    line = next(line for line in out if line.startswith(units.name))
    assert "region,channel" in line and "day,month" in line and "Units sold." in line
    assert "Second line" not in line
    assert any(line.startswith(ratio.name) for line in out)

    assert run(["kpi", "list", "--format", "json"]) == 0
    listed = {k["name"]: k for k in json.loads(capsys.readouterr().out)}
    assert listed[units.name]["timezone"] == "Europe/Berlin"


def test_show_months_by_region(shown: tuple[KpiSpec, KpiSpec], capsys: Any) -> None:
    units, _ = shown
    code = run(
        ["kpi", "show", units.name, "--grain", "month", "--from", "2026-01-01",
         "--to", "2026-06-30", "--by", "region"]
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{units.name} (Units sold.) per month, 2026-01-01 .. 2026-06-30")
    assert lines[1].split() == ["period", "region", "units"]
    body = [line.split() for line in lines[3:]]
    # Two lines a month in the north, one in the south, each of `month` units; then the total.
    assert body[:3] == [
        ["2026-01", "north", "2"],
        ["2026-01", "south", "1"],
        ["2026-01", "total", "3"],
    ]
    assert body[-3:] == [
        ["2026-06", "north", "12"],
        ["2026-06", "south", "6"],
        ["2026-06", "total", "18"],
    ]
    assert len(body) == 18


def test_show_total_as_csv_and_json(shown: tuple[KpiSpec, KpiSpec], capsys: Any) -> None:
    units, ratio = shown
    assert run(["kpi", "show", units.name, "--grain", "month", "--from", "2026-03-01",
                "--to", "2026-04-30", "--format", "csv"]) == 0  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["period"], r["value"]) for r in rows] == [("2026-03", "9"), ("2026-04", "12")]
    assert rows[0]["period_start"] == "2026-03-01T00:00:00+01:00"

    assert run(["kpi", "show", ratio.name, "--from", "2026-01-01", "--to", "2026-01-31",
                "--by", "region,channel", "--format", "json"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert [(d["region"], d["channel"], round(d["value"], 6)) for d in data] == [
        ("north", "web", round(2 / 7, 6)),
        ("south", "web", round(1 / 7, 6)),
        (None, None, round(3 / 7, 6)),  # the month's total, after its breakdown
    ]
    assert [d["breakdown"] for d in data] == [["channel", "region"], ["channel", "region"], []]
    assert {(d["kpi"], d["unit"], d["grain"], d["period"]) for d in data} == {
        (ratio.name, ratio.unit, "month", "2026-01")
    }


def test_show_explains_wrong_questions(shown: tuple[KpiSpec, KpiSpec], capsys: Any) -> None:
    units, _ = shown
    assert run(["kpi", "show", units.name, "--grain", "year"]) == 2
    assert "not computed per year (grains: day, month)" in capsys.readouterr().err
    assert run(["kpi", "show", units.name, "--by", "colour"]) == 2
    assert "has no dimension colour (dimensions: region, channel)" in capsys.readouterr().err
    assert run(["kpi", "show", "no_such_kpi"]) == 2
    assert "unknown KPI 'no_such_kpi'" in capsys.readouterr().err
    assert run(["kpi", "show", units.name, "--from", "2020-01-01", "--to", "2020-01-31"]) == 0
    assert "no values stored for this range" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        ("81127.5", "EUR", "81,127.50"),
        ("-0.004", "USD", "-0.00"),
        ("20000", "lines", "20,000"),
        ("1234.56789", "minutes", "1,234.5679"),
        ("0.0512", "share", "0.0512"),
        ("-1500", "", "-1,500"),
    ],
)
def test_table_values_read_like_amounts(value: str, unit: str, shown: str) -> None:
    assert format_value(Decimal(value), unit) == shown
