"""The declared catalog of sources and KPIs."""

from analytics_pipelines.lib.catalog.loader import (
    Catalog,
    CatalogError,
    load_catalog,
    load_catalog_cached,
)
from analytics_pipelines.lib.catalog.models import ColumnSpec, KpiSpec, ReaderOptions, SourceSpec

__all__ = [
    "Catalog",
    "CatalogError",
    "ColumnSpec",
    "KpiSpec",
    "ReaderOptions",
    "SourceSpec",
    "load_catalog",
    "load_catalog_cached",
]
