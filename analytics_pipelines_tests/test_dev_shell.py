"""The Dagster CLI from the project folder with nothing exported, and a second shell beside `make dev`.

Commands run as subprocesses with a minimal environment (PATH, HOME and the activated venv),
the way a new user's shell runs them. The slow scenario starts the real `analytics-pipelines dev`
against the test PostgreSQL, then uses it from a "second shell" that exports nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from analytics_pipelines.lib.dev_lock import DevLock
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.tables import kpi_values
from analytics_pipelines_tests.conftest import PROJECT_ROOT

BIN = Path(sys.executable).parent


def shell_env(home: Path, **extra: str) -> dict[str, str]:
    """A fresh login shell with the project's venv activated: no project variable set."""
    return {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "VIRTUAL_ENV": str(BIN.parent),
        **extra,
    }


def run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: int = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_dg_check_and_list_defs_need_nothing_exported(tmp_path: Path) -> None:
    env = shell_env(tmp_path)
    checked = run([str(BIN / "dg"), "check", "defs"], env, PROJECT_ROOT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr

    listed = run([str(BIN / "dg"), "list", "defs", "--json"], env, PROJECT_ROOT)
    assert listed.returncode == 0, listed.stderr
    keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert {"raw/raw_orders", "clean/orders", "kpi/gross_revenue"} <= keys
    assert "Traceback" not in listed.stderr


def test_dg_launch_without_settings_says_in_one_line_what_to_set(tmp_path: Path) -> None:
    """No `.env`, no dev stack in this folder: one line naming the variables, no traceback."""
    result = run(
        [
            str(BIN / "dg"),
            "launch",
            "--assets",
            "raw/raw_orders",
            "--target-path",
            str(PROJECT_ROOT),
        ],
        shell_env(tmp_path),
        tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # Above it only Dagster's once-per-user telemetry notice (this HOME is new).
    ours = [line for line in result.stderr.splitlines() if "DATABASE_URL" in line]
    assert ours == [result.stderr.strip().splitlines()[-1]], result.stderr
    assert ours[0].startswith("DATABASE_URL and STORAGE_URL are not set: start `make dev`")
    assert ".env" in ours[0]


RESOLVE = (
    "import json, os;"
    "from analytics_pipelines.lib.settings import resolve_environment;"
    "sources = resolve_environment();"
    "print(json.dumps({'values': {n: os.environ.get(n) for n in"
    " ('DATABASE_URL', 'STORAGE_URL', 'LOG_LEVEL', 'DAGSTER_HOME')},"
    " 'dotenv': sorted(sources.from_dotenv), 'stack': sorted(sources.from_dev_stack)}))"
)


def resolve_in(cwd: Path, **exported: str) -> dict[str, object]:
    result = run([sys.executable, "-c", RESOLVE], shell_env(cwd, **exported), cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture
def published_stack(tmp_path: Path) -> Iterator[DevLock]:
    """The lock and state file exactly as `analytics-pipelines dev` holds and writes them."""
    lock = DevLock(tmp_path / ".data")
    lock.acquire(ui_url="http://localhost:3999", database="stack database")
    lock.publish(
        {
            "DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/stack",
            "STORAGE_URL": "file:///stack/storage",
            "LOG_LEVEL": "DEBUG",
            "DAGSTER_HOME": "/stack/dagster_home",
        }
    )
    try:
        yield lock
    finally:
        lock.release()


def test_precedence_is_environment_then_dotenv_then_dev_stack(
    tmp_path: Path, published_stack: DevLock
) -> None:
    (tmp_path / ".env").write_text("STORAGE_URL=file:///from/dotenv\nLOG_LEVEL=WARNING\n")
    resolved = resolve_in(tmp_path, LOG_LEVEL="ERROR")
    assert resolved["values"] == {
        "DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/stack",  # only the stack has it
        "STORAGE_URL": "file:///from/dotenv",  # .env beats the stack
        "LOG_LEVEL": "ERROR",  # the environment beats both
        "DAGSTER_HOME": "/stack/dagster_home",
    }
    assert resolved["dotenv"] == ["STORAGE_URL"]
    assert resolved["stack"] == ["DAGSTER_HOME", "DATABASE_URL"]


def test_a_stopped_or_crashed_stack_is_not_used(tmp_path: Path, published_stack: DevLock) -> None:
    state = (tmp_path / ".data" / "dev-stack.json").read_text()
    published_stack.release()
    assert not (tmp_path / ".data" / "dev-stack.json").exists()  # a clean exit removes it
    # What a killed stack leaves behind: the state file, and a lock nobody holds.
    (tmp_path / ".data" / "dev-stack.json").write_text(state)
    resolved = resolve_in(tmp_path)
    assert resolved["stack"] == []
    assert resolved["values"] == dict.fromkeys(
        ("DATABASE_URL", "STORAGE_URL", "LOG_LEVEL", "DAGSTER_HOME")
    )


def test_a_state_file_of_another_process_is_not_used(tmp_path: Path) -> None:
    lock = DevLock(tmp_path / ".data")
    lock.acquire(ui_url="http://localhost:3999", database="x")
    try:
        # A file some earlier stack wrote, while a different process holds the lock now.
        (tmp_path / ".data" / "dev-stack.json").write_text(
            json.dumps({"pid": 1, "environment": {"DATABASE_URL": "postgresql://old@h/d"}})
        )
        assert resolve_in(tmp_path)["stack"] == []
    finally:
        lock.release()


# --- the real dev stack and a second shell -----------------------------------------------


def processes_mentioning(folder: Path) -> list[str]:
    """Command lines of running processes that name `folder` (the stack's DAGSTER_HOME is in it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        text = b" ".join(words).decode(errors="replace")
        if str(folder) in text:
            found.append(text[:200])
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_line(log: Path, text: str, dev: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        assert dev.poll() is None, f"dev exited {dev.returncode}:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    pytest.fail(f"no {text!r} after {seconds} s:\n{log.read_text()[-4000:]}")


@pytest.mark.timeout(300)
def test_a_second_shell_uses_the_running_dev_stack_with_no_exports(
    scratch_database_url: str, tmp_path: Path
) -> None:
    """`dev` in shell one (with its own DATABASE_URL and a two-value-chain catalog); shell two
    exports nothing and still reaches that database, storage and catalog."""
    work = tmp_path / "project"
    work.mkdir()
    for name in ("alembic.ini", "migrations"):
        (work / name).symlink_to(PROJECT_ROOT / name)
    catalog = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG_DIR, catalog)
    for folder in ("kpis", "sources"):
        (catalog / folder / "supply_chain.yaml").unlink()  # shell two must see this catalog
    (work / ".env").write_text("SENSOR_INTERVAL_SECONDS=7\n")
    storage = tmp_path / "storage"
    storage.mkdir()
    first_shell = shell_env(
        tmp_path,
        DATABASE_URL=scratch_database_url,
        STORAGE_URL=f"file://{storage}",
        CATALOG_DIR=str(catalog),
    )
    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        dev = subprocess.Popen(
            [str(BIN / "analytics-pipelines"), "dev", "--port", str(free_port())],
            cwd=work,
            env=first_shell,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_line(log, "Dagster UI on", dev, 120)
        assert "from .env: SENSOR_INTERVAL_SECONDS=7" in log.read_text()
        second_shell = shell_env(tmp_path)

        health = run([str(BIN / "analytics-pipelines"), "health"], second_shell, work)
        report = json.loads(health.stdout.strip().splitlines()[-1])
        assert (report["db"], report["storage"]) == ("ok", "ok"), health.stdout + health.stderr

        kpis = run([str(BIN / "analytics-pipelines"), "kpi", "list"], second_shell, work)
        assert kpis.returncode == 0, kpis.stderr
        assert "gross_revenue" in kpis.stdout
        assert "supply_chain" not in kpis.stdout  # the stack's CATALOG_DIR, not the demo's

        listed = run(
            [str(BIN / "dg"), "list", "defs", "--json", "--target-path", str(PROJECT_ROOT)],
            second_shell,
            work,
        )
        assert listed.returncode == 0, listed.stderr
        keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
        assert "raw/raw_orders" in keys
        assert "raw/inventory_movements" not in keys

        # The stack's sensors load the demo files; shell two sees them in the ledger.
        deadline = time.monotonic() + 120
        while True:
            files = run([str(BIN / "analytics-pipelines"), "files"], second_shell, work)
            assert files.returncode == 0, files.stderr
            if " loaded " in files.stdout or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert files.stdout.startswith("SOURCE"), files.stdout + log.read_text()[-3000:]
        assert " loaded " in files.stdout

        shown = run(
            [str(BIN / "analytics-pipelines"), "kpi", "show", "gross_revenue", "--grain", "day"],
            second_shell,
            work,
        )
        assert shown.returncode == 0, shown.stderr

        # `dg launch` from shell two: on the stack's data; in its UI only with its DAGSTER_HOME.
        launch = [str(BIN / "dg"), "launch", "--assets", "raw/raw_orders"]
        launch += ["--target-path", str(PROJECT_ROOT)]
        here = run(launch, second_shell, work, timeout=300)
        assert here.returncode == 0, here.stderr[-4000:]
        assert "RUN_SUCCESS" in here.stderr
        stack_home = work / ".data" / "dagster_home"
        assert (
            "note: this run uses the running `make dev` stack's database and storage" in here.stderr
        )
        assert f"DAGSTER_HOME={stack_home.resolve()}" in here.stderr
        in_ui = run(launch, {**second_shell, "DAGSTER_HOME": str(stack_home)}, work, timeout=300)
        assert in_ui.returncode == 0, in_ui.stderr[-4000:]
        assert "note:" not in in_ui.stderr
        success = re.search(r" - ([0-9a-f-]{36}) - .*RUN_SUCCESS", in_ui.stderr)
        assert success, in_ui.stderr[-4000:]
        # Recorded in the stack's instance (its own database beside the warehouse): the UI lists it.
        dagster_db = sa.create_engine(sa.make_url(scratch_database_url).set(database="dagster"))
        with dagster_db.connect() as conn:
            recorded = conn.execute(
                sa.text("SELECT status FROM runs WHERE run_id = :run_id"),
                {"run_id": success.group(1)},
            ).scalar_one_or_none()
        dagster_db.dispose()
        assert recorded == "SUCCESS"
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C in the first shell
        dev.wait(timeout=90)
    output = log.read_text()
    assert dev.returncode == 0, output[-4000:]
    assert "PostgreSQL stopped" not in output  # it was not ours to stop
    assert not (work / ".data" / "dev-stack.json").exists()
    assert processes_mentioning(work) == [], "processes of the stack outlived it"
    for noise in ("Aborted!", "Traceback", "SupersessionWarning", "does not match the name"):
        assert noise not in output, f"{noise!r} in the dev log:\n{output[-4000:]}"


# --- the README's Dagster commands --------------------------------------------------------


def readme_dg_commands() -> list[list[str]]:
    """The `dg launch` lines of the README's "Command line" block, as a user would type them."""
    text = (PROJECT_ROOT / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return [line.split() for line in block.splitlines() if line.startswith("dg launch ")]


@pytest.mark.timeout(600)
def test_the_readme_dg_launch_commands_run_with_settings_from_dotenv(
    scratch_database_url: str, tmp_path: Path
) -> None:
    """Settings only in `.env` (no exports); each README command succeeds without warnings."""
    from alembic import command

    from analytics_pipelines_tests.conftest import alembic_config

    commands = readme_dg_commands()
    assert [words[:3] for words in commands] == [["dg", "launch", "--assets"]] * 2
    command.upgrade(alembic_config(scratch_database_url), "head")
    storage = tmp_path / "storage"
    storage.mkdir()
    (tmp_path / ".env").write_text(
        f"DATABASE_URL={scratch_database_url}\nSTORAGE_URL=file://{storage}\n"
    )
    env = shell_env(tmp_path)
    demo = run(
        [str(BIN / "analytics-pipelines"), "demo", "generate", "--rows", "600", "--days", "3"],
        env,
        tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    for words in commands:
        result = run(
            [str(BIN / "dg"), *words[1:], "--target-path", str(PROJECT_ROOT)],
            env,
            tmp_path,
            timeout=300,
        )
        assert result.returncode == 0, f"{' '.join(words)}:\n{result.stderr[-4000:]}"
        assert "RUN_SUCCESS" in result.stderr
        for noise in ("Warning:", "Traceback"):
            assert noise not in result.stderr, f"{' '.join(words)}:\n{result.stderr[-4000:]}"

    engine = sa.create_engine(scratch_database_url)
    with engine.connect() as conn:
        clean_rows = conn.execute(sa.text("SELECT count(*) FROM clean.orders")).scalar_one()
        kpi_rows = conn.execute(
            sa.select(sa.func.count())
            .select_from(kpi_values)
            .where(kpi_values.c.kpi == "gross_revenue")
        ).scalar_one()
    engine.dispose()
    assert clean_rows > 0
    assert kpi_rows > 0  # the partition's values are stored
