"""Bulk import of catalog definitions from a sheet (`.xlsx` or `.csv`) into catalog YAML.

Sheet layout -- one header row, then one definition per row (the first worksheet of an .xlsx,
or a sheet named `catalog` if there is one). Only the columns a sheet uses need a title:

=======================  ====================================================================
column                   meaning
=======================  ====================================================================
kind                     `kpi` (default when the column is absent or the cell empty), `source`
                         (an events source) or `reference` (a source with `kind: reference`)
name                     KPI or source name (lower case, digits, `_`)
value_chain              value chain (the Dagster group)
description              one line; required for KPIs
timezone                 IANA name, e.g. Europe/Berlin (default UTC)
freshness_hours          number of hours
**KPI rows**
unit                     e.g. EUR
source                   the source a measure is computed from (optional for derived)
measure                  e.g. `sum(quantity * unit_price)`; or use `derived`
derived                  arithmetic over other KPIs (of any source), e.g. `net / orders`
filter                   e.g. `status in ('placed', 'shipped')`
semi_additive            `last` or `first`, optionally `per` columns:
                         `last per warehouse, product_sku`
window                   `rolling 28` (days), `month to date`, `quarter to date`,
                         `year to date` or `all to date`
fiscal_year_start_month  1-12 (default 1)
week_start               monday ... sunday (default monday)
fill_nulls_with          a number (default 0), or `none` to keep NULL
dimensions               list, e.g. `region; channel; customer.segment`
grains                   list of hour day week month quarter year (default: day)
refresh_cron             e.g. `*/15 * * * *` (default hourly)
target                   `higher` or `lower` [value], then optionally `GRAIN: value` parts and
                         `every cell`: `higher 1000`, `lower 360; every cell`,
                         `higher; day: 280000; month: 8500000`
forecast                 horizon in days, e.g. `28`; `none` opts out of a catalog-wide default
anomalies                `low`, `medium` or `high`, or a level in percent such as `99.5`;
                         `none` opts out of a catalog-wide default
**source rows**
landing_prefix           folder of its files, e.g. landing/orders
format                   csv, jsonl, parquet or xlsx
reader_<option>          a reader option, e.g. `reader_delimiter` (`;`, or `tab`),
                         `reader_encoding`, `reader_header_row`, `reader_decimal_separator`,
                         `reader_quote`, `reader_sheet`, `reader_compression`
columns                  `name:type` list, `!` marks required, e.g. `id:string!; at:timestamp!`
primary_key              list of column names
event_time               events source: the date/timestamp column that places a row in time
lookups                  events source: `NAME: SOURCE on COLUMN = KEY_COLUMN`, several joined
                         key columns with `and`, several lookups as a list:
                         `customer: customers on customer_id = id`; `NAME:` may be left out
                         (named as the source), `= KEY_COLUMN` too (the same column name)
max_quarantine_rate      0-1 (default 0.05)
raw_retention_days       whole days
=======================  ====================================================================

Lists are separated by `;` or `,`, and so are the parts of a `target` and the lookups of a
`lookups` cell; numbers are written without thousands separators, with a `.` decimal point.
The keywords of a cell (`higher`, `rolling`, `to date`, `per`, `on`, `and`, `none`, grains,
weekdays, sensitivities) are read case-insensitively; names are lower case. An empty cell is the
default; `none` (in `fill_nulls_with`, `forecast`, `anomalies`) is an explicit "nothing".

A nested setting is one cell, written the way one would say it, rather than a column per YAML
key (`target_direction`, `target_value`, `target_month`, ...): the sheet keeps one column per
setting (a target per grain would otherwise need a column for each grain, mostly empty), and the
cell reads like the rule it declares. Only the reader options are columns of their own: they are
independent plain values, and a delimiter such as `;` could not be told apart from a separator
inside one cell. Cells that do not apply to a row's kind must be empty.

YAML only, by design: per-column constraints of a source beyond `required` (`allowed_values`,
`min`, `max`, `pattern`, `description`) are a table per source, not a cell, and are edited in
the YAML after the import; so are the catalog-wide `defaults:` (not a setting of one row). Every
other field of KpiSpec and SourceSpec has a column (a test keeps it so).

Every row is validated (its cells' syntax, the pydantic models, then expressions against the
sources of the existing catalog and of the sheet); all problems are reported with their row
numbers and columns, and nothing is written unless every row is valid. The result is written
to `kpis/<sheet stem>.yaml` and `sources/<sheet stem>.yaml` of the output folder; importing
the same sheet again replaces them. What is written loads back into the definitions the sheet
declared.
"""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from analytics_pipelines.lib.catalog import sheet_cells
from analytics_pipelines.lib.catalog.loader import Catalog, CatalogError, load_catalog
from analytics_pipelines.lib.catalog.models import KpiSpec, ReaderOptions, SourceSpec

