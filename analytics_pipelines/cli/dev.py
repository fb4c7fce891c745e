"""`analytics-pipelines dev`: everything a laptop needs, started together and stopped together.

Starts a project-local PostgreSQL under `.data/` (unless DATABASE_URL is set), migrates, uses
`.data/storage` as object storage (unless STORAGE_URL is set), and runs `dg dev` with the
code location loaded. Ctrl-C stops what it started; a second run reuses the data.

On the local PostgreSQL the pipelines run as the role `analytics_pipelines` (password in
`.data/runtime-db-password`, over TCP; no superuser, no CREATEROLE: lib/access/runtime_role.py);
role management (`access apply`, run here at each start) uses the superuser through the server's
private socket, published as ACCESS_ADMIN_DATABASE_URL.

While it runs, `.data/dev-stack.json` holds the settings it runs with (lib/dev_lock.py): every
`analytics-pipelines` command, and the code location loaded by `dg`/`dagster` commands, started
in this folder from another shell uses them for whatever the environment and `.env` leave unset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from analytics_pipelines.lib.demo.defaults import DEFAULT_START as DEMO_START
from analytics_pipelines.lib.dev_lock import DevAlreadyRunning, DevLock
from analytics_pipelines.lib.pgserver import LocalPostgres, PostgresUnavailable

DATA_DIR = Path(".data")
RUNTIME_PASSWORD_FILE = DATA_DIR / "runtime-db-password"
DEV_PG_PORT = 54329
# Eight weeks, long enough for lib/ml to forecast and judge (two weeks of history before the
# first verdict, a weekly model from four weeks), in 14 files per source of four days each (as
# many loads as the 14 daily files before); ~1,430 rows per day as before.
DEMO_ROWS = 80_000
DEMO_DAYS = 56
DEMO_FILES = 14
# The one name of the code location: docker/workspace.yaml, [tool.dg.project] and this.
LOCATION_NAME = "analytics_pipelines"
DEV_WORKSPACE_YAML = f"""\
# Written by `analytics-pipelines dev`: the code location under its one name.
load_from:
  - python_module:
      module_name: analytics_pipelines.definitions
      location_name: {LOCATION_NAME}
"""
DAGSTER_DEV_YAML = """\
# Written by `analytics-pipelines dev`: Dagster's runs, events and schedules in the dev PostgreSQL.
# The URL is written out (not `env:`), so that DAGSTER_HOME alone points any `dg`/`dagster`
# command at this instance.
storage:
  postgres:
    postgres_url: {dagster_pg_url}
# The shape of the shipped dagster.yaml: run limits under `concurrency:`, classes by their public
# module; only the queue's pace differs.
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    # Dequeue at once: on a laptop the queue's default pace is most of a dropped file's latency.
    dequeue_use_threads: true
    dequeue_interval_seconds: 1
run_launcher:
  module: dagster
  class: DefaultRunLauncher
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 2
    granularity: op
# Sensors tick side by side, and a tick's run requests are created side by side: creating a
# ranged run stores a planned event per partition (a year-to-date repaint: hundreds), which
# must not hold back the landing sensors or the same drop's other KPI runs.
sensors:
  use_threads: true
  num_workers: 4
  num_submit_workers: 4
telemetry:
  enabled: false
# No "join the community" pop-up on the first visit of the UI.
nux:
  enabled: false
"""


def dev_instance_yaml(dagster_pg_url: str) -> str:
    """The dev instance's dagster.yaml, storing in the given database."""
    # A JSON string is a YAML string: quoting and escaping done right for any URL.
    return DAGSTER_DEV_YAML.replace("{dagster_pg_url}", json.dumps(dagster_pg_url))


def _write_private(path: Path, text: str) -> None:
    # Owner-only: the URL may carry the password of a DATABASE_URL given to dev.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dev", help="run the whole stack locally (PostgreSQL, storage, Dagster UI)"
    )
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    parser.add_argument(
        "--pg-port",
        type=int,
        default=DEV_PG_PORT,
        help=f"port of the local PostgreSQL (default {DEV_PG_PORT})",
    )
    parser.add_argument("--no-ui", action="store_true", help="prepare everything, then exit")
    parser.set_defaults(func=run)


