"""Catalog keys of the ML on KPIs: `forecast`, `anomalies` and the catalog-wide `defaults`,
validated like the rest (file, KPI, field and reason)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from analytics_pipelines.lib.catalog import CatalogError, load_catalog
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG_DIR, target)
    return target


def _edit(folder: Path, file: str, change: object) -> None:
    path = folder / "kpis" / file
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _kpi(data: dict, name: str) -> dict:
    return next(k for k in data["kpis"] if k["name"] == name)


def test_demo_kpis_declare_forecast_and_anomalies() -> None:
    catalog = load_catalog(DEMO_CATALOG_DIR)
    gross = catalog.kpis["gross_revenue"]
    assert gross.forecast is not None and gross.forecast.horizon_days == 28
    assert gross.anomalies is not None and gross.anomalies.interval_level == 99.0
    assert catalog.kpis["net_revenue"].forecast is None


def test_bad_values_and_grains_are_refused_with_where(catalog_dir: Path) -> None:
    def change(data: dict) -> None:
        _kpi(data, "net_revenue")["forecast"] = {"horizon_days": 0}
        _kpi(data, "order_count")["anomalies"] = {"sensitivity": "extreme"}
        _kpi(data, "return_rate")["anomalies"] = {"level": 100}
        _kpi(data, "active_customers")["anomalies"] = {"level": 97.5, "sensitivity": "low"}

    _edit(catalog_dir, "sales.yaml", change)
    with pytest.raises(CatalogError) as raised:
        load_catalog(catalog_dir)
    text = str(raised.value)
    assert (
        "sales.yaml: entry 2 (net_revenue): forecast.horizon_days: Input should be greater than or equal to 1"
        in text
    )
    assert (
        "entry 3 (order_count): anomalies.sensitivity: Input should be 'low', 'medium' or 'high'"
        in text
    )
    assert "(return_rate): anomalies.level: Input should be less than 100" in text
    assert (
        "(active_customers): anomalies: declare sensitivity (low, medium, high) or level "
        "(a percentage), not both" in text
    )

    def monthly(data: dict) -> None:
        _kpi(data, "units_picked")["grains"] = ["month"]
        _kpi(data, "units_picked")["forecast"] = {"horizon_days": 14}

    shutil.rmtree(catalog_dir)
    shutil.copytree(DEMO_CATALOG_DIR, catalog_dir)
    _edit(catalog_dir, "supply_chain.yaml", monthly)
    with pytest.raises(CatalogError) as raised:
        load_catalog(catalog_dir)
    assert raised.value.problems == [
        f"{catalog_dir}/kpis/supply_chain.yaml: kpi units_picked: forecast: needs the day grain, "
        "the values it models (grains: month); add day to grains or remove forecast"
    ]


def test_catalog_wide_defaults_apply_to_day_kpis_unless_they_opt_out(catalog_dir: Path) -> None:
    def change(data: dict) -> None:
        data["defaults"] = {"forecast": {"horizon_days": 14}, "anomalies": {"sensitivity": "high"}}
        _kpi(data, "net_revenue")["forecast"] = None  # opts out of the default forecast
        _kpi(data, "return_rate")["grains"] = ["month"]  # no day grain: the default passes it by

    _edit(catalog_dir, "sales.yaml", change)
    catalog = load_catalog(catalog_dir)
    kpis = catalog.kpis
    assert kpis["net_revenue"].forecast is None
    assert kpis["net_revenue"].anomalies is not None
    assert kpis["net_revenue"].anomalies.interval_level == 95.0
    # Its own declaration wins over the default.
    assert kpis["gross_revenue"].forecast is not None
    assert kpis["gross_revenue"].forecast.horizon_days == 28
    assert kpis["gross_revenue"].anomalies.interval_level == 99.0  # type: ignore[union-attr]
    # Catalog-wide: KPIs of the other files get it too.
    assert kpis["tickets_opened"].forecast.horizon_days == 14  # type: ignore[union-attr]
    assert kpis["return_rate"].forecast is None and kpis["return_rate"].anomalies is None

    _edit(catalog_dir, "supply_chain.yaml", lambda data: data.update(defaults={"forecast": {}}))
    with pytest.raises(CatalogError) as raised:
        load_catalog(catalog_dir)
    assert "defaults: declared in more than one KPI file" in str(raised.value)


def test_reserved_names_of_the_ml_tables(catalog_dir: Path) -> None:
    _edit(
        catalog_dir, "sales.yaml", lambda data: _kpi(data, "order_count").update(name="forecasts")
    )
    with pytest.raises(CatalogError) as raised:
        load_catalog(catalog_dir)
    assert "kpi forecasts: name: 'forecasts' is reserved" in str(raised.value)
