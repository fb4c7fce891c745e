"""The clean stage: raw text rows → typed, validated, de-duplicated `clean.<source>` + quarantine.

One rule engine (`rules`) decides every row, whether the version is cleaned beside its raw
COPY (`FusedClean`, the loader's `clean_seam.CleanBesideLoad`) or after it (`clean_pending`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analytics_pipelines.lib.lazy import lazy_names

if TYPE_CHECKING:
    from analytics_pipelines.lib.clean.fused import FusedClean
    from analytics_pipelines.lib.clean.process import CleanReport, clean_pending
    from analytics_pipelines.lib.clean.schema import SchemaDriftError, ensure_clean_table

# The engine pulls in polars and pyarrow: imported when one of its names is first used, so that
# a module of the package (`quality`, `reference_changes`) can be imported without it.
_LAZY = {
    "FusedClean": "fused",
    "CleanReport": "process",
    "clean_pending": "process",
    "SchemaDriftError": "schema",
    "ensure_clean_table": "schema",
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = ["CleanReport", "FusedClean", "SchemaDriftError", "clean_pending", "ensure_clean_table"]
