"""What a KPI declaration must satisfy against the rest of its catalog.

One set of rules, applied by the catalog loader (`catalog validate`, definitions), the sheet
importer and the planner. Each problem is a line that names the field first
(`dimensions: 'regoin' is not a column of source orders (did you mean 'region'?)`); callers add
where the KPI was declared. Needs no SQLAlchemy: the read-only CLI validates catalogs with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from analytics_pipelines.lib.catalog.models import KpiSpec, SourceSpec
from analytics_pipelines.lib.kpi.display import dimension_column
from analytics_pipelines.lib.kpi.expressions import (
    And,
    ColumnRef,
    Comparison,
    Condition,
    Constant,
    ExpressionError,
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

# `kpi.kpi_values` lives next to the per-KPI views: a KPI of that name would shadow the table;
# so do the forecast and anomaly tables and views of lib/ml (migration 0007).
RESERVED_KPI_NAMES = frozenset(
    {"kpi_values", "forecast_values", "anomaly_verdicts", "forecasts", "anomalies"}
)


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `names`, or nothing."""
    close = closest_name(name, list(names))
    return f" (did you mean {close!r}?)" if close else ""


def values_outside_allowed(expression: Filter | Measure, source: SourceSpec) -> Iterator[str]:
    """Literals compared with a column that declares `allowed_values` but are not among them, in
    a KPI's filter or in the `where` of any aggregate of its measure.

    Such a condition can never match a clean row (the clean layer quarantines other values), so
    `status = 'canceled'` where only 'cancelled' exists is a typo that would make the KPI 0.
    """
    conditions = [expression.root] if isinstance(expression, Filter) else expression.conditions
    for condition in conditions:
        yield from condition_values_outside_allowed(
            condition, lambda name: source.column(name).allowed_values
        )


def condition_values_outside_allowed(
    node: Condition, allowed_of: Callable[[str], list[str] | None]
) -> Iterator[str]:
    """The same check on one condition, `allowed_of` giving a column's allowed values (access
    filters name dimensions of many sources)."""
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
                yield from condition_values_outside_allowed(operand, allowed_of)
        case Not(operand=operand):
            yield from condition_values_outside_allowed(operand, allowed_of)
    for column, value in pairs:
        allowed = allowed_of(column.name)
        if allowed is not None and isinstance(value.value, str) and value.value not in allowed:
            yield (
                f"{value.value!r} is not an allowed value of {column.name} "
                f"({', '.join(allowed)}){did_you_mean(value.value, allowed)}"
            )


def kpi_problems(
    kpi: KpiSpec, sources: Mapping[str, SourceSpec], kpis: Mapping[str, KpiSpec]
) -> list[str]:
    """Everything wrong with `kpi` given the catalog's `sources` and `kpis` (empty: it is fine)."""
    problems: list[str] = []
    if kpi.name in RESERVED_KPI_NAMES:
        problems.append(f"name: {kpi.name!r} is reserved (it names the KPI values table)")
    if kpi.source is not None and kpi.source not in sources:
        problems.append(
            f"source: unknown source {kpi.source!r}{did_you_mean(kpi.source, sources)} "
            f"(known: {', '.join(sorted(sources)) or 'none'})"
        )
        return problems
    problems.extend(f"window: {problem}" for problem in window_problems(kpi))
    problems.extend(ml_problems(kpi))
    if kpi.derived is not None:
        problems.extend(_derived_problems(kpi, sources, kpis))
        return problems
    assert kpi.source is not None and kpi.measure is not None  # KpiSpec requires both
    source = sources[kpi.source]
    if source.kind == "reference":
        problems.append(f"source: {reference_kpi_problem(source.name)}")
        return problems
    types = source.column_types
    problems.extend(f"dimensions: {p}" for p in dimension_problems(kpi, source, sources))
    try:
        measure = parse_measure(kpi.measure, types)
    except ExpressionError as error:
        problems.append(f"measure: {error}")
    else:
        problems.extend(
            f"measure: {problem}" for problem in values_outside_allowed(measure, source)
        )
        if kpi.semi_additive is not None:
            problems.extend(
                f"semi_additive: {problem}"
                for problem in semi_additive_problems(kpi, source, measure)
            )
    if kpi.filter is not None:
        try:
            condition = parse_filter(kpi.filter, types)
        except ExpressionError as error:
            problems.append(f"filter: {error}")
        else:
            problems.extend(
                f"filter: {problem}" for problem in values_outside_allowed(condition, source)
            )
    return problems


def ml_problems(kpi: KpiSpec) -> Iterator[str]:
    """Forecasts and anomaly verdicts are made on a KPI's day values (lib/ml)."""
    for setting, spec in (("forecast", kpi.forecast), ("anomalies", kpi.anomalies)):
        if spec is not None and "day" not in kpi.grains:
            yield (
                f"{setting}: needs the day grain, the values it models (grains: "
                f"{', '.join(kpi.grains)}); add day to grains or remove {setting}"
            )


