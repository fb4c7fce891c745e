"""The clean stage: raw text rows → typed, validated, de-duplicated `clean.<source>` + quarantine."""

from analytics_pipelines.lib.clean.process import CleanReport, clean_pending
from analytics_pipelines.lib.clean.schema import SchemaDriftError, ensure_clean_table

__all__ = ["CleanReport", "SchemaDriftError", "clean_pending", "ensure_clean_table"]
