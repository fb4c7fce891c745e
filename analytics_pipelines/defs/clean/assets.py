"""`clean/<source>` assets: typed, validated, de-duplicated tables built from the catalog."""

from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean import SchemaDriftError, clean_pending
from analytics_pipelines.lib.ingest.config import definitions_catalog
from analytics_pipelines.lib.logging import bound_context, run_context_fields
from analytics_pipelines.lib.tables import clean_table
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource

PREVIEW_ROWS = 5


def _preview(warehouse: Warehouse, source: SourceSpec) -> dg.MetadataValue:
    table = clean_table(source)
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(table).order_by(table.c._cleaned_at.desc()).limit(PREVIEW_ROWS)
        ).all()
    header = [c.name for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def build_clean_asset(source: SourceSpec) -> dg.AssetsDefinition:
    """The clean asset of one source; it runs in the same sensor-requested run as `raw/<source>`."""
    freshness = (
        dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=source.freshness_hours))
        if source.freshness_hours is not None
        else None
    )

    @dg.asset(
        key=["clean", source.name],
        deps=[dg.AssetKey(["raw", source.name])],
        group_name=source.value_chain,
        kinds={"postgres"},
        description=(
            f"{source.description or source.name}: typed, validated and de-duplicated;"
            " rows that break a rule wait in quarantine with their reasons."
        ),
        freshness_policy=freshness,
        metadata={"table": f"clean.{source.name}"},
    )
    def _clean(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        with bound_context(**run_context_fields(context)):
            db = warehouse.get_warehouse()
            try:
                report = clean_pending(db, source)
            except SchemaDriftError as error:
                raise dg.Failure(description=str(error)) from None
            for change in report.schema_changes:
                context.log.info(f"clean.{source.name}: {change}")
            return dg.MaterializeResult(
                metadata={
                    "files": report.files,
                    "raw_rows": report.raw_rows,
                    "clean_rows": report.clean_rows,
                    "quarantined_rows": report.quarantined_rows,
                    "replaced_rows": report.replaced_rows,
                    "replaced_in_clean": report.displaced_rows,
                    "removed_superseded_rows": report.removed_rows,
                    "dagster/row_count": report.clean_rows,
                    "preview": _preview(db, source),
                }
            )

    return _clean


@dg.definitions
def clean_assets() -> dg.Definitions:
    return dg.Definitions(
        assets=[build_clean_asset(s) for s in definitions_catalog().sources.values()]
    )
