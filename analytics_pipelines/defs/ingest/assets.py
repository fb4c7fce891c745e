"""`raw/raw_<source>` assets: load new file versions from the landing prefix into `raw.<source>`."""

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from analytics_pipelines.defs.ingest.sensors import ingest_job_name, raw_asset_key
from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.ingest import KeysRefused
from analytics_pipelines.lib.ingest.config import definitions_catalog
from analytics_pipelines.lib.ingest.file_status import failures_summary
from analytics_pipelines.lib.logging import bound_context, run_context_fields
from analytics_pipelines.lib.table_rows import TableRows, table_rows
from analytics_pipelines.lib.tables import RAW_SCHEMA
from analytics_pipelines.resources import ObjectStoreResource, WarehouseResource

if TYPE_CHECKING:
    from analytics_pipelines.lib.ingest import FileOutcome, LoadReport

FILES_READABLE = "files_readable"
PREVIEW_ROWS = 5


class RawLoadConfig(dg.Config):
    keys: list[str] = Field(
        default_factory=list,
        description="Object keys to load (set by the landing sensor); empty = everything pending.",
    )


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows loaded)"
    names = list(rows[0])

    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")[:60]

    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(r[n]) for n in names) + " |" for r in rows]
    return "\n".join(lines)


def _failures_table(failures: "list[FileOutcome]") -> str:
    lines = ["| file | ledger id | reason |", "|---|---|---|"]
    lines += [f"| {f.key} | {f.file_id} | {(f.error or '').replace('|', '/')} |" for f in failures]
    return "\n".join(lines)


def report_metadata(
    report: "LoadReport", preview: list[dict[str, Any]], table: TableRows
) -> dict[str, Any]:
    return {
        "files_loaded": len(report.with_status("loaded")),
        "files_duplicate": len(report.with_status("duplicate")),
        "files_failed": len(report.failures),
        "files_superseded": len(report.superseded_file_ids),
        # Committed by an earlier run of these keys that stopped before cleaning (no
        # materialisation reported them): counted here, so the history accounts for them.
        "files_loaded_earlier": len(report.loaded_earlier),
        "rows_loaded_earlier": dg.MetadataValue.int(sum(o.rows for o in report.loaded_earlier)),
        "loaded_earlier_file_ids": dg.MetadataValue.json(
            [o.file_id for o in report.loaded_earlier]
        ),
        "rows_loaded": dg.MetadataValue.int(report.rows),
        # "Row count" is the table's, as Dagster means it; what this run added is beside it.
        **table.metadata(),
        "rows_this_run": dg.MetadataValue.int(report.rows),
        "loaded_file_ids": dg.MetadataValue.json(report.loaded_file_ids),
        "cleaned_while_loading_file_ids": dg.MetadataValue.json(report.cleaned_file_ids),
        "superseded_file_ids": dg.MetadataValue.json(report.superseded_file_ids),
        "extra_columns": dg.MetadataValue.json(report.extra_columns),
        "failures": dg.MetadataValue.md(
            _failures_table(report.failures) if report.failures else "none"
        ),
        "preview": dg.MetadataValue.md(_markdown_table(preview)),
    }


def _assets_of_run(context: dg.AssetExecutionContext, source: str) -> AbstractSet[dg.AssetKey]:
    """Every asset this run materialises (`selected_asset_keys` holds only this step's).

    A run of a selection names its assets (`DagsterRun.asset_selection`). A run of a whole job
    names none (None; empty from `execute_in_process`), and Dagster has no public API that
    lists a job's assets. The one whole job that runs raw/raw_<source> is ours, `ingest_<source>`:
    raw/raw_<source> and what directly depends on it, which every catalog source has as
    clean/<source> (sensors.build_ingest_job). Any other job runs only this step as far as
    this asset can tell, so it loads without the fast clean path.
    """
    selection = context.run.asset_selection
    if selection:
        return selection
    if context.job_name == ingest_job_name(source):
        return {context.asset_key, dg.AssetKey(["clean", source])}
    return {context.asset_key}


