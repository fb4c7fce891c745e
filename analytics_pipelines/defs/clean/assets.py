"""`clean/<source>` assets: typed, validated, de-duplicated tables built from the catalog."""

from datetime import timedelta
from typing import TYPE_CHECKING

import dagster as dg
import sqlalchemy as sa

from analytics_pipelines.defs.ingest.sensors import raw_asset_key
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest.config import definitions_catalog
from analytics_pipelines.lib.logging import bound_context, run_context_fields
from analytics_pipelines.lib.table_rows import table_rows
from analytics_pipelines.lib.tables import CLEAN_SCHEMA, clean_table, ledger
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines.resources import WarehouseResource

if TYPE_CHECKING:
    from analytics_pipelines.lib.clean.reference_changes import LookupUses

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


def _cleaned_while_loading(warehouse: Warehouse, source: SourceSpec, run_id: str) -> list[int]:
    """[files, raw, clean, quarantined, replaced] of this run's files cleaned by raw/raw_<source>."""
    with warehouse.connect() as conn:
        row = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(ledger.c.row_count), 0),
                sa.func.coalesce(sa.func.sum(ledger.c.clean_rows), 0),
                sa.func.coalesce(sa.func.sum(ledger.c.quarantined_rows), 0),
                sa.func.coalesce(sa.func.sum(ledger.c.replaced_rows), 0),
            ).where(
                ledger.c.source == source.name,
                ledger.c.run_id == run_id,
                ledger.c.status == "loaded",
                ledger.c.cleaned_at.is_not(None),
            )
        ).one()
    return [int(v) for v in row]


def build_clean_asset(source: SourceSpec, lookups: "LookupUses" = ()) -> dg.AssetsDefinition:
    """The clean asset of one source; it runs in the same sensor-requested run as `raw/raw_<source>`."""
    freshness = (
        dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=source.freshness_hours))
        if source.freshness_hours is not None
        else None
    )

    @dg.asset(
        key=["clean", source.name],
        deps=[raw_asset_key(source.name)],
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
        # Imported here: the clean engine brings polars, which loading the definitions does not need.
        from analytics_pipelines.lib.clean import SchemaDriftError, clean_pending

        with bound_context(**run_context_fields(context)):
            db = warehouse.get_warehouse()
            fused = _cleaned_while_loading(db, source, context.run.run_id)
            try:
                report = clean_pending(db, source, lookups)
            except SchemaDriftError as error:
                raise dg.Failure(description=str(error)) from None
            for change in report.schema_changes:
                context.log.info(f"clean.{source.name}: {change}")
            for change in report.reference_changes:
                context.log.info(change)
            return dg.MaterializeResult(
                metadata={
                    "files": report.files + fused[0],
                    "files_cleaned_while_loading": fused[0],
                    "raw_rows": report.raw_rows + fused[1],
                    "clean_rows": report.clean_rows + fused[2],
                    "quarantined_rows": report.quarantined_rows + fused[3],
                    "replaced_rows": report.replaced_rows + fused[4],
                    "replaced_in_clean": report.displaced_rows,
                    "removed_superseded_rows": report.removed_rows,
                    # "Row count" is the table's, as Dagster means it; this run's rows beside it.
                    **table_rows(db, CLEAN_SCHEMA, source.name).metadata(),
                    "rows_this_run": report.clean_rows + fused[2],
                    "preview": _preview(db, source),
                    **(
                        {"reference_changes": "\n".join(report.reference_changes)}
                        if report.reference_changes
                        else {}
                    ),
                }
            )

    return _clean


@dg.definitions
def clean_assets() -> dg.Definitions:
    catalog = definitions_catalog()
    return dg.Definitions(
        assets=[build_clean_asset(s, catalog.lookups_of(s.name)) for s in catalog.sources.values()]
    )
