"""Modules of the two packages that import each other (ingest's loader runs the fused clean, the
clean side reads ingest's streams) import on their own, first, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import analytics_pipelines

PACKAGE_ROOT = Path(analytics_pipelines.__file__).resolve().parent


def _crossing_modules() -> list[str]:
    """Modules of lib/clean and lib/ingest that import from the other package."""
    root = PACKAGE_ROOT.parent
    found = []
    for package, other in (("clean", "ingest"), ("ingest", "clean")):
        for path in (PACKAGE_ROOT / "lib" / package).glob("*.py"):
            if f"analytics_pipelines.lib.{other}" in path.read_text():
                found.append(".".join(path.relative_to(root).with_suffix("").parts))
    return sorted(found)


def test_modules_that_cross_between_ingest_and_clean_import_first_on_their_own() -> None:
    modules = _crossing_modules()
    assert "analytics_pipelines.lib.ingest.loader" in modules
    # One interpreter per module, a few at a time: import order is what is under test.
    failures: dict[str, str] = {}
    for start in range(0, len(modules), 4):
        running = {
            name: subprocess.Popen(
                [sys.executable, "-c", f"import {name}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in modules[start : start + 4]
        }
        for name, process in running.items():
            _, error = process.communicate(timeout=120)
            if process.returncode != 0:
                failures[name] = error.strip().splitlines()[-1]
    assert failures == {}
