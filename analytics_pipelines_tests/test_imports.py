"""`lib/ingest` and `lib/clean` meet only at the seam (`lib/ingest/clean_seam.py`).

Ingest imports nothing of clean, clean imports nothing of ingest (the seam's protocol is
structural), and the clean stage's implementation of it has the protocol's methods.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import analytics_pipelines
from analytics_pipelines.lib.clean import FusedClean
from analytics_pipelines.lib.ingest.clean_seam import CleanBesideLoad

PACKAGE_ROOT = Path(analytics_pipelines.__file__).resolve().parent
PACKAGES = {"ingest": "clean", "clean": "ingest"}


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_package_imports_nothing_of_the_other(package: str) -> None:
    other = f"analytics_pipelines.lib.{PACKAGES[package]}"
    crossing = {
        path.name: sorted(
            m for m in _imported_modules(path) if m == other or m.startswith(other + ".")
        )
        for path in sorted((PACKAGE_ROOT / "lib" / package).glob("*.py"))
    }
    assert {name: modules for name, modules in crossing.items() if modules} == {}


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("analytics_pipelines.lib.ingest.loader", "analytics_pipelines.lib.clean"),
        ("analytics_pipelines.lib.clean", "analytics_pipelines.lib.ingest"),
    ],
)
def test_importing_one_side_loads_nothing_of_the_other(module: str, forbidden: str) -> None:
    # A fresh interpreter: what the import itself pulls in, not what this test session did.
    code = (
        f"import sys, {module}\n"
        f"print(sorted(m for m in sys.modules if m == {forbidden!r}"
        f" or m.startswith({forbidden!r} + '.')))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert output.strip() == "[]"


def test_the_clean_stage_implements_the_seam_protocol() -> None:
    expected = {
        name: inspect.signature(member)
        for name, member in vars(CleanBesideLoad).items()
        if callable(member) and not name.startswith("_")
    }
    assert set(expected) == {"start", "consume", "finish", "commit", "abort"}
    for name, signature in expected.items():
        assert list(inspect.signature(getattr(FusedClean, name)).parameters) == list(
            signature.parameters
        ), name
