"""A KPI resolved against its catalog: parsed expressions, its source and the KPIs it combines."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from analytics_pipelines.lib.catalog import Catalog, CatalogError, KpiSpec, SourceSpec
from analytics_pipelines.lib.kpi.expressions import (
    And,
    ColumnRef,
    Comparison,
    Condition,
    Constant,
    Derived,
    Filter,
    InList,
    Measure,
    Not,
    Or,
    closest_name,
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
        known = ", ".join(sorted(catalog.kpis)) or "none"
        raise CatalogError([f"kpi {name}: not in the catalog (known: {known})"])
    where = f"{catalog.origins.get(name, catalog.root)}: kpi {name}"
    if name in RESERVED_KPI_NAMES:
        raise CatalogError([f"{where}: name: {name!r} is reserved for the KPI values table"])
    source = catalog.sources.get(kpi.source)
    if source is None:
        raise CatalogError([f"{where}: source: unknown source {kpi.source!r}"])
    from analytics_pipelines.lib.kpi import lookups  # it builds on this module's names

    if source.kind == "reference" and kpi.measure is not None:
        raise CatalogError([f"{where}: source: {reference_kpi_problem(source.name)}"])
    types = source.column_types
    missing = [d for d in kpi.dimensions if lookups.split_dimension(d) is None and d not in types]
    if missing:
        raise CatalogError(
            [
                f"{where}: dimensions: not columns of source {source.name}: "
                + ", ".join(f"{d}{did_you_mean(d, types)}" for d in missing)
            ]
        )
    problems = [
        f"lookups: {problem}" for problem in lookups.lookup_problems(source, catalog.sources)
    ] + [
        f"dimensions: {problem}"
        for problem in lookups.dimension_problems(kpi, source, catalog.sources)
    ]
    if problems:
        raise CatalogError([f"{where}: {problem}" for problem in problems])
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
    condition = parse_filter(kpi.filter, types) if kpi.filter is not None else None
    if condition is not None:
        unknown = list(values_outside_allowed(condition.root, source))
        if unknown:
            raise CatalogError([f"{where}: filter: {problem}" for problem in unknown])
    return KpiPlan(
        kpi=kpi,
        source=source,
        measure=parse_measure(kpi.measure, types) if kpi.measure is not None else None,
        filter=condition,
        derived=derived,
        references=lookups.references_of(kpi, source, catalog.sources),
    )


def reference_kpi_problem(source: str) -> str:
    return (
        f"{source} is a reference source (no event time, so no periods); a KPI counts the "
        f"rows of an events source and may look {source} up as a dimension"
    )


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `names`, or nothing."""
    close = closest_name(name, list(names))
    return f" (did you mean {close!r}?)" if close else ""


def values_outside_allowed(node: Condition, source: SourceSpec) -> Iterator[str]:
    """Literals compared with a column that declares `allowed_values` but are not among them.

    Such a filter can never match a clean row (the clean layer quarantines other values), so
    `status = 'canceled'` where only 'cancelled' exists is a typo that would make the KPI 0.
    """
    pairs: list[tuple[ColumnRef, Constant]] = []
    match node:
        case Comparison(op="=" | "!=", left=ColumnRef() as column, right=Constant() as value):
            pairs.append((column, value))
        case Comparison(op="=" | "!=", left=Constant() as value, right=ColumnRef() as column):
            pairs.append((column, value))
        case InList(column=column, values=values):
            pairs.extend((column, value) for value in values)
        case And(operands=operands) | Or(operands=operands):
            for operand in operands:
                yield from values_outside_allowed(operand, source)
        case Not(operand=operand):
            yield from values_outside_allowed(operand, source)
    for column, value in pairs:
        allowed = source.column(column.name).allowed_values
        if allowed is not None and isinstance(value.value, str) and value.value not in allowed:
            yield (
                f"{value.value!r} is not an allowed value of {column.name} "
                f"({', '.join(allowed)}){did_you_mean(value.value, allowed)}"
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