KPI_FIELDS = (
    "name",
    "value_chain",
    "description",
    "unit",
    "source",
    "measure",
    "derived",
    "filter",
    "semi_additive",
    "window",
    "fiscal_year_start_month",
    "week_start",
    "fill_nulls_with",
    "dimensions",
    "grains",
    "timezone",
    "refresh_cron",
    "freshness_hours",
    "target",
    "forecast",
    "anomalies",
)
# `reader_<option>` columns fill the source's `reader:` mapping (ReaderOptions).
READER_FIELDS = tuple(f"reader_{option}" for option in ReaderOptions.model_fields)
SOURCE_FIELDS = (
    "name",
    "value_chain",
    "description",
    "landing_prefix",
    "format",
    *READER_FIELDS,
    "columns",
    "primary_key",
    "event_time",
    "timezone",
    "lookups",
    "max_quarantine_rate",
    "freshness_hours",
    "raw_retention_days",
)
KNOWN_COLUMNS = frozenset({"kind", *KPI_FIELDS, *SOURCE_FIELDS})
# The `kind` column: a KPI, an events source, or a reference source (`kind: reference`).
ROW_KINDS = {"kpi": "kpi", "source": "source", "reference": "source"}
# A cell put on a row of the wrong kind, where the user may well have meant it.
WRONG_ROW_HINTS = {
    "lookups": " (lookups belong to the events source's row; its KPIs then name "
    "`lookup.column` dimensions)",
}

# The folders of a catalog, copied whole into an --out folder (access/ may be absent).
CATALOG_FOLDERS = ("sources", "kpis", "access")


class CatalogImportError(Exception):
    """The sheet has invalid rows; `problems` holds one line per problem, with its row number."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("catalog import refused:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class ImportResult:
    kpis: list[KpiSpec] = field(default_factory=list)
    sources: list[SourceSpec] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    # Files of the checked catalog copied into a separate --out folder, so that it loads alone.
    copied: list[Path] = field(default_factory=list)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _read_csv(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for index, row in enumerate(csv.reader(handle), start=1):
            yield index, [_cell(v) for v in row]


def _read_xlsx(path: Path) -> Iterator[tuple[int, list[str]]]:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = workbook["catalog"] if "catalog" in workbook.sheetnames else workbook.worksheets[0]
        for index, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield index, [_cell(v) for v in row]
    finally:
        workbook.close()


def read_sheet(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and non-empty rows (with their 1-based row numbers) of a .csv or .xlsx file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix in (".xlsx", ".xlsm"):
        rows = _read_xlsx(path)
    else:
        raise CatalogImportError([f"{path}: expected a .xlsx or .csv file"])
    try:
        _, header_cells = next(rows)
    except StopIteration:
        raise CatalogImportError([f"{path}: the sheet is empty"]) from None
    header = [h.strip().lower() for h in header_cells]
    while header and not header[-1]:
        header.pop()
    problems = []
    unknown = [h for h in header if h and h not in KNOWN_COLUMNS]
    if unknown:
        problems.append(
            f"row 1: unknown column(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(KNOWN_COLUMNS))})"
        )
    if "name" not in header:
        problems.append("row 1: a 'name' column is required")
    if problems:
        raise CatalogImportError(problems)
    records = []
    for number, cells in rows:
        if not any(cells):
            continue
        extra = [c for c in cells[len(header) :] if c]
        record = {h: (cells[i] if i < len(cells) else "") for i, h in enumerate(header) if h}
        if extra:
            record["__extra__"] = ", ".join(extra)
        records.append((number, record))
    return header, records


def _row_number(problem: str) -> int:
    match = re.match(r"row (\d+)", problem)
    return int(match.group(1)) if match else 0


def _fields(kind: str, record: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The row's data for its model, and the problems of its cells: malformed, or filled in
    where the row's kind has no such setting."""
    allowed = KPI_FIELDS if ROW_KINDS[kind] == "kpi" else SOURCE_FIELDS
    problems = [
        f"{key}: does not apply to kind={kind}; leave it empty{WRONG_ROW_HINTS.get(key, '')}"
        for key, value in record.items()
        if value and key not in allowed and key not in ("kind", "__extra__")
    ]
    data: dict[str, Any] = {"kind": "reference"} if kind == "reference" else {}
    for key in allowed:
        value = record.get(key, "")
        if not value:
            continue
        try:
            parsed = sheet_cells.PARSERS.get(key, str)(value)
        except sheet_cells.CellError as error:
            problems.append(f"{key}: {error}")
            continue
        if key in READER_FIELDS:
            data.setdefault("reader", {})[key.removeprefix("reader_")] = parsed
        else:
            data[key] = parsed
    return data, problems


