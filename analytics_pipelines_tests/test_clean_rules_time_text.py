"""The rule engine's quick reading of dates and plain wall times, against Python's own reading.

A plain wall time (`YYYY-MM-DD HH:MM:SS`, the event time's common form) is parsed once by the
checks and its value is what lands in clean, so "plain" must mean exactly: a real date and
time of year 1 or later, written with every digit in its place. Thousands of near misses
(one or two characters changed, inserted or dropped) are compared with `datetime.strptime`
printed back by `isoformat`, which knows nothing of polars, after the trimming of spaces at
either end that the rules apply to every value but text.
"""

from __future__ import annotations

import random
from datetime import date, datetime

import polars as pl

from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.clean.rules import NORMALISED, VALID, WALL, RuleEngine
from analytics_pipelines.lib.tables import FILE_ID, LINE

SEEDS = [
    "2024-05-01 10:00:00",
    "2024-02-29 23:59:59",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59",
    "1999-12-31 23:50:00",
]
ALPHABET = "0123456789- :T+.Z\u0660a"


def _near_misses(seeds: list[str], count: int) -> list[str]:
    rng = random.Random(21)
    values = set(seeds)
    for _ in range(count):
        chars = list(rng.choice(seeds))
        for _ in range(rng.choice((1, 1, 2))):
            place = rng.randrange(len(chars))
            edit = rng.random()
            if edit < 0.6:
                chars[place] = rng.choice(ALPHABET)
            elif edit < 0.8:
                chars.insert(place, rng.choice(ALPHABET))
            elif len(chars) > 1:
                del chars[place]
        values.add("".join(chars))
    return sorted(values)


def _python_wall(text: str) -> bool:
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").isoformat(sep=" ") == text
    except ValueError:
        return False


def _python_date(text: str) -> bool:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date().isoformat() == text
    except ValueError:
        return False


def _source() -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": "t_time_text",
            "value_chain": "testing",
            "landing_prefix": "landing/t_time_text",
            "format": "csv",
            "columns": [
                {"name": "id", "type": "string"},
                {"name": "at", "type": "timestamp"},
                {"name": "day", "type": "date"},
            ],
            "primary_key": ["id"],
            "event_time": "at",
            "timezone": "Europe/Berlin",
        }
    )


def _checked(at: list[str], day: list[str]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"id": [str(i) for i in range(len(at))], "at": at, "day": day},
        schema={"id": pl.String, "at": pl.String, "day": pl.String},
    ).with_columns(
        pl.lit(1, pl.Int64).alias(FILE_ID), pl.int_range(pl.len(), dtype=pl.Int64).alias(LINE)
    )
    return RuleEngine(_source(), ["id", "at", "day"]).check(frame).staged


def test_a_plain_wall_time_is_exactly_what_python_reads_back() -> None:
    values = _near_misses(SEEDS, 6000)
    # The batch's first value decides the plain format: a canonical one goes first.
    at = [SEEDS[0], *values]
    staged = _checked(at, ["2024-05-02"] * len(at))
    plain = staged.get_column(WALL).is_not_null().to_list()
    expected = [_python_wall(text.strip(" ")) for text in at]
    wrong = [
        (text, got) for text, got, want in zip(at, plain, expected, strict=True) if got != want
    ]
    assert wrong == []
    assert 100 < sum(expected) < len(at) - 1000  # both kinds well represented
    walls = staged.filter(pl.col(WALL).is_not_null())
    assert walls.get_column(WALL).to_list() == [
        datetime.strptime(text.strip(" "), "%Y-%m-%d %H:%M:%S") for text in walls.get_column("at")
    ]


def test_a_date_is_valid_exactly_when_python_reads_it_back() -> None:
    values = _near_misses([s[:10] for s in SEEDS], 4000)
    staged = _checked([SEEDS[0]] * len(values), values)
    valid = staged.select(pl.col(f"{VALID}day").fill_null(False)).to_series().to_list()
    expected = [_python_date(text.strip(" ")) for text in values]
    wrong = [
        (text, got) for text, got, want in zip(values, valid, expected, strict=True) if got != want
    ]
    assert wrong == []
    assert 100 < sum(expected) < len(values) - 1000
    assert staged.get_column(f"{NORMALISED}day").to_list() == [
        text.strip(" ") or None for text in values
    ]
    assert date(1, 1, 1).isoformat() in values