def window_problems(kpi: KpiSpec) -> Iterator[str]:
    """A window KPI aggregates clean rows per local day (lib/kpi/windows.py)."""
    if kpi.window is None:
        return
    if kpi.derived is not None:
        yield (
            "applies to a measure; a derived KPI combines stored values (declare the window on "
            "the KPIs it combines, with the same window)"
        )
    if kpi.semi_additive is not None:
        yield "cannot be combined with semi_additive (a stock has no rolling sum)"
    if kpi.grains != ["day"]:
        yield (
            f"a {kpi.window.describe()} KPI has one value per local day: declare grains: [day] "
            f"(got {', '.join(kpi.grains)}); a 4-week window is rolling: 28"
        )


def _derived_problems(
    kpi: KpiSpec, sources: Mapping[str, SourceSpec], kpis: Mapping[str, KpiSpec]
) -> Iterator[str]:
    """Inputs may come from any source; their values must line up cell for cell with this KPI's:
    same time zone (periods are joined by their start instant), every grain of this KPI, and
    every dimension of this KPI (an input broken down by more is read at this KPI's breakdowns)."""
    assert kpi.derived is not None
    try:
        derived = parse_derived(kpi.derived, [n for n in kpis if n != kpi.name])
    except ExpressionError as error:
        yield f"derived: {error}"
        return
    input_sources: set[str] = set()
    for ref in sorted(derived.references):
        other = kpis[ref]
        if other.derived is not None:
            yield f"derived: {ref!r} is itself derived; combine measure KPIs only"
            continue
        assert other.source is not None
        input_sources.add(other.source)
        if other.timezone != kpi.timezone:
            yield (
                f"derived: {ref!r} is computed in {other.timezone}, this KPI in {kpi.timezone}; "
                "inputs must use the same time zone"
            )
        calendar = (other.fiscal_year_start_month, other.week_start)
        if calendar != (kpi.fiscal_year_start_month, kpi.week_start):
            yield (
                f"derived: {ref!r} has fiscal_year_start_month {calendar[0]} and week_start "
                f"{calendar[1]}, this KPI {kpi.fiscal_year_start_month} and {kpi.week_start}; "
                "inputs must use the same calendar (their weeks, quarters and years line up)"
            )
        missing_grains = [g for g in kpi.grains if g not in other.grains]
        if missing_grains:
            yield f"derived: {ref!r} has no {', '.join(missing_grains)} values (grains: {', '.join(other.grains)})"
        missing = [d for d in kpi.dimensions if d not in other.dimensions]
        if missing:
            yield (
                f"dimensions: {', '.join(missing)} not a dimension of input {ref!r} "
                f"(it has: {', '.join(other.dimensions) or 'none'}); a derived KPI may use only "
                "dimensions all its inputs have"
            )
    if kpi.source is not None and input_sources and kpi.source not in input_sources:
        yield (
            f"source: a derived KPI is computed from its inputs' sources "
            f"({', '.join(sorted(input_sources))}); remove source or name one of them"
        )


def entity_columns(kpi: KpiSpec, source: SourceSpec) -> list[str]:
    """The columns whose values identify one entity of a semi-additive KPI (e.g. one stock)."""
    assert kpi.semi_additive is not None
    if kpi.semi_additive.per is not None:
        return list(kpi.semi_additive.per)
    return [c for c in source.primary_key if c != source.event_time]


# Aggregates that combine the picked rows of several entities; a distinct count of per-entity
# rows is rarely what is meant and a derived KPI has no rows to pick.
SEMI_ADDITIVE_AGGREGATES = frozenset({"sum", "avg", "min", "max", "count"})


def semi_additive_problems(kpi: KpiSpec, source: SourceSpec, measure: Measure) -> Iterator[str]:
    per = entity_columns(kpi, source)
    declared = kpi.semi_additive is not None and kpi.semi_additive.per is not None
    unknown = [name for name in per if name not in source.column_types]
    if unknown:
        yield "per: not columns of source {}: {}".format(
            source.name,
            ", ".join(f"{name}{did_you_mean(name, source.column_types)}" for name in unknown),
        )
        return
    if source.event_time in per:
        yield (
            f"per: {source.event_time} is the event time the rows are picked along; "
            "name the columns that identify what is measured"
        )
    elif set(source.primary_key) <= set(per):
        origin = (
            "per" if declared else f"per (by default the primary key without {source.event_time})"
        )
        yield (
            f"{origin}: {', '.join(per)} covers the whole primary key, so every row is an "
            "entity of its own and nothing is picked; declare per: the columns that identify "
            "what is measured (e.g. the warehouse and product of a stock)"
        )
    outside = [d for d in kpi.dimensions if d not in per]
    if outside:
        yield (
            f"dimensions {', '.join(outside)} are not among per ({', '.join(per)}): an entity's "
            "rows may differ there, and its value would count under whatever its picked row "
            "says; add them to per if they describe the entity"
        )
    functions = sorted({a.function for a in measure.aggregates} - SEMI_ADDITIVE_AGGREGATES)
    if functions:
        yield (
            f"measure {measure.text!r} uses {', '.join(functions)}; the picked rows combine with "
            f"{', '.join(sorted(SEMI_ADDITIVE_AGGREGATES))}"
        )