def _pydantic_messages(error: ValidationError) -> list[str]:
    messages = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        # Reader options are columns of their own in the sheet.
        where = re.sub(r"^reader\.", "reader_", where)
        message = item["msg"].removeprefix("Value error, ")
        messages.append(f"{where}: {message}" if where else message)
    return messages


def _validate(model: type[BaseModel], data: dict[str, Any], label: str, problems: list[str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems.extend(f"{label}: {m}" for m in _pydantic_messages(error))
        return None


def parse_sheet(path: Path, catalog: Catalog | None) -> ImportResult:
    """Validate every row of the sheet against itself and `catalog`; raise on any problem."""
    _, records = read_sheet(path)
    if not records:
        raise CatalogImportError([f"{path}: no definitions below the header row"])
    problems: list[str] = []
    result = ImportResult()
    seen: dict[tuple[str, str], int] = {}
    replaced_files = {f"{path.stem}.yaml", f"{path.stem}.yml"}
    rows: list[tuple[str, KpiSpec | SourceSpec]] = []
    for number, record in records:
        kind = (record.get("kind") or "kpi").lower()
        label = f"row {number}" + (f" ({kind} {record['name']})" if record.get("name") else "")
        if "__extra__" in record:
            problems.append(f"{label}: values beyond the last titled column: {record['__extra__']}")
        if kind not in ROW_KINDS:
            problems.append(f"{label}: kind: expected 'kpi', 'source' or 'reference', got {kind!r}")
            continue
        data, cell_problems = _fields(kind, record)
        problems.extend(f"{label}: {p}" for p in cell_problems)
        # A reference is a source: its name may not repeat an events source's.
        kind = ROW_KINDS[kind]
        name = data.get("name", "")
        if name and (kind, name) in seen:
            problems.append(
                f"{label}: name: {kind} {name!r} already defined in row {seen[(kind, name)]}"
            )
        seen.setdefault((kind, name), number)
        existing = None
        if catalog is not None:
            existing = (catalog.kpis if kind == "kpi" else catalog.sources).get(name)
        if existing is not None and catalog is not None:
            origin = catalog.origins.get(name)
            if origin is None or origin.name not in replaced_files:
                problems.append(f"{label}: name: {kind} {name!r} is already declared in {origin}")
        model: type[BaseModel] = KpiSpec if kind == "kpi" else SourceSpec
        spec = _validate(model, data, label, problems)
        if isinstance(spec, SourceSpec):
            result.sources.append(spec)
        elif isinstance(spec, KpiSpec):
            result.kpis.append(spec)
        if spec is not None:
            rows.append((label, spec))
    # The first row of a name counts; later ones were reported as duplicates above.
    sources = {
        **({} if catalog is None else catalog.sources),
        **{s.name: s for s in reversed(result.sources)},
    }
    kpis = {
        **({} if catalog is None else catalog.kpis),
        **{k.name: k for k in reversed(result.kpis)},
    }
    from analytics_pipelines.lib.kpi.validation import kpi_problems, lookup_problems

    for label, spec in rows:
        if isinstance(spec, KpiSpec):
            row_problems = kpi_problems(spec, sources, kpis)
        else:
            # Also checked when the result loads, but there without the row number.
            row_problems = [f"lookups: {problem}" for problem in lookup_problems(spec, sources)]
        problems.extend(f"{label}: {problem}" for problem in row_problems)
    if problems:
        raise CatalogImportError(sorted(problems, key=_row_number))
    return result


def _yaml_number(value: Decimal) -> int | float | str:
    """A decimal as YAML writes it: a plain number when one reads back exactly, else text
    (which the Decimal field parses exactly; a float would round it)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value) if Decimal(repr(float(value))) == value else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _yaml_number(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dump(key: str, specs: list[Any]) -> str:
    entries = []
    for spec in specs:
        entry = spec.model_dump(mode="python", exclude_defaults=True)
        entry.setdefault("name", spec.name)
        if isinstance(spec, KpiSpec):
            # Spelled out so that a reader of the YAML does not need to know the defaults.
            entry.setdefault("grains", list(spec.grains))
            entry.setdefault("timezone", spec.timezone)
            entry.setdefault("refresh_cron", spec.refresh_cron)
            if spec.forecast is not None:
                entry["forecast"] = {"horizon_days": spec.forecast.horizon_days}
            if spec.anomalies is not None and spec.anomalies.level is None:
                entry["anomalies"] = {"sensitivity": spec.anomalies.sensitivity}
            for ml in ("forecast", "anomalies"):
                # `none` in the sheet: an explicit null opts out of a catalog-wide default.
                if ml in spec.model_fields_set and getattr(spec, ml) is None:
                    entry[ml] = None
        entries.append(_plain(entry))
    return yaml.safe_dump({key: entries}, sort_keys=False, allow_unicode=True, width=100)


def import_sheet(path: Path, catalog_dir: Path, out_dir: Path | None = None) -> ImportResult:
    """Turn the sheet into `kpis/<stem>.yaml` / `sources/<stem>.yaml` under `out_dir`.

    `catalog_dir` is the catalog the rows are checked against (default output folder too).
    Nothing is written unless every row is valid and the resulting catalog loads cleanly.
    """
    out_dir = out_dir or catalog_dir
    catalog = load_catalog(catalog_dir) if (catalog_dir / "sources").is_dir() else None
    result = parse_sheet(path, catalog)
    files: dict[str, str] = {}
    if result.sources:
        files[f"sources/{path.stem}.yaml"] = _dump("sources", result.sources)
    if result.kpis:
        files[f"kpis/{path.stem}.yaml"] = _dump("kpis", result.kpis)
    # Check the catalog as it will be: a copy of the target with the new files in place.
    with tempfile.TemporaryDirectory(prefix="catalog-import-") as scratch:
        preview = Path(scratch) / "catalog"
        if out_dir.is_dir():
            shutil.copytree(out_dir, preview)
        if catalog is not None and catalog_dir != out_dir:
            for sub in CATALOG_FOLDERS:
                for existing in (catalog_dir / sub).glob("*.y*ml"):
                    target = preview / sub / existing.name
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(existing, target)
        for relative, text in files.items():
            target = preview / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        for sub in ("sources", "kpis"):
            (preview / sub).mkdir(parents=True, exist_ok=True)
        try:
            load_catalog(preview)
        except CatalogError as error:
            raise CatalogImportError(
                [p.replace(str(preview), str(out_dir)) for p in error.problems]
            ) from None
    for relative, text in files.items():
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".yaml.tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
        result.written.append(target)
    # The folder holds the catalog that was validated: the new files and the existing ones.
    for sub in CATALOG_FOLDERS:
        if sub != "access":  # a catalog may declare no audiences
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for existing in sorted(_catalog_files(catalog_dir, out_dir, sub)):
            target = out_dir / sub / existing.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(existing, target)
            result.copied.append(target)
    return result


def _catalog_files(catalog_dir: Path, out_dir: Path, sub: str) -> list[Path]:
    """Files of `catalog_dir/sub` that a separate `out_dir` lacks (none when they are the same)."""
    if catalog_dir.resolve() == out_dir.resolve() or not (catalog_dir / sub).is_dir():
        return []
    return [f for f in (catalog_dir / sub).glob("*.y*ml") if not (out_dir / sub / f.name).exists()]