def _default_child_signals() -> None:
    # A shell that started us in the background may have left SIGINT/SIGTERM ignored; the UI
    # process must react to them, or stopping it would leave it running.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _seed_demo_data(log: Any) -> None:
    """On a first start, drop the demo files into the landing folders; the sensors take it from there."""
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.demo import DemoError, generate_demo
    from analytics_pipelines.lib.demo.defaults import demo_activity
    from analytics_pipelines.lib.health import store_from_settings
    from analytics_pipelines.lib.settings import get_settings

    settings = get_settings()
    catalog = load_catalog(settings.catalog_dir)
    store = store_from_settings(settings)
    if any(store.list(source.landing_prefix, limit=1) for source in catalog.sources.values()):
        return
    try:
        summaries = generate_demo(
            store,
            catalog.sources.values(),
            rows=DEMO_ROWS,
            days=DEMO_DAYS,
            seed=42,
            files_per_source=DEMO_FILES,
            day_activity=demo_activity(DEMO_START, DEMO_DAYS),
        )
    except DemoError as error:
        log(f"no demo data generated: {error}\n")
        return
    for summary in summaries:
        log(
            f"demo data: {summary.source}: {len(summary.files)} files, {summary.rows} rows -> {summary.prefix}\n"
        )


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


# Dagster's daemon, stopped while a threaded sensor tick is submitting a run, reports that tick
# with a traceback (its workspace has closed: DagsterCodeLocationNotFoundError). It does so twice:
# the tick's own context logs "Sensor tick caught an error" and re-raises, then the daemon's loop
# logs the same exception with the sensor's name. After Ctrl-C that race is expected: the named
# report becomes one line and the unnamed one before it is left out (seen in CI, where it alone
# was relayed with its traceback). A traceback printed once the leftovers are being stopped
# (_end_leftovers) also becomes one line: that is a process reacting to our SIGTERM (seen in CI:
# a code server's KeyboardInterrupt chained to "RuntimeError: release unlocked lock").
# Any other report is relayed as it came.
_SENSOR_ERROR = b"Sensor daemon caught an error for sensor "
_TICK_ERROR = b"Sensor tick caught an error"
_SHUTDOWN_RACE = b"DagsterCodeLocationNotFoundError"
_TRACEBACK = b"Traceback (most recent call last):"
# Python's words between the parts of a chained traceback; the report goes on after them.
_CHAINED = (
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
)


def _relay(
    source: IO[bytes], sink: IO[bytes], stopping: threading.Event, ending: threading.Event
) -> None:
    """Copy the UI's output line by line, turning the reports expected at shutdown into notes."""
    # The report being read, held until its end is known: a chained part may follow its
    # exception, so it ends only at a later line neither blank nor a chain marker (or at EOF).
    report: list[bytes] = []
    exception_at: int | None = None  # its exception line so far; None inside a traceback part
    for line in iter(source.readline, b""):
        if report:
            if exception_at is None:
                # In a traceback every line is a frame (indented), blank or a part's start, up
                # to the first other line: the exception.
                if not line[:1].isspace() and not line.startswith(_TRACEBACK):
                    exception_at = len(report)
            elif line.startswith(_CHAINED):
                exception_at = None
            elif line.strip():
                # Neither blank nor a chain marker after the exception: the report has ended.
                _write_report(report, exception_at, sink)
                report, exception_at = [], None
        if report:
            report.append(line)
        elif (stopping.is_set() and (_SENSOR_ERROR in line or _TICK_ERROR in line)) or (
            ending.is_set() and line.startswith(_TRACEBACK)
        ):
            report = [line]
        else:
            sink.write(line)
            sink.flush()
    _write_report(report, exception_at, sink)


def _write_report(report: list[bytes], exception_at: int | None, sink: IO[bytes]) -> None:
    """A held report as one line when it is an expected one, else (or when cut off before its
    exception) as it came; then the blank lines held after it in case a chained part followed."""
    end = len(report) if exception_at is None else exception_at + 1
    text = b"".join(report[:end])
    if exception_at is not None:
        exception = report[exception_at].strip()
        if report[0].startswith(_TRACEBACK):
            text = b"a Dagster process stopped by the shutdown reported: %s\n" % exception
        elif _SHUTDOWN_RACE in exception and _TICK_ERROR in report[0]:
            text = b""  # the daemon's named report of the same exception follows
        elif _SHUTDOWN_RACE in exception:
            sensor = report[0].split(_SENSOR_ERROR, 1)[1].split(b"\x1b", 1)[0].strip()
            text = (
                b"the tick of %s in flight at Ctrl-C stopped before submitting its run\n" % sensor
            )
    sink.write(text)
    sink.writelines(report[end:])
    sink.flush()