def build_raw_asset(source: SourceSpec) -> dg.AssetsDefinition:
    key = raw_asset_key(source.name)
    description = (source.description or f"Raw deliveries of {source.name}.") + (
        f" Every received column as text, with file id and line, from `{source.landing_prefix}`."
    )

    @dg.asset(
        key=key,
        group_name=source.value_chain,
        kinds={"postgres", "s3"},
        description=description,
        # Pool: bounds concurrent loads across sources; one source's loads are serialised by
        # an advisory lock in the loader itself.
        pool="ingest",
        metadata={
            "dagster/table_name": f"raw.{source.name}",
            "landing_prefix": source.landing_prefix,
            "format": source.format,
        },
        check_specs=[
            dg.AssetCheckSpec(
                FILES_READABLE,
                asset=key,
                description="Every file this run picked up could be read; failed files are listed with their reason.",
            )
        ],
    )
    def raw_asset(
        context: dg.AssetExecutionContext,
        config: RawLoadConfig,
        warehouse: WarehouseResource,
        object_store: ObjectStoreResource,
    ) -> dg.MaterializeResult:
        # When clean/<source> runs too, new files are cleaned from the same bytes while they
        # load; the clean step then only handles what that fast path left to it.
        # Imported here: the loader and the clean engine bring polars and pyarrow, which loading
        # the definitions (every `dg` command, every run's start) does not need.
        from analytics_pipelines.lib.clean import FusedClean
        from analytics_pipelines.lib.ingest import load_pending, preview_rows

        cleaning = dg.AssetKey(["clean", source.name]) in _assets_of_run(context, source.name)
        with bound_context(**run_context_fields(context), source=source.name):
            try:
                report = load_pending(
                    source,
                    object_store.get_store(),
                    warehouse.get_warehouse(),
                    keys=config.keys or None,
                    run_id=context.run.run_id,
                    clean_while_loading=FusedClean if cleaning else None,
                )
            except KeysRefused as refused:
                # A hand-launched run naming another source's (or lake/) keys: refused whole.
                raise dg.Failure(
                    description=str(refused),
                    metadata={"landing_prefix": source.landing_prefix},
                    allow_retries=False,
                ) from None
            preview = preview_rows(
                warehouse.get_warehouse(), source, report.loaded_file_ids, PREVIEW_ROWS
            )
            table = table_rows(warehouse.get_warehouse(), RAW_SCHEMA, source.name)
        for failure in report.failures:
            context.log.error(f"file {failure.key} failed: {failure.error}")
        for earlier in report.loaded_earlier:
            context.log.info(
                f"file {earlier.key} was loaded by an earlier run ({earlier.rows} row(s)) "
                "that stopped before cleaning it"
            )
        context.log.info(
            f"{source.name}: {len(report.loaded_file_ids)} file(s) loaded, {report.rows} row(s), "
            f"{len(report.with_status('duplicate'))} duplicate(s), {len(report.failures)} failed"
        )
        return dg.MaterializeResult(
            metadata=report_metadata(report, preview, table),
            check_results=[
                dg.AssetCheckResult(
                    check_name=FILES_READABLE,
                    passed=not report.failures,
                    severity=dg.AssetCheckSeverity.ERROR,
                    # The reason itself, not only a count: the UI shows this text in the
                    # check's row, while metadata hides behind a toggle.
                    description=(
                        failures_summary(report.failures, source.name)
                        if report.failures
                        else "every file could be read"
                    ),
                    metadata={
                        "failed_files": dg.MetadataValue.md(_failures_table(report.failures))
                        if report.failures
                        else dg.MetadataValue.text("none"),
                    },
                )
            ],
        )

    return raw_asset


@dg.definitions
def raw_assets() -> dg.Definitions:
    catalog = definitions_catalog()
    return dg.Definitions(assets=[build_raw_asset(s) for s in catalog.sources.values()])
