"""The catalog is validated as a whole: every problem is reported with file, entry and reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from analytics_pipelines.cli import main
from analytics_pipelines.lib.catalog import CatalogError, load_catalog
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG_DIR, target)
    return target


def test_demo_catalog_is_valid_and_spans_three_value_chains() -> None:
    catalog = load_catalog(DEMO_CATALOG_DIR)
    assert {s.value_chain for s in catalog.sources.values()} >= {
        "sales",
        "supply_chain",
        "customer_service",
    }
    assert {s.format for s in catalog.sources.values()} >= {"csv", "jsonl", "parquet"}
    assert len(catalog.kpis) >= 10
    measures = " ".join(k.measure or "" for k in catalog.kpis.values())
    assert "count_distinct(" in measures
    assert "avg(" in measures
    assert any(k.filter for k in catalog.kpis.values())
    assert any(k.derived for k in catalog.kpis.values())


def test_every_problem_is_listed(catalog_dir: Path) -> None:
    sales = catalog_dir / "sources" / "sales.yaml"
    sales.write_text(sales.read_text().replace("timezone: Europe/Berlin", "timezone: Mars/Olympus"))
    kpis = catalog_dir / "kpis" / "sales.yaml"
    kpis.write_text(
        kpis.read_text().replace("sum(quantity * unit_price)\n", "sum(quantity * unit_prise)\n", 1)
    )
    (catalog_dir / "kpis" / "broken.yaml").write_text("kpis: [unclosed\n")
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_dir)
    problems = caught.value.problems
    assert any(
        p.startswith(f"{sales}: entry 1 (orders): timezone: unknown time zone 'Mars/Olympus'")
        for p in problems
    ), problems
    assert any(
        p.startswith(f"{catalog_dir / 'kpis' / 'broken.yaml'}: not valid YAML") for p in problems
    )


def test_kpi_expression_errors_name_the_kpi_position_and_reason(catalog_dir: Path) -> None:
    kpis = catalog_dir / "kpis" / "sales.yaml"
    kpis.write_text(
        kpis.read_text().replace("sum(quantity * unit_price)\n", "sum(quantity * unit_prise)\n", 1)
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_dir)
    [problem] = caught.value.problems
    assert problem.startswith(
        f"{kpis}: kpi gross_revenue: measure: at position 15: unknown column 'unit_prise'"
    )


def test_kpi_on_unknown_source_and_dimension(catalog_dir: Path) -> None:
    kpis = catalog_dir / "kpis" / "supply_chain.yaml"
    kpis.write_text(kpis.read_text().replace("dimensions: [warehouse]", "dimensions: [site]", 1))
    with pytest.raises(
        CatalogError, match="kpi units_received: dimensions: 'site' is not a column"
    ):
        load_catalog(catalog_dir)


def test_cli_validate(catalog_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "validate", "--dir", str(catalog_dir)]) == 0
    assert "4 sources" in capsys.readouterr().out
    (catalog_dir / "sources" / "extra.yaml").write_text("sources:\n  - name: Bad Name\n")
    assert main(["catalog", "validate", "--dir", str(catalog_dir)]) == 2
    err = capsys.readouterr().err
    assert "extra.yaml: entry 1 (Bad Name): name: String should match pattern" in err
    assert "value_chain: Field required" in err


def test_derived_kpi_across_time_zones_and_reserved_names_are_refused(catalog_dir: Path) -> None:
    kpis = catalog_dir / "kpis" / "sales.yaml"
    text = kpis.read_text()
    head, sep, tail = text.partition("  - name: average_order_value")
    kpis.write_text(head + sep + tail.replace("timezone: Europe/Berlin", "timezone: UTC", 1))
    (catalog_dir / "kpis" / "extra.yaml").write_text(
        "kpis:\n  - {name: kpi_values, value_chain: sales, description: x, source: orders, measure: count(*)}\n"
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_dir)
    problems = "\n".join(caught.value.problems)
    assert (
        "kpi average_order_value: derived: 'net_revenue' is computed in Europe/Berlin, "
        "this KPI in UTC; inputs must use the same time zone" in problems
    )
    assert "kpi kpi_values: name: 'kpi_values' is reserved" in problems


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [("^ORD-(?!0{8})[0-9]{8}$", "(?!"), ("^(ORD)-[0-9]{8}\\\\1?$", "\\1"), ("^(?>ORD)-.*$", "(?>")],
)
def test_a_pattern_the_clean_engine_cannot_run_is_refused_at_load(
    catalog_dir: Path, pattern: str, construct: str
) -> None:
    """Python's `re` accepts look-around and back-references; the clean stage's engine (polars)
    does not. The catalog says so at load, with the column, not the first delivery."""
    sources = catalog_dir / "sources" / "sales.yaml"
    sources.write_text(sources.read_text().replace('"^ORD-[0-9]{8}$"', f'"{pattern}"', 1))
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_dir)
    problem = caught.value.problems[0]  # the KPIs of the refused source follow it
    assert "entry 1 (orders): columns.0.pattern: " in problem, problem
    assert f"pattern uses {construct!r}" in problem and "Rust syntax" in problem, problem
