"""The code location: everything under defs/ is loaded by Dagster's autoloader."""

import functools
import os
import sys
from pathlib import Path

import dagster as dg

from analytics_pipelines.lib.catalog import CatalogError
from analytics_pipelines.lib.dev_lock import running_stack_environment
from analytics_pipelines.lib.logging import configure_logging
from analytics_pipelines.lib.settings import (
    DEV_DATA_DIR,
    SettingsError,
    get_settings,
    missing_connections_line,
    resolve_environment,
)

# Read by Dagster in the process that stores a run's events (its own, opt-in setting).
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = "500"

# Commands that execute the run in the process that loads us (`dg launch`, `dagster asset
# materialize`, `dagster job execute`): without connections they would fail later with
# Dagster's config traceback, so they are told here, in one line, what to set.
_EXECUTING_COMMANDS = (
    ("dg", "launch"),
    ("dagster", "asset", "materialize"),
    ("dagster", "job", "execute"),
)


def _executes_here() -> bool:
    if not sys.argv:
        return False
    program = Path(sys.argv[0])
    # `python -m dagster ...` runs .../dagster/__main__.py
    name = program.parent.name if program.name == "__main__.py" else program.name
    words = [name, *sys.argv[1:3]]
    return any(words[: len(command)] == list(command) for command in _EXECUTING_COMMANDS)


@functools.cache  # Dagster may load the definitions more than once per command: say it once
def _say_what_runs_will_need(missing: tuple[str, ...]) -> None:
    # `dg check defs`, `dg list defs` and `dg dev` work without them; the first sensor tick
    # or run would not, and Dagster's error for that is a traceback per tick.
    consequence = "the definitions load, but runs and sensor ticks will fail"
    sys.stderr.write(f"note: {missing_connections_line(list(missing), consequence)}\n")


@functools.cache
def _say_where_the_run_is_recorded() -> None:
    # Dagster chose its instance before loading us, from DAGSTER_HOME only: without it the run
    # writes to the stack's warehouse but is recorded in a throwaway instance, not in the UI.
    stack_home = running_stack_environment(DEV_DATA_DIR).get("DAGSTER_HOME")
    if stack_home and not os.environ.get("DAGSTER_HOME"):
        sys.stderr.write(
            "note: this run uses the running `make dev` stack's database and storage; to see it "
            f"in the stack's UI as well, run the command with DAGSTER_HOME={stack_home}\n"
        )


@dg.definitions
def defs() -> dg.Definitions:
    # The same sources as every other entry point: environment, `.env`, a running `make dev`.
    # The resources read DATABASE_URL and STORAGE_URL when a run starts, not here, so that
    # `dg check defs` and `dg list defs` need no database.
    resolve_environment(dagster_instance=False)
    try:
        settings = get_settings()
    except SettingsError as error:
        # One readable message and exit status 2, instead of a traceback in every tool.
        sys.stderr.write(f"{error}\n")
        raise SystemExit(2) from None
    missing = [name for name in ("DATABASE_URL", "STORAGE_URL") if not os.environ.get(name)]
    if missing and _executes_here():
        sys.stderr.write(f"{missing_connections_line(missing)}\n")
        raise SystemExit(2)
    if missing:
        _say_what_runs_will_need(tuple(missing))
    if _executes_here():
        _say_where_the_run_is_recorded()
    configure_logging(settings.log_format, settings.log_level)
    # Every process that runs our steps loads these definitions (run workers of make dev and the
    # Docker stack, `analytics-pipelines refresh`): there, Dagster's opt-in batching writes a ranged
    # run's per-partition materialisations together. A 365-day, 8-KPI backfill took 29 s instead
    # of 62-70 s (bench/README.md). A value set in the environment wins.
    os.environ.setdefault(EVENT_BATCH_SIZE_ENV, EVENT_BATCH_SIZE)
    try:
        loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    except CatalogError as error:
        sys.stderr.write(f"{error}\n")
        raise SystemExit(2) from None
    # Our steps are set-based statements that finish in about a second: a subprocess per step
    # (Dagster's default) would cost more than the work and delay a dropped file's KPIs.
    return dg.Definitions.merge(loaded, dg.Definitions(executor=dg.in_process_executor))
