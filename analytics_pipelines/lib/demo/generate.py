"""Generate realistic landing files for the demo sources, with bad, duplicate and late rows.

Deterministic: every chunk draws from a generator seeded by (seed, source, file, chunk) and no
wall-clock time is read, so the same arguments always give byte-identical files.
"""

from __future__ import annotations

import math
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.catalog.models import SourceFile
from analytics_pipelines.lib.demo.customers import CustomersProfile
from analytics_pipelines.lib.demo.defaults import DEFAULT_SHARES, DEFAULT_START, Shares
from analytics_pipelines.lib.demo.errors import DemoError
from analytics_pipelines.lib.demo.inventory import InventoryProfile
from analytics_pipelines.lib.demo.orders import OrdersProfile
from analytics_pipelines.lib.demo.profile import Profile
from analytics_pipelines.lib.demo.tickets import TicketsProfile
from analytics_pipelines.lib.demo.timeline import EventClock, FileSpan, split_days
from analytics_pipelines.lib.demo.writers import writer_for
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.storage import ObjectStore

CHUNK_ROWS = 200_000
# Rows of one file kept to be re-sent by the next file: bounded whatever the file size.
CARRY_ROWS = 2_000
LATE_MIN_DAYS, LATE_MAX_DAYS = 1, 3
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}
PROFILES: dict[str, type[Profile]] = {
    "orders": OrdersProfile,
    "customers": CustomersProfile,
    "inventory_movements": InventoryProfile,
    "support_tickets": TicketsProfile,
}


@dataclass(frozen=True)
class FileStats:
    key: str
    rows: int
    bad: int
    duplicates: int
    late: int


@dataclass
class SourceSummary:
    source: str
    prefix: str
    files: list[FileStats] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bad(self) -> int:
        return sum(f.bad for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def late(self) -> int:
        return sum(f.late for f in self.files)


@dataclass
class _Progress:
    """What one source's generation carries from file to file."""

    profile: Profile
    source_key: int
    seed: int
    next_id: int = 1
    carry: pl.DataFrame | None = None


def _rng(progress: _Progress, file_index: int, chunk_index: int) -> np.random.Generator:
    return np.random.default_rng([progress.seed, progress.source_key, file_index, chunk_index])


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _split_weighted(total: int, weights: list[float]) -> list[int]:
    """`total` in parts proportional to `weights`, largest remainders rounded up."""
    exact = np.array(weights) / sum(weights) * total
    parts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[: total - int(parts.sum())]] += 1
    return [int(p) for p in parts]


def _late_window(span: FileSpan, first_start_s: int) -> tuple[int, int] | None:
    """Where late events of this file fall: days before its own window, never before the data set."""
    if span.start_s <= first_start_s:
        return None
    low = max(first_start_s, span.start_s - LATE_MAX_DAYS * 86_400)
    high = max(first_start_s, span.start_s - LATE_MIN_DAYS * 86_400)
    if high <= low:
        high = span.start_s
    return low, high


def _write_file(
    progress: _Progress,
    stream: IO[bytes],
    key: str,
    span: FileSpan,
    rows: int,
    shares: Shares,
    first_start_s: int,
    clock: EventClock,
) -> FileStats:
    profile = progress.profile
    spec = profile.spec
    late_window = _late_window(span, first_start_s)
    writer = writer_for(
        spec.format, stream, profile.empty(), spec.reader.delimiter, spec.reader.quote
    )
    chunk_sizes = _split(rows, max(1, math.ceil(rows / CHUNK_ROWS)))
    totals = {"bad": 0, "duplicates": 0, "late": 0}
    for chunk, size in enumerate(chunk_sizes):
        rng = _rng(progress, span.index, chunk)
        low_q, high_q = chunk / len(chunk_sizes), (chunk + 1) / len(chunk_sizes)
        n_dup = round(size * shares.duplicate)
        carry = progress.carry if chunk == 0 else None
        n_cross = n_dup // 2 if carry is not None and carry.height else 0
        n_within = n_dup - n_cross
        n_late = round(size * shares.late) if late_window else 0
        late_low, late_high = late_window or (0, 1)
        n_fresh = size - n_dup - n_late
        if n_fresh <= 0:
            n_within = n_cross = n_late = 0
            n_fresh = size

        fresh, used = profile.build(
            rng,
            n_fresh,
            lambda count: clock.sorted_sample(rng, count, low_q, high_q),  # noqa: B023
            progress.next_id,
        )
        progress.next_id += used
        late, used = profile.build(
            rng,
            n_late,
            lambda count: np.sort(rng.integers(late_low, late_high, size=count)),  # noqa: B023
            progress.next_id,
        )
        progress.next_id += used
        base = pl.concat([fresh, late])
        keys = [np.arange(n_fresh, dtype=np.float64), rng.uniform(0, max(n_fresh, 1), n_late)]

        n_bad = round(base.height * shares.bad)
        bad_rows = rng.choice(base.height, size=n_bad, replace=False)
        base = profile.corrupt(base, rng, bad_rows)
        good = np.ones(base.height, dtype=bool)
        good[bad_rows] = False
        good_rows = np.flatnonzero(good)

        parts = [base]
        if n_within and good_rows.size:
            # A row repeated a little further down the same file, as exporters do on retries.
            source_rows = rng.choice(good_rows, size=n_within, replace=n_within > good_rows.size)
            parts.append(base[source_rows])
            keys.append(np.concatenate(keys)[source_rows] + rng.uniform(0.5, 50.0, n_within))
        else:
            n_within = 0
        if n_cross and carry is not None:
            picked = rng.choice(carry.height, size=n_cross, replace=n_cross > carry.height)
            parts.append(profile.revise(carry[picked]))
            keys.append(rng.uniform(0, max(n_fresh, 1), n_cross))
        order = np.argsort(np.concatenate(keys), kind="stable")
        writer.write(pl.concat(parts).gather(pl.Series(order)))

        totals["bad"] += n_bad
        totals["duplicates"] += n_within + n_cross
        totals["late"] += n_late
        if chunk == len(chunk_sizes) - 1:
            kept = rng.choice(good_rows, size=min(CARRY_ROWS, good_rows.size), replace=False)
            progress.carry = base[np.sort(kept)] if kept.size else None
    writer.close()
    return FileStats(key=key, rows=rows, **totals)


