"""What an audience declaration must satisfy against the rest of its catalog, and what it reads.

An audience reads the KPIs of its value chains and the KPIs it names. Its filter is the KPI
filter language (allow-listed, lib/kpi/expressions.py) over dimension columns as the views name
them (`region`, `customer_segment`). A row of `kpi.kpi_values` passes only when it is broken down
by every dimension the filter names: a total over regions (`{}`) or over one of them sums rows
of every region, so an audience restricted to `north` never sees it. A KPI of a listed value
chain that is not broken down by a filtered dimension holds only such totals: it is withheld
(and listed as such); a KPI named in `kpis:` without it is refused.

Each problem is a line naming the field first; the loader adds the file and the audience.
Needs no SQLAlchemy: the read-only CLI loads catalogs with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from analytics_pipelines.lib.access.models import AudienceSpec
from analytics_pipelines.lib.catalog.models import ColumnSpec, ColumnType, KpiSpec, SourceSpec
from analytics_pipelines.lib.kpi.display import dimension_column
from analytics_pipelines.lib.kpi.expressions import ExpressionError, Filter, parse_filter
from analytics_pipelines.lib.kpi.validation import (
    condition_values_outside_allowed,
    did_you_mean,
    split_dimension,
)


@dataclass(frozen=True)
class Dimension:
    """A dimension as an audience filter sees it: its key in `kpi_values.dimensions`, its view
    column and the type and allowed values of the column it comes from."""

    key: str
    column: str
    type: ColumnType
    allowed_values: list[str] | None


@dataclass(frozen=True)
class AudienceAccess:
    """What an audience reads: KPIs, those withheld (with why), the parsed filter."""

    audience: AudienceSpec
    kpis: list[str]
    withheld: dict[str, str] = field(default_factory=dict)
    filter: Filter | None = None
    # The dimensions the filter names, by view column.
    filtered: dict[str, Dimension] = field(default_factory=dict)

    @property
    def filtered_keys(self) -> list[str]:
        return sorted(d.key for d in self.filtered.values())

    @property
    def fingerprint(self) -> str:
        """Names everything the audience's row policy is made from: `access apply` stores it
        on each policy, `access check` compares it with the catalog's."""
        shape = {
            "kpis": sorted(self.kpis),
            "filter": self.audience.filter,
            "dimensions": sorted((c, d.key, str(d.type)) for c, d in self.filtered.items()),
        }
        digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
        return f"analytics_pipelines audience {digest[:16]}"


