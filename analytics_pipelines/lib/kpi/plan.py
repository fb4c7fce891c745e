"""A KPI resolved against its catalog: parsed expressions, its source and the KPIs it combines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from analytics_pipelines.lib.catalog import Catalog, CatalogError, KpiSpec, SourceSpec
from analytics_pipelines.lib.kpi.expressions import (
    Derived,
    Filter,
    Measure,
    parse_derived,
    parse_filter,
    parse_measure,
)
from analytics_pipelines.lib.kpi.validation import (
    did_you_mean,
    entity_columns,
    kpi_problems,
    references_of,
)

__all__ = ["KpiPlan", "entity_columns", "kpi_sources", "plan_catalog", "plan_kpi"]


@dataclass(frozen=True)
class KpiPlan:
    kpi: KpiSpec
    source: SourceSpec | None  # the source a measure aggregates; None for a derived KPI
    measure: Measure | None
    filter: Filter | None
    derived: Derived | None
    # Reference sources the dimensions look up, by lookup name (lib/kpi/lookups).
    references: dict[str, SourceSpec] = field(default_factory=dict)

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
        raise CatalogError(
            [
                f"kpi {name}: not in the catalog{did_you_mean(name, catalog.kpis)} "
                f"(known: {', '.join(sorted(catalog.kpis)) or 'none'})"
            ]
        )
    where = f"{catalog.origins.get(name, catalog.root)}: kpi {name}"
    problems = kpi_problems(kpi, catalog.sources, catalog.kpis)
    if problems:
        raise CatalogError([f"{where}: {problem}" for problem in problems])
    if kpi.derived is not None:
        return KpiPlan(
            kpi=kpi,
            source=None,
            measure=None,
            filter=None,
            derived=parse_derived(kpi.derived, [n for n in catalog.kpis if n != name]),
        )
    assert kpi.source is not None and kpi.measure is not None
    source = catalog.sources[kpi.source]
    types = source.column_types
    return KpiPlan(
        kpi=kpi,
        source=source,
        measure=parse_measure(kpi.measure, types),
        filter=parse_filter(kpi.filter, types) if kpi.filter is not None else None,
        derived=None,
        references=references_of(kpi, source, catalog.sources),
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


def kpi_sources(plans: Mapping[str, KpiPlan], name: str) -> list[SourceSpec]:
    """Every source a KPI's values come from: its own, the references its dimensions look up
    and, transitively, its inputs' sources."""
    found: dict[str, SourceSpec] = {}
    pending, seen = [name], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        plan = plans[current]
        if plan.source is not None:
            found[plan.source.name] = plan.source
        found.update({reference.name: reference for reference in plan.references.values()})
        pending.extend(plan.inputs)
    return [found[s] for s in sorted(found)]
