"""Data-quality checks on every `clean/<source>`: reconciliation, key uniqueness, quarantine rate."""

import dagster as dg

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean.quality import duplicate_keys, reconcile
from analytics_pipelines.lib.ingest.config import definitions_catalog
from analytics_pipelines.lib.kpi.gate import QUARANTINE_RATE_CHECK, quarantine_verdict
from analytics_pipelines.resources import WarehouseResource

RECONCILIATION = "reconciliation"
PRIMARY_KEY_UNIQUE = "primary_key_unique"
QUARANTINE_RATE = QUARANTINE_RATE_CHECK
MAX_PROBLEMS_SHOWN = 20


def build_clean_checks(source: SourceSpec) -> list[dg.AssetChecksDefinition]:
    asset = dg.AssetKey(["clean", source.name])

    @dg.asset_check(
        asset=asset,
        name=RECONCILIATION,
        description=(
            "Every current file version (and every cleaned superseded one):"
            " raw rows = clean + quarantined + replaced."
        ),
    )
    def reconciliation(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        result = reconcile(warehouse.get_warehouse(), source)
        return dg.AssetCheckResult(
            passed=not result.problems,
            description=(
                "; ".join(result.problems[:MAX_PROBLEMS_SHOWN])
                if result.problems
                else f"{result.files} file versions reconcile"
            ),
            metadata={
                "files": result.files,
                "raw_rows": result.raw_rows,
                "clean_rows": result.clean_rows,
                "quarantined_rows": result.quarantined_rows,
                "replaced_rows": result.replaced_rows,
                "problems": len(result.problems),
            },
        )

    @dg.asset_check(
        asset=asset,
        name=PRIMARY_KEY_UNIQUE,
        description=f"No two clean rows share ({', '.join(source.primary_key)}); none is empty.",
    )
    def primary_key_unique(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        duplicated, empty = duplicate_keys(warehouse.get_warehouse(), source)
        return dg.AssetCheckResult(
            passed=duplicated == 0 and empty == 0,
            metadata={"duplicated_keys": duplicated, "empty_keys": empty},
        )

    @dg.asset_check(
        asset=asset,
        name=QUARANTINE_RATE,
        blocking=True,
        description=(
            f"At most {source.max_quarantine_rate:.1%} of the latest cleaned rows are quarantined;"
            " KPIs do not refresh from this source while it fails."
        ),
    )
    def quarantine_rate(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        # The same verdict the KPI sensor, schedules and assets obey (lib/kpi/gate.py).
        verdict = quarantine_verdict(warehouse.get_warehouse(), source)
        measured = verdict.measured
        return dg.AssetCheckResult(
            passed=verdict.passed,
            description=verdict.summary,
            metadata={
                "rate": measured.rate,
                "threshold": verdict.threshold,
                "rows": measured.rows,
                "quarantined": measured.quarantined,
                "file_ids": str(measured.file_ids),
            },
        )

    return [reconciliation, primary_key_unique, quarantine_rate]


@dg.definitions
def clean_checks() -> dg.Definitions:
    return dg.Definitions(
        asset_checks=[
            check for s in definitions_catalog().sources.values() for check in build_clean_checks(s)
        ]
    )