def profile_for(spec: SourceSpec) -> Profile:
    try:
        return PROFILES[spec.name](spec)
    except KeyError:
        raise DemoError(
            f"source {spec.name}: no demo generator (known: {', '.join(sorted(PROFILES))})"
        ) from None


def file_key(spec: SourceSpec, span: FileSpan, days: int, files: int) -> str:
    """`landing/orders/orders_2026-01-05.csv`, or with a part number when files are not days."""
    part = "" if files == days else f"_{span.index + 1:04d}"
    extension = EXTENSIONS[spec.format]
    return f"{spec.landing_prefix}{spec.name}_{span.first_day.isoformat()}{part}.{extension}"


def _check(rows: int, days: int, seed: int, files: int) -> None:
    if rows < 0:
        raise DemoError(f"rows must not be negative, got {rows}")
    if days < 1:
        raise DemoError(f"days must be at least 1, got {days}")
    if files < 1:
        raise DemoError(f"files per source must be at least 1, got {files}")
    if seed < 0:
        raise DemoError(f"seed must not be negative, got {seed}")


def generate_source(
    store: ObjectStore,
    spec: SourceSpec,
    *,
    rows: int,
    days: int,
    seed: int,
    start: date = DEFAULT_START,
    files_per_source: int | None = None,
    shares: Shares = DEFAULT_SHARES,
    day_activity: Mapping[date, float] | None = None,
) -> SourceSummary:
    """Write `rows` rows of `spec` split into files under its landing prefix in `store`.

    The first file has no late rows and nothing to re-send; every later file repeats some
    primary keys of the file before it and carries events dated up to three days earlier.
    `day_activity` makes local days busier or quieter (factor, 1 for a day not named): each
    file gets rows in proportion to its days' activity.
    """
    files = files_per_source or days
    _check(rows, days, seed, files)
    progress = _Progress(profile_for(spec), zlib.crc32(spec.name.encode()), seed)
    spans = split_days(start, days, files, spec.timezone)
    summary = SourceSummary(source=spec.name, prefix=spec.landing_prefix)
    clocks = [EventClock(s.start_s, s.end_s, spec.timezone, day_activity) for s in spans]
    counts = (
        _split_weighted(rows, [c.weight for c in clocks]) if day_activity else _split(rows, files)
    )
    for span, file_rows, clock in zip(spans, counts, clocks, strict=True):
        key = file_key(spec, span, days, files)
        # A spool file keeps memory bounded for large files and gives the store a seekable stream.
        with tempfile.TemporaryFile() as spool:
            stats = _write_file(
                progress, spool, key, span, file_rows, shares, spans[0].start_s, clock
            )
            spool.seek(0)
            store.write(key, spool)
        summary.files.append(stats)
    return summary


def generate_demo(
    store: ObjectStore,
    sources: Iterable[SourceSpec],
    *,
    rows: int,
    days: int,
    seed: int,
    start: date = DEFAULT_START,
    files_per_source: int | None = None,
    shares: Shares = DEFAULT_SHARES,
    day_activity: Mapping[date, float] | None = None,
) -> list[SourceSummary]:
    """Generate every given source (`rows` rows each); DemoError names a source it cannot generate."""
    specs = list(sources)
    for spec in specs:
        profile_for(spec)
    return [
        generate_source(
            store,
            spec,
            rows=rows,
            days=days,
            seed=seed,
            start=start,
            files_per_source=files_per_source,
            shares=shares,
            day_activity=day_activity,
        )
        for spec in specs
    ]


def demo_source_spec(name: str, catalog_dir: Path = DEMO_CATALOG_DIR) -> SourceSpec:
    """One source as declared in the catalog's `sources/*.yaml` (KPIs are not loaded)."""
    import yaml

    for path in sorted((catalog_dir / "sources").glob("*.y*ml")):
        declared = SourceFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        for spec in declared.sources:
            if spec.name == name:
                return spec
    raise DemoError(f"source {name} is not declared in {catalog_dir}")


def generate_orders_csv(
    path_or_stream: str | Path | IO[bytes],
    rows: int,
    seed: int,
    start: date = DEFAULT_START,
    days: int = 30,
    bad_share: float = 0.0,
    duplicate_share: float = 0.0,
    spec: SourceSpec | None = None,
) -> int:
    """Write one orders CSV (header + `rows` rows over `days` days) in bounded memory; return rows.

    For benchmarks and tests: no late rows, and duplicates/bad rows only if asked.
    """
    _check(rows, days, seed, 1)
    spec = spec or demo_source_spec("orders")
    progress = _Progress(OrdersProfile(spec), zlib.crc32(b"orders-single-file"), seed)
    span = split_days(start, days, 1, spec.timezone)[0]
    shares = Shares(bad=bad_share, duplicate=duplicate_share, late=0.0)
    clock = EventClock(span.start_s, span.end_s, spec.timezone)
    if isinstance(path_or_stream, str | Path):
        with open(path_or_stream, "wb") as stream:
            stats = _write_file(
                progress, stream, str(path_or_stream), span, rows, shares, span.start_s, clock
            )
    else:
        stats = _write_file(
            progress, path_or_stream, "stream", span, rows, shares, span.start_s, clock
        )
    return stats.rows
