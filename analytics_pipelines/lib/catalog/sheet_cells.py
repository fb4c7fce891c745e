"""Cell syntax of the catalog sheet importer (lib/catalog/importer.py, whose docstring is the
user documentation): the text of one cell -> the value its YAML field takes.

The parsers only take a cell apart; what the parts mean (a grain name, a number's range, a
column name) is left to the pydantic models, so that a sheet and a YAML file get the same
messages for the same mistake. A cell whose shape is wrong raises CellError, which the importer
reports with the row number and the column.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# The one keyword for "explicitly nothing": keep NULL (fill_nulls_with), opt out of a
# catalog-wide forecast / anomalies default. `null` is the YAML spelling, accepted too.
NONE_WORDS = frozenset({"none", "null"})


class CellError(ValueError):
    """The cell's text does not have the shape its column expects."""


def split_list(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[;,]", text) if part.strip()]


def _words(text: str) -> str:
    """Lower case, single spaces, `_` read as a space (`every_cell` = `every cell`)."""
    return " ".join(text.replace("_", " ").lower().split())


def columns(text: str) -> list[dict[str, Any]]:
    result = []
    for item in split_list(text):
        required = item.endswith("!")
        name, _, column_type = item.rstrip("!").partition(":")
        column: dict[str, Any] = {"name": name.strip()}
        if column_type.strip():
            column["type"] = column_type.strip()
        if required:
            column["required"] = True
        result.append(column)
    return result


_SEMI_ADDITIVE = re.compile(r"(\w+)(?:\s+per\s+(.*))?", re.IGNORECASE | re.DOTALL)


def semi_additive(text: str) -> dict[str, Any]:
    match = _SEMI_ADDITIVE.fullmatch(text)
    take = match.group(1).lower() if match else ""
    if match is None or take not in ("last", "first"):
        raise CellError(
            f"expected 'last' or 'first', optionally with 'per COLUMN, COLUMN' "
            f"(e.g. 'last per warehouse, product_sku'), got {text!r}"
        )
    result: dict[str, Any] = {"take": take}
    if match.group(2) is not None:
        per = split_list(match.group(2))
        if not per:
            raise CellError(f"'per' names no column in {text!r}")
        result["per"] = per
    return result


_ROLLING = re.compile(r"rolling\s+(\d+)(?:\s+days?)?")
_TO_DATE = re.compile(r"(\w+)\s+to\s+date")


def window(text: str) -> dict[str, Any]:
    words = _words(text)
    if rolling := _ROLLING.fullmatch(words):
        return {"rolling": int(rolling.group(1))}
    if to_date := _TO_DATE.fullmatch(words):
        return {"to_date": to_date.group(1)}
    raise CellError(
        "expected 'rolling N' (N days, a whole number, e.g. 'rolling 28') or "
        f"'month to date', 'quarter to date', 'year to date', 'all to date', got {text!r}"
    )


_GRAIN_VALUE = re.compile(r"([a-z]+)(?:\s*:\s*|\s+)(\S+)")
_APPLIES_TO = {"every cell": "every_cell", "total": "total"}


def target(text: str) -> dict[str, Any]:
    parts = split_list(text)
    head = parts[0].split() if parts else []
    if not head or head[0].lower() not in ("higher", "lower") or len(head) > 2:
        raise CellError(
            "expected 'higher' or 'lower' (which values are good), optionally with the value "
            f"(e.g. 'higher 1000' or 'lower 360; every cell'), got {text!r}"
        )
    result: dict[str, Any] = {"direction": head[0].lower()}
    if len(head) == 2:
        result["value"] = head[1]
    by_grain: dict[str, str] = {}
    for part in parts[1:]:
        if _words(part) in _APPLIES_TO:
            if "applies_to" in result:
                raise CellError(f"'every cell' / 'total' given twice in {text!r}")
            result["applies_to"] = _APPLIES_TO[_words(part)]
            continue
        if part.isdigit():
            raise CellError(
                f"{part!r} stands alone: numbers are written without thousands separators and "
                f"with a '.' decimal point (',' and ';' separate the parts), got {text!r}"
            )
        grain_value = _GRAIN_VALUE.fullmatch(part.lower())
        if grain_value is None:
            raise CellError(
                f"{part!r}: expected 'GRAIN: VALUE' (e.g. 'month: 30000'), 'every cell' or "
                "'total' after the direction"
            )
        grain, value = grain_value.groups()
        if grain in by_grain:
            raise CellError(f"grain {grain!r} given twice in {text!r}")
        by_grain[grain] = value
    if by_grain:
        result["by_grain"] = by_grain
    return result


_LOOKUP = re.compile(r"(?:(\S+?)\s*:\s*)?(\S+)\s+on\s+(.+)", re.IGNORECASE | re.DOTALL)


def lookups(text: str) -> list[dict[str, Any]]:
    result = []
    for item in split_list(text):
        match = _LOOKUP.fullmatch(item)
        if match is None:
            raise CellError(
                "expected 'NAME: SOURCE on COLUMN = KEY_COLUMN' (e.g. 'customer: customers on "
                f"customer_id = id'; 'and' joins key columns), got {item!r}"
            )
        name, source, condition = match.groups()
        key: dict[str, str] = {}
        for pair in re.split(r"\s+and\s+", condition.strip(), flags=re.IGNORECASE):
            fact, equals, reference = (part.strip() for part in pair.partition("="))
            if not fact or (equals and not reference):
                raise CellError(f"{pair!r} in {item!r}: expected COLUMN = KEY_COLUMN or COLUMN")
            if fact in key:
                raise CellError(f"column {fact!r} is joined twice in {item!r}")
            key[fact] = reference or fact
        result.append({"name": name or source, "source": source, "key": key})
    return result


_DAYS = re.compile(r"(\d+)(?:\s*days?)?")


def forecast(text: str) -> dict[str, Any] | None:
    if _words(text) in NONE_WORDS:
        return None
    days = _DAYS.fullmatch(_words(text))
    if days is None:
        raise CellError(
            f"expected the horizon in days (a whole number, e.g. 28) or 'none', got {text!r}"
        )
    return {"horizon_days": int(days.group(1))}


_LEVEL = re.compile(r"(\d+(?:\.\d+)?)\s*%?")


def anomalies(text: str) -> dict[str, Any] | None:
    words = _words(text)
    if words in NONE_WORDS:
        return None
    if words in ("low", "medium", "high"):
        return {"sensitivity": words}
    if level := _LEVEL.fullmatch(words):
        return {"level": level.group(1)}
    raise CellError(
        "expected a sensitivity (low, medium, high), a prediction interval level in percent "
        f"(e.g. 99.5) or 'none', got {text!r}"
    )


def fill_nulls_with(text: str) -> str | None:
    return None if _words(text) in NONE_WORDS else text


def reader_delimiter(text: str) -> str:
    # A cell's surrounding blanks are stripped, so a tab is spelled out.
    return "\t" if text.lower() == "tab" else text


# Columns whose cell is more than the field's value as typed; others go to pydantic as is.
PARSERS: dict[str, Callable[[str], Any]] = {
    "columns": columns,
    "dimensions": split_list,
    "grains": lambda text: split_list(text.lower()),
    "primary_key": split_list,
    "semi_additive": semi_additive,
    "window": window,
    "week_start": str.lower,
    "fill_nulls_with": fill_nulls_with,
    "target": target,
    "forecast": forecast,
    "anomalies": anomalies,
    "lookups": lookups,
    "reader_delimiter": reader_delimiter,
}
