"""What a demo source generator provides: realistic rows, rule-breaking variants, re-sent versions."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import polars as pl

from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.demo.errors import DemoError

# Gives `count` sorted UTC epoch seconds for the events of one chunk.
TimeSampler = Callable[[int], np.ndarray]


@dataclass(frozen=True)
class Fault:
    """One way a row breaks a declared rule: the column and the value that breaks it."""

    rule: str  # wrong_type | not_allowed | out_of_range | pattern | missing
    column: str
    value: pl.Expr


class Profile(abc.ABC):
    """Generates one source's rows in the column order the catalog declares."""

    format: ClassVar[str]

    def __init__(self, spec: SourceSpec) -> None:
        if spec.format != self.format:
            raise DemoError(
                f"source {spec.name}: the demo generator writes {self.format}, "
                f"the catalog declares {spec.format}"
            )
        missing = [c.name for c in spec.columns if c.name not in self.schema]
        if missing:
            raise DemoError(
                f"source {spec.name}: the demo generator has no values for column(s) "
                f"{', '.join(missing)}"
            )
        self.spec = spec
        self.columns = [c.name for c in spec.columns]

    @property
    @abc.abstractmethod
    def schema(self) -> Mapping[str, pl.DataType]:
        """Every column this profile can produce, with the type it is written as."""

    @abc.abstractmethod
    def _build(
        self, rng: np.random.Generator, count: int, times: TimeSampler, first_id: int
    ) -> tuple[pl.DataFrame, int]:
        """`count` fresh rows (count > 0) and how many identifiers they used."""

    @abc.abstractmethod
    def faults(self) -> list[Fault]:
        """The rule-breaking variants bad rows are drawn from."""

    def revise(self, frame: pl.DataFrame) -> pl.DataFrame:
        """A row as it is re-sent in a later file (same primary key); unchanged by default."""
        return frame

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema={name: self.schema[name] for name in self.columns})

    def build(
        self, rng: np.random.Generator, count: int, times: TimeSampler, first_id: int
    ) -> tuple[pl.DataFrame, int]:
        if count <= 0:
            return self.empty(), 0
        frame, used = self._build(rng, count, times, first_id)
        return frame.select(self.columns), used

    def allowed(self, column: str) -> list[str]:
        values = self.spec.column(column).allowed_values
        if not values:
            raise DemoError(f"source {self.spec.name}: column {column} declares no allowed values")
        return values

    def choose(
        self, rng: np.random.Generator, column: str, weights: Mapping[str, float], count: int
    ) -> pl.Series:
        """Allowed values of `column`, drawn with the given weights (values not weighted get 1)."""
        values = self.allowed(column)
        p = np.array([weights.get(v, 1.0) for v in values], dtype=np.float64)
        picks = rng.choice(len(values), size=count, p=p / p.sum())
        return pl.Series(column, values, dtype=pl.String).gather(pl.Series(picks))

    def corrupt(
        self, frame: pl.DataFrame, rng: np.random.Generator, rows: np.ndarray
    ) -> pl.DataFrame:
        """Break one declared rule in each of `rows`, chosen among `faults()`."""
        faults = [f for f in self.faults() if f.column in self.columns]
        if rows.size == 0 or not faults:
            return frame
        kinds = rng.integers(len(faults), size=rows.size)
        by_column: dict[str, pl.Expr] = {}
        for kind, fault in enumerate(faults):
            mask = np.zeros(frame.height, dtype=bool)
            mask[rows[kinds == kind]] = True
            current = by_column.get(fault.column, pl.col(fault.column))
            by_column[fault.column] = (
                pl.when(pl.lit(pl.Series(mask))).then(fault.value).otherwise(current)
            )
        return frame.with_columns(
            expr.cast(frame.schema[name]).alias(name) for name, expr in by_column.items()
        )


def skewed(rng: np.random.Generator, count: int, population: int, power: float) -> np.ndarray:
    """1..population, small numbers far more frequent (a few big customers, best-selling items)."""
    return (population * rng.random(count) ** power).astype(np.int64) + 1


def unit_price_cents(sku: np.ndarray) -> np.ndarray:
    """A stable list price per product, so the same SKU costs the same in every file."""
    return 199 + (sku * 7919) % 24_800
