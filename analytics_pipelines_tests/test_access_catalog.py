"""Audience declarations are validated when the catalog loads: hostile names and filters, unknown
value chains, KPIs or dimensions are refused with the file, the audience and the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analytics_pipelines.lib.catalog import CatalogError, load_catalog
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines_tests.conftest import PROJECT_ROOT


def catalog_with(tmp_path: Path, audiences: str) -> Path:
    """The demo catalog's sources and KPIs with the given access file."""
    for sub in ("sources", "kpis"):
        (tmp_path / sub).mkdir()
        for path in (DEMO_CATALOG_DIR / sub).glob("*.yaml"):
            (tmp_path / sub / path.name).write_text(path.read_text())
    (tmp_path / "access").mkdir()
    (tmp_path / "access" / "audiences.yaml").write_text(audiences)
    return tmp_path


def problems(tmp_path: Path, audiences: str) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_with(tmp_path, audiences))
    return caught.value.problems


def one_audience(name: str = "north", **fields: str) -> str:
    body = "".join(f"\n    {key}: {value}" for key, value in fields.items())
    return f"audiences:\n  - name: {name}{body}\n"


@pytest.mark.parametrize(
    "name",
    [
        '"north; DROP ROLE postgres"',
        "'north\"--'",
        "North",
        "'north region'",
        "'1north'",
        "x" * 52,  # ap_audience_ + 52 characters is longer than PostgreSQL's 63
        "'nörth'",
    ],
)
def test_hostile_audience_names_are_refused(tmp_path: Path, name: str) -> None:
    found = problems(tmp_path, one_audience(name, value_chains="[sales]"))
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'access' / 'audiences.yaml'}: entry 1")
    assert "name: audience name" in found[0]
    assert "becomes the PostgreSQL role ap_audience_<name>" in found[0]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("\"region = 'north'; DROP TABLE kpi.kpi_values\"", "at position 16"),
        ("\"region = 'north' -- all\"", "at position 17"),
        ("\"region in (select 'north')\"", "at position 11"),
        ('"pg_sleep(10) = 1"', "unknown function 'pg_sleep'"),
        ("\"region = 'north' or 1 = 1\"", "a comparison needs at least one column"),
        ("\"region::text = 'north'\"", "at position 6"),
        ("\"regoin = 'north'\"", "unknown column 'regoin'; did you mean 'region'?"),
        ("\"region = 'nort'\"", "'nort' is not an allowed value of region"),
        ('"quantity > 5"', "unknown column 'quantity'"),  # a source column, not a dimension
        ('"region = \'north"', "at position 9"),
    ],
)
def test_hostile_or_wrong_filters_are_refused(tmp_path: Path, text: str, reason: str) -> None:
    found = problems(tmp_path, one_audience(value_chains="[sales]", filter=text))
    assert len(found) == 1, found
    assert found[0].startswith(
        f"{tmp_path / 'access' / 'audiences.yaml'}: audience north: filter: "
    ), found[0]
    assert reason in found[0], found[0]


def test_unknown_value_chains_kpis_and_kpis_without_the_dimension_are_refused(
    tmp_path: Path,
) -> None:
    folder = catalog_with(
        tmp_path,
        one_audience("a", value_chains="[sale]")
        + "  - name: b\n    kpis: [gross_revenu]\n"
        + "  - name: c\n    kpis: [active_customers, gross_revenue]\n    filter: region = 'north'\n"
        + "  - name: f\n    value_chains: [sales]\n" * 2,
    )
    # A file whose entry pydantic refuses: reported, the other file's audiences still checked.
    (folder / "access" / "more.yaml").write_text(
        "audiences:\n  - name: e\n    value_chains: [sales]\n"
        "  - name: d\n    description: nothing to read\n"
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(folder)
    found = caught.value.problems
    where = f"{tmp_path / 'access' / 'audiences.yaml'}"
    assert f"{where}: audience f: declared twice (also in {where})" in found
    assert any(
        p.startswith(f"{where}: audience a: value_chains: unknown value chain 'sale'")
        and "did you mean 'sales'" in p
        for p in found
    ), found
    assert any(
        p.startswith(f"{where}: audience b: kpis: unknown KPI 'gross_revenu'")
        and "did you mean 'gross_revenue'" in p
        for p in found
    ), found
    assert (
        f"{where}: audience c: kpis: active_customers is not broken down by region: its values "
        "sum every region, which the filter restricts" in found
    )
    assert any(
        p.startswith(f"{folder / 'access' / 'more.yaml'}: entry 2 (d): ")
        and "declare value_chains or kpis" in p
        for p in found
    ), found


def test_a_bad_audience_does_not_hide_the_rest_of_the_catalog_problems(tmp_path: Path) -> None:
    folder = catalog_with(tmp_path, one_audience(value_chains="[nowhere]"))
    (folder / "kpis" / "broken.yaml").write_text(
        "kpis:\n  - name: broken\n    value_chain: sales\n    description: x\n"
        "    source: orders\n    measure: sum(unit_prise)\n"
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(folder)
    assert any("kpi broken: measure:" in p for p in caught.value.problems)
    assert any(
        "audience north: value_chains: unknown value chain" in p for p in caught.value.problems
    )


def test_catalog_validate_names_the_file_and_the_audience(tmp_path: Path) -> None:
    folder = catalog_with(tmp_path, one_audience(value_chains="[sales]", filter="\"regoin = 'x'\""))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "analytics_pipelines.cli",
            "catalog",
            "validate",
            "--dir",
            str(folder),
        ],
        env={k: v for k, v in os.environ.items() if k != "CATALOG_DIR"},
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{folder / 'access' / 'audiences.yaml'}: audience north: filter: at position 0:" in (
        done.stderr
    )


def test_the_demo_catalog_declares_valid_audiences() -> None:
    catalog = load_catalog(DEMO_CATALOG_DIR)
    assert {"sales_north", "partner_channel", "customer_service_team"} <= set(catalog.audiences)
