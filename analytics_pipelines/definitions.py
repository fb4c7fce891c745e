"""The code location: everything under defs/ is loaded by Dagster's autoloader."""

import sys
from pathlib import Path

import dagster as dg
from dotenv import load_dotenv

from analytics_pipelines.lib.catalog import CatalogError
from analytics_pipelines.lib.logging import configure_logging
from analytics_pipelines.lib.settings import SettingsError, get_settings


@dg.definitions
def defs() -> dg.Definitions:
    load_dotenv(override=False)
    try:
        settings = get_settings()
    except SettingsError as error:
        # One readable message and exit status 2, instead of a traceback in every tool.
        sys.stderr.write(f"{error}\n")
        raise SystemExit(2) from None
    configure_logging(settings.log_format, settings.log_level)
    try:
        loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    except CatalogError as error:
        sys.stderr.write(f"{error}\n")
        raise SystemExit(2) from None
    # Our steps are set-based statements that finish in about a second: a subprocess per step
    # (Dagster's default) would cost more than the work and delay a dropped file's KPIs.
    return dg.Definitions.merge(loaded, dg.Definitions(executor=dg.in_process_executor))
