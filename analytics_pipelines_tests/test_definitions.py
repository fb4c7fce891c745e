"""The code location loads as Dagster loads it, with one asset per declared source and KPI."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from analytics_pipelines.lib.catalog import load_catalog
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.Definitions]:
    # Placeholders only while loading: a DATABASE_URL left behind would point the session's
    # database fixture (created later when this module runs first) at a server that is not there.
    with pytest.MonkeyPatch.context() as env:
        if "DATABASE_URL" not in os.environ:
            env.setenv("DATABASE_URL", "postgresql://check@localhost/check")
        if "STORAGE_URL" not in os.environ:
            env.setenv("STORAGE_URL", f"file://{tmp_path_factory.mktemp('store')}")
        from analytics_pipelines.definitions import defs as build

        loaded = build()
        dg.Definitions.validate_loadable(loaded)
        yield loaded


def test_one_asset_per_declared_source_and_kpi(defs: dg.Definitions) -> None:
    catalog = load_catalog(DEMO_CATALOG_DIR)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    for source in catalog.sources:
        assert f"raw/raw_{source}" in keys
        assert f"clean/{source}" in keys
    for kpi in catalog.kpis:
        assert f"kpi/{kpi}" in keys


def test_every_node_of_the_lineage_graph_has_a_label_of_its_own(defs: dg.Definitions) -> None:
    # Dagster's lineage graph labels a node with the last part of its asset key alone
    # (dagster-webserver 1.13: ui-core asset-graph/AssetNode.tsx, `assetKey.path[length - 1]`).
    catalog = load_catalog(DEMO_CATALOG_DIR)
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    labels = [key.path[-1] for key in keys]
    assert len(labels) == len(set(labels)), sorted(labels)
    for source in catalog.sources:
        raw = next(k for k in keys if k.path[0] == "raw" and k.path[-1] == f"raw_{source}")
        clean = dg.AssetKey(["clean", source])
        assert clean in keys and raw.path[-1] != clean.path[-1] == source


def test_every_asset_has_a_description_kinds_and_a_value_chain_group(defs: dg.Definitions) -> None:
    catalog = load_catalog(DEMO_CATALOG_DIR)
    chains = {s.value_chain for s in catalog.sources.values()}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key.to_user_string()} has no description"
        assert node.kinds, f"{key.to_user_string()} has no kinds"
        assert node.group_name in chains, f"{key.to_user_string()} is in group {node.group_name}"


def test_sensors_and_schedules_are_running_by_default(defs: dg.Definitions) -> None:
    sensors = list(defs.sensors or [])
    assert sensors, "no sensors"
    for sensor in sensors:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, sensor.name
    assert defs.schedules


def test_dg_check_defs_fails_on_an_invalid_catalog_with_file_entry_and_reason(
    tmp_path: Path,
) -> None:
    catalog = tmp_path / "catalog"
    (catalog / "sources").mkdir(parents=True)
    (catalog / "kpis").mkdir()
    (catalog / "sources" / "shop.yaml").write_text(
        "sources:\n"
        "  - name: orders\n"
        "    value_chain: sales\n"
        "    landing_prefix: landing/orders\n"
        "    format: csv\n"
        "    columns: [{name: id, type: string}, {name: at, type: timestamp}]\n"
        "    primary_key: [order_id]\n"
        "    event_time: at\n"
    )
    env = {
        **os.environ,
        "CATALOG_DIR": str(catalog),
        "DATABASE_URL": "postgresql://check@localhost/check",
        "STORAGE_URL": f"file://{tmp_path}",
        "DAGSTER_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "dg"), "check", "defs"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert (
        f"{catalog / 'sources' / 'shop.yaml'}: entry 1 (orders): primary_key names undeclared columns: order_id"
        in (result.stdout + result.stderr)
    )


def test_loading_the_definitions_leaves_the_data_libraries_to_the_runs() -> None:
    """Every `dg` command and every run's start loads the definitions: polars, pandas, pyarrow
    and statsforecast are imported by the steps that use them (about 0.9 s less per load)."""
    import sys

    probe = (
        "import sys, analytics_pipelines.definitions as d; d.defs(); "
        "print(sorted(m for m in ('polars', 'pandas', 'pyarrow', 'statsforecast') "
        "if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORAGE_URL")}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