class AccessRuleError(ValueError):
    """An audience contradicts its catalog; `problems` lists each reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _column_of(
    key: str, source: SourceSpec, sources: Mapping[str, SourceSpec]
) -> ColumnSpec | None:
    """The column a dimension reads; None when it names nothing (reported with the KPI)."""
    parts = split_dimension(key)
    if parts is None:
        return next((c for c in source.columns if c.name == key), None)
    lookup = next((lookup for lookup in source.lookups if lookup.name == parts[0]), None)
    reference = sources.get(lookup.source) if lookup is not None else None
    if reference is None:
        return None
    return next((c for c in reference.columns if c.name == parts[1]), None)


def catalog_dimensions(
    kpis: Iterable[KpiSpec], sources: Mapping[str, SourceSpec]
) -> dict[str, list[Dimension]]:
    """Every dimension of the measure KPIs, by view column (a derived KPI's come from its
    inputs). Several entries under one column: different keys, or types, of that name."""
    columns: dict[str, dict[tuple[str, ColumnType], list[ColumnSpec]]] = {}
    for kpi in kpis:
        if kpi.source is None or kpi.source not in sources:
            continue
        for key in kpi.dimensions:
            spec = _column_of(key, sources[kpi.source], sources)
            if spec is None:
                continue
            kinds = columns.setdefault(dimension_column(key), {})
            kinds.setdefault((key, spec.type), []).append(spec)
    return {
        column: [
            Dimension(key, column, column_type, _allowed(specs))
            for (key, column_type), specs in kinds.items()
        ]
        for column, kinds in columns.items()
    }


def _allowed(specs: list[ColumnSpec]) -> list[str] | None:
    """Values allowed wherever the dimension comes from; None when any source allows any."""
    if any(spec.allowed_values is None for spec in specs):
        return None
    return sorted({value for spec in specs for value in spec.allowed_values or []})


def _readable_candidates(
    audience: AudienceSpec, kpis: Mapping[str, KpiSpec], problems: list[str]
) -> list[KpiSpec]:
    chains = sorted({kpi.value_chain for kpi in kpis.values()})
    for chain in audience.value_chains:
        if chain not in chains:
            problems.append(
                f"value_chains: unknown value chain {chain!r}{did_you_mean(chain, chains)} "
                f"(known: {', '.join(chains) or 'none'})"
            )
    for name in audience.kpis:
        if name not in kpis:
            problems.append(f"kpis: unknown KPI {name!r}{did_you_mean(name, kpis)}")
    return [
        kpi
        for kpi in kpis.values()
        if kpi.value_chain in audience.value_chains or kpi.name in audience.kpis
    ]


def _parse_filter(
    audience: AudienceSpec,
    candidates: list[KpiSpec],
    dimensions: Mapping[str, list[Dimension]],
    problems: list[str],
) -> tuple[Filter | None, dict[str, Dimension]]:
    assert audience.filter is not None
    offered = {dimension_column(key) for kpi in candidates for key in kpi.dimensions}
    usable = {
        column: entries[0]
        for column, entries in dimensions.items()
        if column in offered and len(entries) == 1
    }
    for column in sorted(offered - set(usable)):
        if len(dimensions.get(column, [])) > 1:
            kinds = ", ".join(f"{e.key} ({e.type})" for e in dimensions[column])
            problems.append(f"filter: column {column!r} names different dimensions: {kinds}")
    try:
        parsed = parse_filter(audience.filter, {c: d.type for c, d in usable.items()})
    except ExpressionError as error:
        problems.append(f"filter: {error}")
        return None, {}
    problems.extend(
        f"filter: {problem}"
        for problem in condition_values_outside_allowed(
            parsed.root, lambda column: usable[column].allowed_values
        )
    )
    return parsed, {column: usable[column] for column in sorted(parsed.columns)}


def resolve_audience(
    audience: AudienceSpec, kpis: Mapping[str, KpiSpec], sources: Mapping[str, SourceSpec]
) -> AudienceAccess:
    """The KPIs and filter of `audience`; AccessRuleError if it contradicts the catalog."""
    problems: list[str] = []
    candidates = _readable_candidates(audience, kpis, problems)
    parsed: Filter | None = None
    filtered: dict[str, Dimension] = {}
    if audience.filter is not None:
        parsed, filtered = _parse_filter(
            audience, candidates, catalog_dimensions(kpis.values(), sources), problems
        )
    keys = {dimension.key for dimension in filtered.values()}
    readable: list[str] = []
    withheld: dict[str, str] = {}
    for kpi in candidates:
        missing = sorted(keys - set(kpi.dimensions))
        if not missing:
            readable.append(kpi.name)
            continue
        reason = (
            f"not broken down by {', '.join(missing)}: its values sum every "
            f"{' and '.join(missing)}, which the filter restricts"
        )
        if kpi.name in audience.kpis:
            problems.append(f"kpis: {kpi.name} is {reason}")
        else:
            withheld[kpi.name] = reason
    if not readable and not problems:
        problems.append(
            "reads no KPI: every KPI of its value chains is "
            + ("; ".join(f"{k} {r}" for k, r in withheld.items()) or "missing")
        )
    if problems:
        raise AccessRuleError(problems)
    return AudienceAccess(audience, sorted(readable), withheld, parsed, filtered)


def audience_problems(
    audience: AudienceSpec, kpis: Mapping[str, KpiSpec], sources: Mapping[str, SourceSpec]
) -> list[str]:
    """Everything wrong with `audience` given the catalog (empty: it is fine)."""
    try:
        resolve_audience(audience, kpis, sources)
    except AccessRuleError as error:
        return error.problems
    return []