def _stop(child: subprocess.Popen[bytes], stopping: threading.Event) -> None:
    """One SIGINT to the UI's supervisor, which stops the webserver, daemon and code server in order."""
    stopping.set()
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _end_leftovers(child: subprocess.Popen[bytes], log: Any, ending: threading.Event) -> None:
    """Stop what the UI's supervisor left running in its process group (its own session).

    Seen once in testing: a code server outlived `dg dev` and ignored SIGTERM, holding
    connections to the database about to stop. Nothing in that group is of use once its
    supervisor has gone.
    """
    try:
        os.killpg(child.pid, 0)
    except (ProcessLookupError, PermissionError):
        return  # the group is empty: everything stopped in order
    # Set only when there is something to stop: from here a traceback is a leftover's reaction
    # to this SIGTERM (_relay), not a report printed before.
    ending.set()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    log("stopping Dagster processes that outlived the UI\n")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def _compile_package() -> None:
    """Bytecode of this package written once: each Dagster run starts a new interpreter, and
    with PYTHONDONTWRITEBYTECODE set none of them would keep what it compiled (`make
    dev-install` compiles the dependencies). Unwritable folders are skipped (quiet)."""
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parent.parent, quiet=2)


def ensure_dagster_database(url: str) -> str:
    """Dagster keeps its own tables in a database of its own beside the warehouse."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = 'dagster'")
        ).scalar()
        if not exists:
            conn.execute(sa.text("CREATE DATABASE dagster"))
    engine.dispose()
    return sa.make_url(url).set(database="dagster").render_as_string(hide_password=False)


def _apply_access(env: dict[str, str], log: Any) -> None:
    """The catalog's audiences, applied with the role-management URL when there is one."""
    if not env.get("ACCESS_ADMIN_DATABASE_URL"):
        log(
            "audiences not applied: set ACCESS_ADMIN_DATABASE_URL (a role with CREATEROLE), "
            "then run `analytics-pipelines access apply`\n"
        )
        return
    from analytics_pipelines.lib.access.policies import AccessApplyError, apply_from_url
    from analytics_pipelines.lib.catalog import CatalogError, load_catalog
    from analytics_pipelines.lib.settings import get_settings

    try:
        lines = apply_from_url(
            env["ACCESS_ADMIN_DATABASE_URL"], load_catalog(get_settings().catalog_dir)
        )
    except (AccessApplyError, CatalogError) as error:
        log(f"audiences not applied: {error}\n")
        return
    log("access: " + "\n".join(lines) + "\n")


def _say_what_came_from_dotenv(log: Any) -> None:
    """A `.env` changes what dev does (another database, other ticks): say so, masked."""
    from analytics_pipelines.lib.settings import mask_url, resolved_sources

    taken = resolved_sources().from_dotenv
    if taken:
        values = ", ".join(f"{name}={mask_url(value)}" for name, value in sorted(taken.items()))
        log(f"from .env: {values}\n")


def run(args: argparse.Namespace) -> int:
    from analytics_pipelines.lib.settings import mask_url

    env = dict(os.environ)
    log = sys.stderr.write
    _say_what_came_from_dotenv(log)
    # Before anything starts: a second stack would start a second daemon, fail to bind the UI
    # port, and on Ctrl-C stop the first one's database.
    lock = DevLock(DATA_DIR)
    try:
        lock.acquire(
            ui_url=f"http://localhost:{args.port}",
            database=mask_url(env["DATABASE_URL"])
            if env.get("DATABASE_URL")
            else f"local PostgreSQL on port {args.pg_port}",
        )
    except DevAlreadyRunning as error:
        log(f"{error}\n")
        return 1
    try:
        return _run_locked(args, env, log, lock)
    finally:
        lock.release()


