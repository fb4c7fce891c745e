"""Settings the ingestion definitions read when the code location loads."""

from __future__ import annotations

import os
from pathlib import Path

from analytics_pipelines.lib.catalog import Catalog, load_catalog_cached
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR, SettingsError, get_settings

DEFAULT_SENSOR_INTERVAL_SECONDS = 30


def definitions_catalog() -> Catalog:
    """The catalog named by the settings (validated by `definitions.py` before the defs load).

    Falls back to CATALOG_DIR / the demo catalog when the rest of the environment is absent,
    e.g. when a test or `dg list defs` imports the definitions without a database configured.
    """
    try:
        directory = get_settings().catalog_dir
    except SettingsError:
        directory = Path(os.environ.get("CATALOG_DIR") or DEMO_CATALOG_DIR)
    return load_catalog_cached(str(directory))


def sensor_interval_seconds() -> int:
    try:
        return get_settings().sensor_interval_seconds
    except SettingsError:
        return int(os.environ.get("SENSOR_INTERVAL_SECONDS") or DEFAULT_SENSOR_INTERVAL_SECONDS)