# ---- lookup dimensions (lib/kpi/lookups.py joins them) -------------------------------------


def split_dimension(name: str) -> tuple[str, str] | None:
    """`("customer", "segment")` for `customer.segment`; None for a column of the source."""
    lookup, dot, column = name.partition(".")
    return (lookup, column) if dot else None


def lookup_problems(source: SourceSpec, sources: Mapping[str, SourceSpec]) -> list[str]:
    """What is wrong with the lookups `source` declares, one message per problem."""
    problems = []
    for lookup in source.lookups:
        reference = sources.get(lookup.source)
        where = f"lookup {lookup.name}"
        if reference is None:
            problems.append(
                f"{where}: unknown source {lookup.source!r}"
                + did_you_mean(lookup.source, [s for s in sources if s != source.name])
            )
            continue
        if reference.kind != "reference":
            problems.append(
                f"{where}: source {reference.name} is not a reference (declare it with "
                "kind: reference: one row per key, no event time)"
            )
            continue
        if sorted(lookup.key.values()) != sorted(reference.primary_key):
            problems.append(
                f"{where}: key must map columns of {source.name} to the whole primary key of "
                f"{reference.name} ({', '.join(reference.primary_key)}), "
                f"not ({', '.join(lookup.key.values())})"
            )
            continue
        for fact_column, key_column in lookup.key.items():
            fact_type = source.column(fact_column).type
            key_type = reference.column(key_column).type
            if fact_type != key_type:
                problems.append(
                    f"{where}: key: {source.name}.{fact_column} is {fact_type} but "
                    f"{reference.name}.{key_column} is {key_type}; the types must match"
                )
    return problems


def dimension_problems(
    kpi: KpiSpec, source: SourceSpec, sources: Mapping[str, SourceSpec]
) -> list[str]:
    """Dimensions of `kpi` that name nothing its source offers, and view columns that clash."""
    problems = []
    lookups = {lookup.name: lookup for lookup in source.lookups}
    offered = [
        *source.column_types,
        *(
            f"{lookup.name}.{column.name}"
            for lookup in source.lookups
            if lookup.source in sources
            for column in sources[lookup.source].columns
        ),
    ]
    for dimension in kpi.dimensions:
        parts = split_dimension(dimension)
        if parts is None:
            if dimension not in source.column_types:
                problems.append(
                    f"{dimension!r} is not a column of source {source.name}"
                    + did_you_mean(dimension, offered)
                )
            continue
        lookup_name, column = parts
        lookup = lookups.get(lookup_name)
        if lookup is None:
            known = ", ".join(sorted(lookups)) or "none"
            problems.append(
                f"{dimension!r}: source {source.name} declares no lookup {lookup_name!r} "
                f"(lookups: {known}){did_you_mean(lookup_name, lookups)}"
            )
            continue
        reference = sources.get(lookup.source)
        if reference is None or reference.kind != "reference":
            continue  # reported with the source's lookups
        if column not in reference.column_types:
            problems.append(
                f"{dimension!r}: {column!r} is not a column of reference source {reference.name}"
                + did_you_mean(column, reference.column_types)
            )
    seen: dict[str, str] = {}
    for dimension in kpi.dimensions:
        view_column = dimension_column(dimension)
        if view_column in seen:
            problems.append(
                f"{seen[view_column]!r} and {dimension!r} would both be column {view_column!r} "
                f"of the view kpi.{kpi.name}"
            )
        seen.setdefault(view_column, dimension)
    return problems


def references_of(
    kpi: KpiSpec, source: SourceSpec, sources: Mapping[str, SourceSpec]
) -> dict[str, SourceSpec]:
    """The reference sources the KPI's dimensions read, by lookup name (a valid catalog)."""
    lookups = {lookup.name: lookup for lookup in source.lookups}
    found = {}
    for dimension in kpi.dimensions:
        parts = split_dimension(dimension)
        if parts is not None:
            found[parts[0]] = sources[lookups[parts[0]].source]
    return found


def reference_kpi_problem(source: str) -> str:
    return (
        f"{source} is a reference source (no event time, so no periods); a KPI counts the "
        f"rows of an events source and may look {source} up as a dimension"
    )
