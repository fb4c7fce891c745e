"""Load the catalog folder (`sources/*.yaml`, `kpis/*.yaml`, `access/*.yaml`) and check it as a
whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from analytics_pipelines.lib.catalog.models import (
    KpiFile,
    KpiSpec,
    LookupSpec,
    SourceFile,
    SourceSpec,
)

if TYPE_CHECKING:  # lib.access builds on this package's models
    from analytics_pipelines.lib.access.models import AudienceSpec


class CatalogError(Exception):
    """The catalog is invalid; `problems` lists each one as 'file: entry: reason'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid catalog:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Catalog:
    root: Path
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    kpis: dict[str, KpiSpec] = field(default_factory=dict)
    origins: dict[str, Path] = field(default_factory=dict)
    # Who may read which KPI rows (lib/access); audience names may repeat KPI or source names.
    audiences: dict[str, AudienceSpec] = field(default_factory=dict)
    audience_origins: dict[str, Path] = field(default_factory=dict)

    def source(self, name: str) -> SourceSpec:
        return self.sources[name]

    def kpis_of_source(self, source: str) -> list[KpiSpec]:
        return [k for k in self.kpis.values() if k.source == source]

    def lookups_of(self, reference: str) -> list[tuple[SourceSpec, LookupSpec]]:
        """The (fact source, lookup) pairs that read the reference source `reference`."""
        return [
            (source, lookup)
            for source in self.sources.values()
            for lookup in source.lookups
            if lookup.source == reference
        ]


def _entry_label(raw: Any, index: int) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"entry {index + 1}" + (f" ({name})" if name else "")


