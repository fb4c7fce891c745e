"""`analytics-pipelines catalog import`: a sheet of KPI and source rows becomes catalog YAML."""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from analytics_pipelines.cli import catalog as catalog_cli
from analytics_pipelines.lib.catalog import load_catalog
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR

HEADER = [
    "kind", "name", "value_chain", "description", "unit", "source", "measure", "derived",
    "filter", "dimensions", "grains", "timezone", "refresh_cron", "freshness_hours",
    "landing_prefix", "format", "columns", "primary_key", "event_time",
]  # fmt: skip


def row(**cells: Any) -> list[Any]:
    return [cells.get(h) for h in HEADER]


GOOD_ROWS = [
    row(kind="source", name="returns", value_chain="sales", description="Customer returns",
        landing_prefix="landing/returns", format="csv",
        columns="return_id:string!; returned_at:timestamp!; region:string; amount:decimal",
        primary_key="return_id", event_time="returned_at", timezone="Europe/Berlin"),
    row(kind="kpi", name="refund_amount", value_chain="sales", description="Refunded amount",
        unit="EUR", source="returns", measure="sum(amount)", dimensions="region",
        grains="day; week, month", timezone="Europe/Berlin", refresh_cron="0 * * * *",
        freshness_hours=6),
    row(kind="kpi", name="return_count", value_chain="sales", description="Returns",
        source="returns", measure="count(*)", dimensions="region", grains="day;week;month",
        timezone="Europe/Berlin"),
    row(name="refund_per_return", value_chain="sales", description="Average refund",
        source="returns", derived="refund_amount / return_count", dimensions="region",
        grains="day", timezone="Europe/Berlin"),
    # A KPI on a source already in the catalog.
    row(name="big_order_lines", value_chain="sales", description="Lines above 100 units",
        source="orders", measure="count(*)", filter="quantity > 100", grains="day"),
]  # fmt: skip

BAD_ROWS = [
    row(name="typo_measure", value_chain="sales", description="x", source="orders",
        measure="sum(quantiy)"),                                      # unknown column
    row(name="bad_grain", value_chain="sales", description="x", source="orders",
        measure="count(*)", grains="day; fortnight"),                 # grain
    row(name="no_source", value_chain="sales", description="x", source="nowhere",
        measure="count(*)"),                                          # unknown source
    row(name="gross_revenue", value_chain="sales", description="x", source="orders",
        measure="count(*)"),                                          # exists in the catalog
    row(kind="source", name="broken", value_chain="sales", landing_prefix="landing/broken",
        format="csv", columns="id:string!", primary_key="id", event_time="id",
        measure="count(*)"),                                          # measure on a source
    row(name="refund_amount", value_chain="sales", description="again", source="returns",
        measure="count(*)"),                                          # twice in the sheet
    row(name="bad_filter", value_chain="sales", description="x", source="orders",
        measure="count(*)", filter="status = 'placed' or"),           # filter syntax
]  # fmt: skip


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="analytics-pipelines")
    catalog_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG_DIR, target)
    return target


