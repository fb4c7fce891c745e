"""`analytics-pipelines catalog import`: a sheet of KPI and source rows becomes catalog YAML."""

from __future__ import annotations

import argparse
import csv
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from analytics_pipelines.cli import catalog as catalog_cli
from analytics_pipelines.lib.catalog import load_catalog
from analytics_pipelines.lib.catalog.models import (
    AnomalySpec,
    ColumnSpec,
    ForecastSpec,
    KpiSpec,
    LookupSpec,
    ReaderOptions,
    SemiAdditive,
    SourceSpec,
    TargetSpec,
    WindowSpec,
)
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


def write_xlsx(path: Path, rows: list[list[Any]], header: list[str] = HEADER) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(header)
    for values in rows:
        sheet.append(values)
    workbook.save(path)
    return path


def write_csv(path: Path, rows: list[list[Any]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
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


# ---- the KPI and source settings beyond the basic columns, one cell each --------------------

FEATURE_HEADER = [
    "kind", "name", "value_chain", "description", "unit", "source", "measure", "semi_additive",
    "window", "fiscal_year_start_month", "week_start", "fill_nulls_with", "dimensions", "grains",
    "timezone", "freshness_hours", "target", "forecast", "anomalies", "landing_prefix", "format",
    "reader_delimiter", "reader_quote", "reader_encoding", "reader_header_row",
    "reader_decimal_separator", "reader_sheet", "reader_compression", "columns", "primary_key",
    "event_time", "lookups", "max_quarantine_rate", "raw_retention_days",
]  # fmt: skip


def feature_row(**cells: Any) -> list[Any]:
    unknown = set(cells) - set(FEATURE_HEADER)
    assert not unknown, unknown
    return [cells.get(h) for h in FEATURE_HEADER]


def kpi_row(name: str, **cells: Any) -> list[Any]:
    base = {"value_chain": "sales", "description": "x", "source": "orders", "measure": "count(*)"}
    return feature_row(name=name, **{**base, **cells})


def source_row(name: str, **cells: Any) -> list[Any]:
    base = {"kind": "source", "value_chain": "sales", "landing_prefix": f"landing/{name}",
            "format": "csv", "columns": "id:string!; at:timestamp!", "primary_key": "id",
            "event_time": "at"}  # fmt: skip
    return feature_row(name=name, **{**base, **cells})


FEATURE_ROWS = [
    feature_row(kind="reference", name="shops", value_chain="sales", description="Shop master",
                landing_prefix="landing/shops", format="csv", reader_delimiter="tab",
                reader_quote="'", reader_encoding="latin-1", reader_header_row="2",
                reader_decimal_separator=",", reader_compression="gzip",
                columns="shop_id:string!; country:string!; area:string",
                primary_key="shop_id; country", max_quarantine_rate="0.1", freshness_hours="48"),
    feature_row(kind="source", name="visits", value_chain="sales", description="Shop visits",
                landing_prefix="landing/visits", format="xlsx", reader_sheet="Visits",
                columns="visit_id:string!; shop_id:string!; country:string!; "
                "customer_id:string; visited_at:timestamp!; basket:decimal; stock:integer",
                primary_key="visit_id", event_time="visited_at", timezone="Europe/Berlin",
                lookups="shop: shops on shop_id and country; "
                "customer: customers on customer_id = customer_id",
                raw_retention_days="30", freshness_hours="6"),
    feature_row(name="shop_stock", value_chain="sales", description="Stock on hand",
                unit="units", source="visits", measure="sum(stock)",
                semi_additive="last per shop_id, country", fiscal_year_start_month="4",
                week_start="Sunday", fill_nulls_with="none", dimensions="country",
                grains="Day; week; MONTH", timezone="Europe/Berlin",
                target="higher 10.5; month: 300.25; every cell", forecast="14",
                anomalies="99.5"),
    # A snapshot source: `first` without `per` takes the primary key without the event time.
    feature_row(kind="source", name="stock_counts", value_chain="sales", description="Counts",
                landing_prefix="landing/stock_counts", format="parquet",
                columns="shop_id:string!; counted_at:timestamp!; on_hand:integer",
                primary_key="shop_id; counted_at", event_time="counted_at"),
    feature_row(name="opening_stock", value_chain="sales", description="Stock at opening",
                source="stock_counts", measure="sum(on_hand)", semi_additive="FIRST",
                fill_nulls_with="2.5", grains="day, month",
                target="higher; day: 280000; month: 8500000"),
    feature_row(name="visits_28d", value_chain="sales", description="Visits, 28 days",
                source="visits", measure="count(*)", window="rolling 28",
                dimensions="customer.segment; shop.area", target="lower 3", forecast="none",
                anomalies="high"),
    feature_row(name="basket_mtd", value_chain="sales", description="Basket, month to date",
                source="visits", measure="sum(basket)", window="month to date",
                target="higher 12345678901234567.891", anomalies="medium"),
    feature_row(name="basket_qtd", value_chain="sales", description="Basket, quarter to date",
                source="visits", measure="sum(basket)", window="quarter to date",
                fiscal_year_start_month="10", forecast="28 days"),
    feature_row(name="basket_ytd", value_chain="sales", description="Basket, year to date",
                source="visits", measure="sum(basket)", window="Year To Date"),
    feature_row(name="basket_total", value_chain="sales", description="Basket, all to date",
                source="visits", measure="sum(basket)", window="all to date"),
]  # fmt: skip


def expected_feature_specs() -> tuple[list[SourceSpec], list[KpiSpec]]:
    """What FEATURE_ROWS mean, built directly (independent of the importer's cell parsing)."""
    sources = [
        SourceSpec(
            name="shops",
            kind="reference",
            value_chain="sales",
            description="Shop master",
            landing_prefix="landing/shops",
            format="csv",
            reader=ReaderOptions(
                delimiter="\t",
                quote="'",
                encoding="latin-1",
                header_row=2,
                decimal_separator=",",
                compression="gzip",
            ),
            columns=[
                ColumnSpec(name="shop_id", required=True),
                ColumnSpec(name="country", required=True),
                ColumnSpec(name="area"),
            ],
            primary_key=["shop_id", "country"],
            max_quarantine_rate=0.1,
            freshness_hours=48,
        ),
        SourceSpec(
            name="visits",
            value_chain="sales",
            description="Shop visits",
            landing_prefix="landing/visits",
            format="xlsx",
            reader=ReaderOptions(sheet="Visits"),
            columns=[
                ColumnSpec(name="visit_id", required=True),
                ColumnSpec(name="shop_id", required=True),
                ColumnSpec(name="country", required=True),
                ColumnSpec(name="customer_id"),
                ColumnSpec(name="visited_at", type="timestamp", required=True),
                ColumnSpec(name="basket", type="decimal"),
                ColumnSpec(name="stock", type="integer"),
            ],
            primary_key=["visit_id"],
            event_time="visited_at",
            timezone="Europe/Berlin",
            lookups=[
                LookupSpec(
                    name="shop", source="shops", key={"shop_id": "shop_id", "country": "country"}
                ),
                LookupSpec(name="customer", source="customers", key={"customer_id": "customer_id"}),
            ],
            raw_retention_days=30,
            freshness_hours=6,
        ),
    ]
    common: dict[str, Any] = {"value_chain": "sales", "source": "visits"}
    basket = {**common, "measure": "sum(basket)"}
    kpis = [
        KpiSpec(
            name="shop_stock", description="Stock on hand", unit="units", measure="sum(stock)",
            semi_additive=SemiAdditive(take="last", per=["shop_id", "country"]),
            fiscal_year_start_month=4, week_start="sunday", fill_nulls_with=None,
            dimensions=["country"], grains=["day", "week", "month"], timezone="Europe/Berlin",
            target=TargetSpec(direction="higher", value=Decimal("10.5"),
                              by_grain={"month": Decimal("300.25")}, applies_to="every_cell"),
            forecast=ForecastSpec(horizon_days=14), anomalies=AnomalySpec(level=99.5), **common,
        ),
        KpiSpec(
            name="opening_stock", value_chain="sales", description="Stock at opening",
            source="stock_counts", measure="sum(on_hand)",
            semi_additive=SemiAdditive(take="first"), fill_nulls_with=Decimal("2.5"),
            grains=["day", "month"],
            target=TargetSpec(direction="higher",
                              by_grain={"day": Decimal(280000), "month": Decimal(8500000)}),
        ),
        KpiSpec(
            name="visits_28d", description="Visits, 28 days", measure="count(*)",
            window=WindowSpec(rolling=28), dimensions=["customer.segment", "shop.area"],
            target=TargetSpec(direction="lower", value=Decimal(3)), forecast=None,
            anomalies=AnomalySpec(sensitivity="high"), **common,
        ),
        KpiSpec(
            name="basket_mtd", description="Basket, month to date",
            window=WindowSpec(to_date="month"),
            target=TargetSpec(direction="higher", value=Decimal("12345678901234567.891")),
            anomalies=AnomalySpec(sensitivity="medium"), **basket,
        ),
        KpiSpec(name="basket_qtd", description="Basket, quarter to date",
                window=WindowSpec(to_date="quarter"), fiscal_year_start_month=10,
                forecast=ForecastSpec(horizon_days=28), **basket),
        KpiSpec(name="basket_ytd", description="Basket, year to date",
                window=WindowSpec(to_date="year"), **basket),
        KpiSpec(name="basket_total", description="Basket, all to date",
                window=WindowSpec(to_date="all"), **basket),
    ]  # fmt: skip
    return sources, kpis


def excel_typed(value: Any) -> Any:
    """A cell as Excel stores what a user types: numbers as numbers (when exactly a float)."""
    if isinstance(value, str):
        for number_type in (int, float):
            try:
                number = number_type(value)
            except ValueError:
                continue
            if str(number) == value:
                return number
    return value


def test_every_setting_a_sheet_declares_loads_back_the_same_from_csv_and_xlsx(
    tmp_path: Path, catalog_dir: Path
) -> None:
    expected_sources, expected_kpis = expected_feature_specs()
    (tmp_path / "csv").mkdir()
    (tmp_path / "xlsx").mkdir()
    csv_sheet = write_csv(tmp_path / "csv" / "shops.csv", FEATURE_ROWS, FEATURE_HEADER)
    typed_rows = [[excel_typed(v) for v in r] for r in FEATURE_ROWS]
    assert typed_rows != FEATURE_ROWS  # the .xlsx holds numeric cells, not only text
    xlsx_sheet = write_xlsx(tmp_path / "xlsx" / "shops.xlsx", typed_rows, FEATURE_HEADER)

    written = {}
    for sheet in (csv_sheet, xlsx_sheet):
        out = tmp_path / f"out_{sheet.suffix[1:]}"
        assert (
            run(["catalog", "import", str(sheet), "--dir", str(catalog_dir), "--out", str(out)])
            == 0
        )
        catalog = load_catalog(out)
        for source in expected_sources:
            assert catalog.sources[source.name] == source, source.name
        for kpi in expected_kpis:
            assert catalog.kpis[kpi.name] == kpi, kpi.name
        written[sheet.suffix] = [
            (out / sub / "shops.yaml").read_text() for sub in ("sources", "kpis")
        ]
    assert written[".csv"] == written[".xlsx"]
    kpi_yaml = written[".csv"][1]
    # Decimals read as numbers in the YAML; one a float would round is kept exact as text.
    assert "value: 10.5\n" in kpi_yaml
    assert "month: 8500000\n" in kpi_yaml
    assert "value: '12345678901234567.891'\n" in kpi_yaml


def test_none_opts_a_kpi_out_of_the_catalog_wide_ml_defaults(
    tmp_path: Path, catalog_dir: Path
) -> None:
    with (catalog_dir / "kpis" / "sales.yaml").open("a", encoding="utf-8") as handle:
        handle.write("defaults:\n  forecast: {horizon_days: 7}\n  anomalies: {sensitivity: low}\n")
    sheet = write_csv(
        tmp_path / "ml.csv",
        [kpi_row("lines_quiet", forecast="none", anomalies="NONE"), kpi_row("lines_default")],
        FEATURE_HEADER,
    )

    assert run(["catalog", "import", str(sheet), "--dir", str(catalog_dir)]) == 0

    kpis = load_catalog(catalog_dir).kpis
    assert kpis["lines_quiet"].forecast is None
    assert kpis["lines_quiet"].anomalies is None
    assert kpis["lines_default"].forecast == ForecastSpec(horizon_days=7)
    assert kpis["lines_default"].anomalies == AnomalySpec(sensitivity="low")


# (row, column and message expected in its problem line); one row per kind of malformed cell.
MALFORMED_CELLS: list[tuple[list[Any], str]] = [
    (kpi_row("w_shape", window="rolling"), "window: expected 'rolling N'"),
    (kpi_row("w_unit", window="rolling 4 weeks"), "window: expected 'rolling N'"),
    (kpi_row("w_short", window="rolling 1"), "window.rolling: Input should be greater than or equal to 2"),
    (kpi_row("w_period", window="week to date"), "window.to_date: Input should be 'month'"),
    (kpi_row("s_take", semi_additive="latest"), "semi_additive: expected 'last' or 'first'"),
    (kpi_row("s_per", semi_additive="last per ;"), "semi_additive: 'per' names no column"),
    (kpi_row("s_column", semi_additive="last per Shop"), "semi_additive.per.0: String should match"),
    (kpi_row("f_month", fiscal_year_start_month="13"), "fiscal_year_start_month: Input should be less than or equal to 12"),
    (kpi_row("f_week", week_start="funday"), "week_start: Input should be 'monday'"),
    (kpi_row("n_fill", fill_nulls_with="zero"), "fill_nulls_with: Input should be a valid decimal"),
    (kpi_row("t_direction", target="above 100"), "target: expected 'higher' or 'lower'"),
    (kpi_row("t_value", target="higher lots"), "target.value: Input should be a valid decimal"),
    (kpi_row("t_nothing", target="higher"), "target: a target needs a value"),
    (kpi_row("t_part", target="higher 5; monthly"), "target: 'monthly': expected 'GRAIN: VALUE'"),
    (kpi_row("t_thousands", target="higher 8,500,000"), "target: '500' stands alone: numbers are written without thousands separators"),
    (kpi_row("t_grain", target="higher 5; fortnight: 9"), "target.by_grain.fortnight"),
    (kpi_row("t_twice", target="lower 5; day: 1; day: 2"), "target: grain 'day' given twice"),
    (kpi_row("t_applies", target="lower 5; every cell; total"), "target: 'every cell' / 'total' given twice"),
    (kpi_row("t_not_computed", target="higher; month: 3"), "by_grain names grains the KPI is not computed per: month"),
    (kpi_row("m_forecast", forecast="soon"), "forecast: expected the horizon in days"),
    (kpi_row("m_horizon", forecast="400"), "forecast.horizon_days: Input should be less than or equal to 366"),
    (kpi_row("m_anomalies", anomalies="extreme"), "anomalies: expected a sensitivity"),
    (kpi_row("m_level", anomalies="40"), "anomalies.level: Input should be greater than 50"),
    (kpi_row("k_lookups", lookups="c: customers on customer_id"), "lookups: does not apply to kind=kpi; leave it empty (lookups belong to the events source's row"),
    (feature_row(kind="table", name="k_kind"), "kind: expected 'kpi', 'source' or 'reference', got 'table'"),
    (source_row("l_shape", lookups="customers"), "lookups: expected 'NAME: SOURCE on COLUMN = KEY_COLUMN'"),
    (source_row("l_pair", lookups="c: customers on id = "), "lookups: 'id =' in 'c: customers on id =': expected COLUMN = KEY_COLUMN"),
    (source_row("l_twice", lookups="c: customers on id = customer_id and id = x"), "lookups: column 'id' is joined twice"),
    (source_row("l_unknown", lookups="c: customerz on id = customer_id"), "lookups: lookup c: unknown source 'customerz'"),
    (source_row("l_events", lookups="o: orders on id = order_id"), "lookups: lookup o: source orders is not a reference"),
    (source_row("r_delimiter", reader_delimiter=";;"), "reader_delimiter: String should have at most 1 character"),
    (source_row("r_encoding", reader_encoding="ebcdic"), "reader_encoding: Input should be 'utf-8'"),
    (source_row("r_rate", max_quarantine_rate="5"), "max_quarantine_rate: Input should be less than or equal to 1"),
    (source_row("r_retention", raw_retention_days="0"), "raw_retention_days: Input should be greater than or equal to 1"),
    (source_row("r_reference", kind="reference"), "event_time: not allowed on a reference source"),
]  # fmt: skip


def test_each_malformed_cell_is_reported_with_its_row_and_column(
    tmp_path: Path, catalog_dir: Path, capsys: Any
) -> None:
    good = kpi_row("fine_window", window="rolling 7", target="higher 1")
    sheet = write_csv(
        tmp_path / "bad.csv", [good, *(r for r, _ in MALFORMED_CELLS)], FEATURE_HEADER
    )
    before = files(catalog_dir)

    assert run(["catalog", "import", str(sheet), "--dir", str(catalog_dir)]) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "row 2 " not in err  # the good row beside them has no problem
    for number, (_, message) in enumerate(MALFORMED_CELLS, start=3):
        lines = [line for line in err.splitlines() if line.strip().startswith(f"row {number} ")]
        assert any(message in line for line in lines), f"row {number}: {message!r} in {lines}"
    assert files(catalog_dir) == before


def test_every_malformed_cell_of_one_row_is_reported(
    tmp_path: Path, catalog_dir: Path, capsys: Any
) -> None:
    sheet = write_xlsx(
        tmp_path / "bad.xlsx",
        [kpi_row("many", window="weekly", target="best 5", anomalies="sometimes")],
        FEATURE_HEADER,
    )

    assert run(["catalog", "import", str(sheet), "--dir", str(catalog_dir)]) == 1

    err = capsys.readouterr().err
    for column in ("window", "target", "anomalies"):
        assert f"row 2 (kpi many): {column}: expected" in err, err


def test_every_kpi_and_source_setting_has_a_sheet_column() -> None:
    # A new catalog setting must get a column (and a cell syntax), or be named YAML-only here
    # and in the importer's docstring.
    from analytics_pipelines.lib.catalog import importer

    assert set(importer.KPI_FIELDS) == set(KpiSpec.model_fields)
    sheet_source_fields = {f for f in importer.SOURCE_FIELDS if not f.startswith("reader_")} | {
        "kind",
        "reader",
    }
    assert sheet_source_fields == set(SourceSpec.model_fields)
    assert {f.removeprefix("reader_") for f in importer.READER_FIELDS} == set(
        ReaderOptions.model_fields
    )
    yaml_only = set(ColumnSpec.model_fields) - {"name", "type", "required"}
    assert yaml_only == {"allowed_values", "min", "max", "pattern", "description"}
    assert all(f"`{field}`" in (importer.__doc__ or "") for field in yaml_only)


def test_a_value_beyond_the_titled_columns_is_one_problem(
    tmp_path: Path, catalog_dir: Path, capsys: Any
) -> None:
    sheet = tmp_path / "extra.csv"
    sheet.write_text(
        "name,value_chain,description,source,measure\nx,sales,d,orders,count(*),oops\n"
    )

    assert run(["catalog", "import", str(sheet), "--dir", str(catalog_dir)]) == 1

    problems = [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]
    assert problems == ["row 2 (kpi x): values beyond the last titled column: oops"]
