"""The clean stage: raw text rows → typed, validated, de-duplicated `clean.<source>` + quarantine.

One rule engine (`rules`) decides every row, whether the version is cleaned beside its raw
COPY (`FusedClean`, the loader's `clean_seam.CleanBesideLoad`) or after it (`clean_pending`).
"""

from analytics_pipelines.lib.clean.fused import FusedClean
from analytics_pipelines.lib.clean.process import CleanReport, clean_pending
from analytics_pipelines.lib.clean.schema import SchemaDriftError, ensure_clean_table

__all__ = ["CleanReport", "FusedClean", "SchemaDriftError", "clean_pending", "ensure_clean_table"]
