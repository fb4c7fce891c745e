"""A second `analytics-pipelines dev` on the same folder refuses, names the first, and touches nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analytics_pipelines.lib.dev_lock import DevAlreadyRunning, DevLock

HOLDER = """
import sys, time
from pathlib import Path
from analytics_pipelines.lib.dev_lock import DevLock
lock = DevLock(Path(".data"))
lock.acquire(ui_url="http://localhost:3999", database="postgresql://dev:***@localhost:54329/dev")
print("held", flush=True)
time.sleep(120)
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORAGE_URL")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return env


def test_a_second_dev_start_is_refused_before_anything_starts(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=tmp_path,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "analytics_pipelines.cli", "dev", "--no-ui"],
            cwd=tmp_path,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert f"already running for this folder (PID {holder.pid}" in second.stderr
        assert "UI http://localhost:3999" in second.stderr
        assert "postgresql://dev:***@localhost:54329/dev" in second.stderr
        # Refused before a PostgreSQL server was created or anything was migrated.
        assert not (tmp_path / ".data" / "postgres").exists()
        assert not (tmp_path / ".data" / "storage").exists()
        assert time.monotonic() - started < 60
        assert holder.poll() is None  # the first one is untouched
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_file_left_by_a_crash_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "dev.lock").write_text('{"pid": 999999, "ui": "http://localhost:3000"}')
    lock = DevLock(tmp_path)
    lock.acquire(ui_url="http://localhost:3000", database="local PostgreSQL on port 54329")
    try:
        with pytest.raises(DevAlreadyRunning, match=f"PID {os.getpid()}"):
            DevLock(tmp_path).acquire(ui_url="http://localhost:3001", database="x")
    finally:
        lock.release()
    # Released: the next start gets it.
    again = DevLock(tmp_path)
    again.acquire(ui_url="http://localhost:3000", database="x")
    again.release()
