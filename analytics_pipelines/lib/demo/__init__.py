"""Realistic, deterministic demo landing files for the demo catalog's sources."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from analytics_pipelines.lib.demo.defaults import DEFAULT_START, Shares
from analytics_pipelines.lib.demo.errors import DemoError

if TYPE_CHECKING:
    from analytics_pipelines.lib.demo.generate import (
        FileStats,
        SourceSummary,
        demo_source_spec,
        generate_demo,
        generate_orders_csv,
        generate_source,
    )

_GENERATE = {
    "FileStats",
    "SourceSummary",
    "demo_source_spec",
    "generate_demo",
    "generate_orders_csv",
    "generate_source",
}


def __getattr__(name: str) -> Any:
    # The generator pulls in polars and numpy: imported when first used, not by the CLI's parser.
    if name in _GENERATE:
        return getattr(import_module(f"{__name__}.generate"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_START",
    "DemoError",
    "FileStats",
    "Shares",
    "SourceSummary",
    "demo_source_spec",
    "generate_demo",
    "generate_orders_csv",
    "generate_source",
]
