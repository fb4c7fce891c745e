"""One `analytics-pipelines dev` per data folder: a second start names the running one and leaves it be.

The lock is an advisory `flock` on `.data/dev.lock`, held for the life of the process. The
kernel drops it when the process ends however it ends, so a file left behind by a crash never
blocks the next start. The file's text says who holds the lock (PID, UI address, database), so
the refusal can name the running stack.

While the stack runs, `.data/dev-stack.json` holds the settings it runs with (DATABASE_URL,
STORAGE_URL, DAGSTER_HOME, ...), so that a command in a second shell can use the stack without
exports. The file is removed on exit; one left by a crash is ignored, because only a held lock
makes it current (`running_stack_environment`).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO

LOCK_NAME = "dev.lock"
STATE_NAME = "dev-stack.json"


class DevAlreadyRunning(RuntimeError):
    """Another `analytics-pipelines dev` holds the lock of this data folder."""


class DevLock:
    """Held while this process runs the dev stack of `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self.state_path = data_dir / STATE_NAME
        self._handle: IO[str] | None = None
        self._holder: dict[str, object] = {}

    def acquire(self, ui_url: str, database: str) -> None:
        """Take the lock before anything is started, or raise DevAlreadyRunning naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read()
            handle.close()
            raise DevAlreadyRunning(_refusal(self.path, holder)) from None
        self._handle = handle
        self._holder = {"pid": os.getpid(), "ui": ui_url, "database": database}
        self._write()

    def update(self, database: str) -> None:
        """Record the database once it is known (a local server's URL is known after its start)."""
        self._holder["database"] = database
        self._write()

    def _write(self) -> None:
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps(self._holder))
        self._handle.flush()

    def publish(self, environment: dict[str, str]) -> None:
        """Write the stack's settings for second shells; readable by the owner only (it may hold a password)."""
        if self._handle is None:
            return
        staged = self.state_path.with_suffix(".tmp")
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump({"pid": os.getpid(), "environment": environment}, handle, indent=2)
        staged.replace(self.state_path)  # atomic: a reader never sees half a file

    def release(self) -> None:
        if self._handle is not None:
            # The state file first: while it exists without the lock it is stale anyway.
            self.state_path.unlink(missing_ok=True)
            self._handle.close()  # closing the file drops the flock
            self._handle = None


def running_stack_environment(data_dir: Path) -> dict[str, str]:
    """The settings of the dev stack running for `data_dir`, or {} when none runs.

    Current only while some process holds the lock and the state file names that process:
    a file left by a killed stack, or one of a stack since restarted, is ignored.
    """
    try:
        state = json.loads((data_dir / STATE_NAME).read_text(encoding="utf-8"))
        with (data_dir / LOCK_NAME).open("r", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = json.loads(handle.read() or "{}")
            else:
                return {}  # nobody holds the lock: no stack runs
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("pid") != holder.get("pid"):
        return {}
    environment = state.get("environment")
    if not isinstance(environment, dict):
        return {}
    return {str(name): str(value) for name, value in environment.items()}


def _refusal(path: Path, holder: str) -> str:
    try:
        who = json.loads(holder)
    except ValueError:
        who = {}
    pid = who.get("pid", "unknown")
    ui = who.get("ui", "unknown")
    database = who.get("database", "unknown")
    return (
        f"analytics-pipelines dev is already running for this folder (PID {pid}, UI {ui}, "
        f"database {database}); it was left untouched. Use that one (commands in this folder "
        f"already do, with nothing exported), or stop it with Ctrl-C "
        f"in its terminal (or `kill {pid}`) first. Lock: {path}"
    )
