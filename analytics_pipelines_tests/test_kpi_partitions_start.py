"""KPI partitions start at the data: `KPI_PARTITIONS_START` in production, the demo's first day in
`analytics-pipelines dev` (so the UI's partition bar and "filled" share describe what is there)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from pathlib import Path

import dagster as dg
import pytest

from analytics_pipelines.cli import dev
from analytics_pipelines.defs.kpis.factory import build_kpi_definitions
from analytics_pipelines.lib.catalog import CatalogError, load_catalog
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines_tests.conftest import PROJECT_ROOT


def _first_keys(env_start: str | None, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    if env_start is None:
        monkeypatch.delenv("KPI_PARTITIONS_START", raising=False)
    else:
        monkeypatch.setenv("KPI_PARTITIONS_START", env_start)
    built = build_kpi_definitions(load_catalog(DEMO_CATALOG_DIR))
    firsts = set()
    for asset in built.assets:
        assert isinstance(asset.partitions_def, dg.DailyPartitionsDefinition)
        firsts.add(asset.partitions_def.get_first_partition_key())
    return firsts


def test_partitions_start_from_the_configured_day(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _first_keys("2025-11-03", monkeypatch) == {"2025-11-03"}
    assert _first_keys(None, monkeypatch) == {"2024-01-01"}
    with pytest.raises(
        CatalogError, match=re.escape("KPI_PARTITIONS_START is invalid ('03.11.2025')")
    ):
        _first_keys("03.11.2025", monkeypatch)


def test_dev_starts_the_partitions_at_the_demo_first_day(
    tmp_path: Path, scratch_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    monkeypatch.chdir(PROJECT_ROOT)  # alembic.ini
    monkeypatch.setattr(dev, "DATA_DIR", tmp_path / ".data")
    monkeypatch.setenv("DATABASE_URL", scratch_database_url)
    monkeypatch.setenv("STORAGE_URL", f"file://{storage}")
    monkeypatch.delenv("KPI_PARTITIONS_START", raising=False)
    saved = dict(os.environ)
    try:
        assert dev.run(argparse.Namespace(port=3999, no_ui=True)) == 0
        # What dev hands to the code location it starts (`dagster dev` inherits os.environ).
        start = os.environ.get("KPI_PARTITIONS_START")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # The demo's first day, read from the files it dropped (named by their first local day).
    keys = LocalFolderStore(storage).list("")
    days = {re.search(r"_(\d{4}-\d{2}-\d{2})[._]", key.key).group(1) for key in keys}  # type: ignore[union-attr]
    assert keys and start == min(days)
    assert dt.date.fromisoformat(start) > dt.date(2024, 1, 1)
    assert _first_keys(start, monkeypatch) == {start}