def _pydantic_problems(
    path: Path, key: str, raw: dict[str, Any], error: ValidationError
) -> list[str]:
    problems = []
    listed = raw.get(key)
    entries: list[Any] = listed if isinstance(listed, list) else []
    for item in error.errors():
        loc = list(item["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == key and isinstance(loc[1], int):
            where = _entry_label(entries[loc[1]], loc[1]) + ": "
            loc = loc[2:]
        elif loc and loc[0] != key:
            where = ""
        field_path = ".".join(str(p) for p in loc)
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {where}{field_path + ': ' if field_path else ''}{message}")
    return problems


def _read(
    path: Path,
    key: str,
    model: type[BaseModel],
    problems: list[str],
    found: list[BaseModel] | None = None,
) -> list[Any]:
    """The validated entries under `key`; `found` receives the whole validated file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        problems.append(f"{path}: not valid YAML: {error}".replace("\n", " "))
        return []
    if raw is None:
        return []
    if not isinstance(raw, dict) or key not in raw:
        problems.append(f"{path}: expected a mapping with a top-level '{key}:' list")
        return []
    try:
        validated = model.model_validate(raw)
    except ValidationError as error:
        problems.extend(_pydantic_problems(path, key, raw, error))
        return []
    if found is not None:
        found.append(validated)
    return list(getattr(validated, key))


def _apply_ml_defaults(
    catalog: Catalog, files: list[tuple[Path, KpiFile]], problems: list[str]
) -> None:
    """`defaults:` of one KPI file apply to every KPI of the catalog with a day grain that
    declares no forecast / anomalies of its own (lib/ml)."""
    declared = [(path, file.defaults) for path, file in files if file.defaults is not None]
    if len(declared) > 1:
        problems.append(
            f"{declared[1][0]}: defaults: declared in more than one KPI file (also in "
            f"{declared[0][0]}); catalog-wide defaults belong in one file"
        )
    if not declared:
        return
    defaults = declared[0][1]
    assert defaults is not None
    for name, kpi in catalog.kpis.items():
        if "day" not in kpi.grains:
            continue
        update: dict[str, Any] = {}
        if defaults.forecast is not None and "forecast" not in kpi.model_fields_set:
            update["forecast"] = defaults.forecast
        if defaults.anomalies is not None and "anomalies" not in kpi.model_fields_set:
            update["anomalies"] = defaults.anomalies
        if update:
            catalog.kpis[name] = kpi.model_copy(update=update)


def _check_kpis(catalog: Catalog, problems: list[str]) -> None:
    # Imported here: the rules parse expressions, which `import lib.catalog` alone does not need.
    from analytics_pipelines.lib.kpi.validation import kpi_problems

    for name, kpi in catalog.kpis.items():
        where = f"{catalog.origins[name]}: kpi {name}"
        problems.extend(
            f"{where}: {problem}" for problem in kpi_problems(kpi, catalog.sources, catalog.kpis)
        )


def _read_audiences(catalog: Catalog, problems: list[str]) -> None:
    from analytics_pipelines.lib.access.models import AccessFile

    for path in sorted((catalog.root / "access").glob("*.y*ml")):
        for audience in _read(path, "audiences", AccessFile, problems):
            if audience.name in catalog.audiences:
                problems.append(
                    f"{path}: audience {audience.name}: declared twice "
                    f"(also in {catalog.audience_origins[audience.name]})"
                )
            catalog.audiences[audience.name] = audience
            catalog.audience_origins.setdefault(audience.name, path)


def _check_audiences(catalog: Catalog, problems: list[str]) -> None:
    from analytics_pipelines.lib.access.rules import audience_problems

    for name, audience in catalog.audiences.items():
        where = f"{catalog.audience_origins[name]}: audience {name}"
        problems.extend(
            f"{where}: {problem}"
            for problem in audience_problems(audience, catalog.kpis, catalog.sources)
        )


def load_catalog(root: str | Path) -> Catalog:
    """Read and validate every catalog file; raise CatalogError listing every problem."""
    root = Path(root)
    problems: list[str] = []
    catalog = Catalog(root=root)
    if not root.is_dir():
        raise CatalogError([f"{root}: catalog folder does not exist"])
    for path in sorted((root / "sources").glob("*.y*ml")):
        for source in _read(path, "sources", SourceFile, problems):
            if source.name in catalog.sources:
                problems.append(
                    f"{path}: source {source.name}: declared twice (also in {catalog.origins[source.name]})"
                )
            catalog.sources[source.name] = source
            catalog.origins.setdefault(source.name, path)
    kpi_files: list[tuple[Path, KpiFile]] = []
    for path in sorted((root / "kpis").glob("*.y*ml")):
        found: list[BaseModel] = []
        kpis = _read(path, "kpis", KpiFile, problems, found)
        kpi_files.extend((path, file) for file in found if isinstance(file, KpiFile))
        for kpi in kpis:
            if kpi.name in catalog.kpis:
                problems.append(
                    f"{path}: kpi {kpi.name}: declared twice (also in {catalog.origins[kpi.name]})"
                )
            catalog.kpis[kpi.name] = kpi
            catalog.origins.setdefault(kpi.name, path)
    _apply_ml_defaults(catalog, kpi_files, problems)
    _read_audiences(catalog, problems)
    prefixes: dict[str, str] = {}
    for source in catalog.sources.values():
        for other_prefix, other in prefixes.items():
            if source.landing_prefix.startswith(other_prefix) or other_prefix.startswith(
                source.landing_prefix
            ):
                problems.append(
                    f"{catalog.origins[source.name]}: source {source.name}: landing_prefix overlaps source {other}"
                )
        prefixes[source.landing_prefix] = source.name
    from analytics_pipelines.lib.kpi.validation import lookup_problems

    for source in catalog.sources.values():
        problems.extend(
            f"{catalog.origins[source.name]}: source {source.name}: lookups: {problem}"
            for problem in lookup_problems(source, catalog.sources)
        )
    _check_kpis(catalog, problems)
    _check_audiences(catalog, problems)
    if problems:
        raise CatalogError(problems)
    return catalog


@lru_cache(maxsize=4)
def load_catalog_cached(root: str) -> Catalog:
    return load_catalog(root)