def write_xlsx(path: Path, rows: list[list[Any]]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(HEADER)
    for values in rows:
        sheet.append(values)
    workbook.save(path)
    return path


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows([["" if v is None else v for v in r] for r in rows])
    return path


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*.yaml")}


def test_sheet_with_bad_rows_reports_each_by_row_number_and_writes_nothing(
    tmp_path: Path, catalog_dir: Path, capsys: Any
) -> None:
    sheet = write_xlsx(tmp_path / "new_kpis.xlsx", GOOD_ROWS + BAD_ROWS)
    before = files(catalog_dir)

    code = run(["catalog", "import", str(sheet), "--dir", str(catalog_dir)])

    assert code == 1
    err = capsys.readouterr().err
    assert "nothing written" in err
    first_bad = 2 + len(GOOD_ROWS)  # row 1 is the header
    expected = {
        first_bad: "measure: at position",
        first_bad + 1: "grains",
        first_bad + 2: "unknown source 'nowhere'",
        first_bad + 3: "'gross_revenue' is already declared in",
        first_bad + 4: "measure: does not apply to kind=source",
        first_bad + 5: "already defined in row 3",
        first_bad + 6: "filter: at position",
    }
    for number, message in expected.items():
        lines = [line for line in err.splitlines() if line.strip().startswith(f"row {number} ")]
        assert lines, f"row {number} not reported:\n{err}"
        assert any(message in line for line in lines), f"row {number}: {lines}"
    for number in range(2, first_bad):
        assert f"row {number} " not in err
    assert files(catalog_dir) == before


def test_good_xlsx_sheet_becomes_catalog_yaml(
    tmp_path: Path, catalog_dir: Path, capsys: Any
) -> None:
    sheet = write_xlsx(tmp_path / "returns.xlsx", GOOD_ROWS)

    assert run(["catalog", "import", str(sheet), "--dir", str(catalog_dir)]) == 0

    assert "imported 4 KPIs and 1 sources" in capsys.readouterr().out
    assert {"sources/returns.yaml", "kpis/returns.yaml"} <= files(catalog_dir)
    catalog = load_catalog(catalog_dir)
    refund = catalog.kpis["refund_amount"]
    assert refund.grains == ["day", "week", "month"]
    assert refund.freshness_hours == 6
    assert refund.dimensions == ["region"]
    assert catalog.kpis["refund_per_return"].derived == "refund_amount / return_count"
    returns = catalog.sources["returns"]
    assert returns.column("return_id").required is True
    assert returns.column("amount").type == "decimal"
    assert returns.primary_key == ["return_id"]

    # Importing the same sheet again replaces its own files instead of clashing with them.
    assert run(["catalog", "import", str(sheet), "--dir", str(catalog_dir)]) == 0


def test_csv_sheet_and_out_folder(tmp_path: Path, catalog_dir: Path, capsys: Any) -> None:
    sheet = write_csv(tmp_path / "extra.csv", [GOOD_ROWS[-1]])
    out = tmp_path / "out"

    assert run(["catalog", "import", str(sheet), "--dir", str(catalog_dir), "--out", str(out)]) == 0

    # The folder holds a whole catalog that validates on its own: the import and the existing files.
    assert files(out) == {"kpis/extra.yaml"} | files(catalog_dir)
    assert "big_order_lines" in (out / "kpis" / "extra.yaml").read_text()
    merged = load_catalog(out)
    assert "big_order_lines" in merged.kpis
    assert set(load_catalog(catalog_dir).kpis) < set(merged.kpis)
    assert f"CATALOG_DIR={out}" in capsys.readouterr().out


def test_importing_into_the_shipped_demo_catalog_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("CATALOG_DIR", raising=False)
    sheet = write_csv(tmp_path / "extra.csv", [GOOD_ROWS[-1]])
    before = files(DEMO_CATALOG_DIR)

    assert run(["catalog", "import", str(sheet)]) == 2

    assert "pass --out DIR" in capsys.readouterr().err
    assert files(DEMO_CATALOG_DIR) == before
    out = tmp_path / "mine"
    assert run(["catalog", "import", str(sheet), "--out", str(out)]) == 0
    assert "big_order_lines" in load_catalog(out).kpis


def test_unknown_columns_and_file_types_are_refused(
    tmp_path: Path, catalog_dir: Path, capsys: Any
) -> None:
    sheet = tmp_path / "odd.csv"
    sheet.write_text("name,colour\nx,red\n")
    assert run(["catalog", "import", str(sheet), "--dir", str(catalog_dir)]) == 1
    assert "row 1: unknown column(s) colour" in capsys.readouterr().err

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert run(["catalog", "import", str(text), "--dir", str(catalog_dir)]) == 1
    assert "expected a .xlsx or .csv file" in capsys.readouterr().err