def _run_locked(args: argparse.Namespace, env: dict[str, str], log: Any, lock: DevLock) -> int:
    from alembic import command
    from alembic.config import Config

    from analytics_pipelines.lib.settings import (
        DAGSTER_INSTANCE_VARIABLES,
        PROJECT_VARIABLES,
        mask_url,
        normalise_database_url,
    )

    server: LocalPostgres | None = None
    if not env.get("DATABASE_URL"):
        try:
            server = LocalPostgres(DATA_DIR / "postgres", args.pg_port, password_auth=True)
            server.start()
        except PostgresUnavailable as error:
            log(f"{error}\n")
            return 1
        log(f"PostgreSQL running from {server.datadir} on port {server.port}\n")
        from analytics_pipelines.lib.access.runtime_role import runtime_login

        env["DATABASE_URL"], env["ACCESS_ADMIN_DATABASE_URL"] = runtime_login(
            server, RUNTIME_PASSWORD_FILE
        )
        log(
            "pipelines connect as role analytics_pipelines (not a superuser; password in "
            f"{RUNTIME_PASSWORD_FILE}); roles are managed through the server's socket\n"
        )
        lock.update(mask_url(env["DATABASE_URL"]))
    env["DATABASE_URL"] = normalise_database_url(env["DATABASE_URL"])
    if not env.get("STORAGE_URL"):
        storage = (DATA_DIR / "storage").resolve()
        storage.mkdir(parents=True, exist_ok=True)
        env["STORAGE_URL"] = f"file://{storage}"
    # Short ticks in development: a dropped file reaches its KPIs through two sensor ticks (the
    # landing sensor, then the KPI sensor); at 2 s the median drop-to-KPI time measured 11.5-13.7 s
    # against ~18 s at 5 s (python -m bench.latency_bench).
    env.setdefault("SENSOR_INTERVAL_SECONDS", "2")
    # KPI partitions from the demo's first day, not the production default: the UI's "filled"
    # share and the partition bar then describe the data that is there.
    env.setdefault("KPI_PARTITIONS_START", DEMO_START.isoformat())
    dagster_home = (DATA_DIR / "dagster_home").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    _write_private(
        dagster_home / "dagster.yaml",
        dev_instance_yaml(ensure_dagster_database(env["DATABASE_URL"])),
    )
    workspace = dagster_home / "workspace.yaml"
    workspace.write_text(DEV_WORKSPACE_YAML)
    env.setdefault("DAGSTER_HOME", str(dagster_home))
    env.setdefault("DAGSTER_WEBSERVER_URL", f"http://localhost:{args.port}")
    os.environ.update(env)

    child: subprocess.Popen[bytes] | None = None
    stopping = threading.Event()
    ending = threading.Event()  # the leftovers are being stopped (_end_leftovers)
    relays: list[threading.Thread] = []
    try:
        config = Config("alembic.ini")
        config.attributes["database_url"] = env["DATABASE_URL"]
        command.upgrade(config, "head")
        _apply_access(env, log)
        # Published once the database is migrated: a second shell never meets a half-made one.
        shared = PROJECT_VARIABLES + DAGSTER_INSTANCE_VARIABLES
        lock.publish({name: env[name] for name in shared if env.get(name)})
        _seed_demo_data(log)
        if args.no_ui:
            return 0
        log(f"Dagster UI on http://localhost:{args.port} (Ctrl-C stops it)\n")
        log(
            f"a second shell in this folder uses this stack with nothing exported "
            f"(its settings: {lock.state_path})\n"
        )
        _compile_package()
        # `dg dev` (not the superseded `dagster dev`) with the workspace naming the location.
        # Its own session: a terminal's Ctrl-C reaches only us, and the single SIGINT we pass
        # on lets Dagster stop its processes in order, instead of each of them being
        # interrupted at once (tracebacks and click's "Aborted!").
        child = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dg"),
                "dev",
                "-w",
                str(workspace),
                "-p",
                str(args.port),
                "--log-level",
                "info",
            ],
            env=env,
            start_new_session=True,
            preexec_fn=_default_child_signals,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for source, sink in ((child.stdout, sys.stdout.buffer), (child.stderr, sys.stderr.buffer)):
            assert source is not None
            relays.append(
                threading.Thread(target=_relay, args=(source, sink, stopping, ending), daemon=True)
            )
            relays[-1].start()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        return child.wait()
    except KeyboardInterrupt:
        if child is not None:
            _stop(child, stopping)
        return 0
    finally:
        if child is not None:
            _end_leftovers(child, log, ending)
            for relay in relays:
                relay.join(timeout=10)
        if server is not None:
            server.stop()
            log("PostgreSQL stopped\n")
