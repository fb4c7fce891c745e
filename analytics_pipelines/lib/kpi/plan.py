"""A KPI resolved against its catalog: parsed expressions, its source and the KPIs it combines."""

from __future__ import annotations

from dataclasses import dataclass

from analytics_pipelines.lib.catalog import Catalog, CatalogError, KpiSpec, SourceSpec
from analytics_pipelines.lib.kpi.expressions import (
    Derived,
    Filter,
    Measure,
    parse_derived,
    parse_filter,
    parse_measure,
)

# `kpi.kpi_values` lives next to the per-KPI views: a KPI of that name would shadow the table.
RESERVED_KPI_NAMES = frozenset({"kpi_values"})


@dataclass(frozen=True)
class KpiPlan:
    kpi: KpiSpec
    source: SourceSpec
    measure: Measure | None
    filter: Filter | None
    derived: Derived | None

    @property
    def name(self) -> str:
        return self.kpi.name

    @property
    def inputs(self) -> list[str]:
        """KPIs a derived KPI is computed from (sorted; empty for a measure KPI)."""
        return sorted(self.derived.references) if self.derived else []


def plan_kpi(catalog: Catalog, name: str) -> KpiPlan:
    """Resolve one KPI; raise CatalogError when it cannot be computed as declared."""
    kpi = catalog.kpis.get(name)
    if kpi is None:
        known = ", ".join(sorted(catalog.kpis)) or "none"
        raise CatalogError([f"kpi {name}: not in the catalog (known: {known})"])
    where = f"{catalog.origins.get(name, catalog.root)}: kpi {name}"
    if name in RESERVED_KPI_NAMES:
        raise CatalogError([f"{where}: name: {name!r} is reserved for the KPI values table"])
    source = catalog.sources.get(kpi.source)
    if source is None:
        raise CatalogError([f"{where}: source: unknown source {kpi.source!r}"])
    types = source.column_types
    missing = [d for d in kpi.dimensions if d not in types]
    if missing:
        raise CatalogError(
            [f"{where}: dimensions: not columns of source {source.name}: {', '.join(missing)}"]
        )
    derived = None
    if kpi.derived is not None:
        derived = parse_derived(kpi.derived, [n for n in catalog.kpis if n != name])
        for ref in sorted(derived.references):
            other = catalog.kpis[ref]
            # Periods are joined by their start instant: inputs in another zone would not line up.
            if other.timezone != kpi.timezone:
                raise CatalogError(
                    [
                        f"{where}: derived: {ref!r} is computed in {other.timezone}, "
                        f"this KPI in {kpi.timezone}; use the same time zone"
                    ]
                )
    return KpiPlan(
        kpi=kpi,
        source=source,
        measure=parse_measure(kpi.measure, types) if kpi.measure is not None else None,
        filter=parse_filter(kpi.filter, types) if kpi.filter is not None else None,
        derived=derived,
    )


def plan_catalog(catalog: Catalog) -> dict[str, KpiPlan]:
    """Plans of every KPI; every problem is reported at once."""
    plans: dict[str, KpiPlan] = {}
    problems: list[str] = []
    for name in sorted(catalog.kpis):
        try:
            plans[name] = plan_kpi(catalog, name)
        except CatalogError as error:
            problems.extend(error.problems)
        except ValueError as error:  # ExpressionError: the loader reports these with context
            problems.append(f"kpi {name}: {error}")
    if problems:
        raise CatalogError(problems)
    return plans
