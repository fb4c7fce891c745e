"""Realistic, deterministic demo landing files for the demo catalog's sources."""

from analytics_pipelines.lib.demo.errors import DemoError
from analytics_pipelines.lib.demo.generate import (
    DEFAULT_START,
    FileStats,
    Shares,
    SourceSummary,
    demo_source_spec,
    generate_demo,
    generate_orders_csv,
    generate_source,
)

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
