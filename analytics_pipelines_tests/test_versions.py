"""Versions of a key: a rollback (A, B, A) and a correction give the older rows back.

Every scenario runs the real loader against both stores, the SQL clean stage or the clean while
loading path, the touched periods the KPI invalidation reads, and the KPI engine; the expected
clean rows and KPI values are computed from the CSV texts with pandas.
"""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from analytics_pipelines.lib.catalog import ColumnSpec, SourceSpec
from analytics_pipelines.lib.clean import FusedClean, clean_pending
from analytics_pipelines.lib.clean.quality import reconcile
from analytics_pipelines.lib.ingest import LoadReport, load_pending
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.invalidation import SensorCursor, touched_dates
from analytics_pipelines.lib.kpi.plan import KpiPlan, plan_kpi
from analytics_pipelines.lib.storage import ObjectStore
from analytics_pipelines.lib.tables import clean_table, kpi_values, ledger
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_clean_process import ledger_counts
from analytics_pipelines_tests.test_kpi_support import make_catalog, make_kpi, unique

ZONE = "Europe/Berlin"
HEADER = "order_id,ordered_at,region,amount\n"


def make_source() -> SourceSpec:
    name = unique("t_ver")
    return SourceSpec(
        name=name,
        value_chain="tests",
        landing_prefix=f"landing/{name}",
        format="csv",
        columns=[
            ColumnSpec(name="order_id", required=True),
            ColumnSpec(name="ordered_at", type="timestamp", required=True),
            ColumnSpec(name="region", required=True, allowed_values=["north", "south"]),
            ColumnSpec(name="amount", type="decimal", min=0),
        ],
        primary_key=["order_id"],
        event_time="ordered_at",
        timezone=ZONE,
    )


class Pipeline:
    """One source with a revenue KPI, driven like the landing sensor's runs and the KPI sensor."""

    def __init__(self, warehouse: Warehouse, store: ObjectStore, fused: bool) -> None:
        self.warehouse = warehouse
        self.store = store
        self.fused = fused
        self.source = make_source()
        kpi = make_kpi(
            unique("revenue"),
            self.source.name,
            measure="sum(amount)",
            dimensions=["region"],
            timezone=ZONE,
        )
        self.plan: KpiPlan = plan_kpi(make_catalog([self.source], [kpi]), kpi.name)
        self.cursor = SensorCursor()

    def deliver(self, name: str, text: str) -> tuple[LoadReport, set[dt.date]]:
        """Drop a file, load and clean it, refresh the KPI days the load touched."""
        self.store.write(f"{self.source.landing_prefix}/{name}", text.encode())
        report = load_pending(
            self.source,
            self.store,
            self.warehouse,
            clean_while_loading=FusedClean if self.fused else None,
        )
        clean_pending(self.warehouse, self.source)
        with self.warehouse.connect() as conn:
            touched = touched_dates(conn, {self.source.name: {ZONE}}, self.cursor)
        self.cursor = self.cursor.advanced(touched.upto)
        days = touched.dates.get((self.source.name, ZONE), set())
        if days:
            refresh_kpi(self.warehouse, self.plan, min(days), max(days))
        return report, days

    def clean_rows(self) -> list[tuple[Any, ...]]:
        table = clean_table(self.source)
        with self.warehouse.connect() as conn:
            rows = conn.execute(
                sa.select(
                    table.c.order_id, table.c.ordered_at, table.c.region, table.c.amount
                ).order_by(table.c.order_id)
            )
            return [(r[0], r[1].astimezone(dt.UTC), r[2], r[3]) for r in rows]

    def day_totals(self) -> dict[dt.date, Decimal]:
        """The KPI's stored day values, total across regions."""
        with self.warehouse.connect() as conn:
            rows = conn.execute(
                sa.select(kpi_values.c.period_start, kpi_values.c.value).where(
                    kpi_values.c.kpi == self.plan.name,
                    kpi_values.c.grain == "day",
                    kpi_values.c.dimensions == sa.cast(sa.literal("{}"), postgresql.JSONB),
                )
            )
            return {
                pd.Timestamp(r[0]).tz_convert(ZONE).date(): r[1] for r in rows if r[1] is not None
            }

    def versions(self) -> list[tuple[str, str, int | None]]:
        """(file name, status, superseded_by) of every ledger row, in delivery order."""
        with self.warehouse.connect() as conn:
            rows = conn.execute(
                sa.select(ledger.c.object_key, ledger.c.status, ledger.c.superseded_by)
                .where(ledger.c.source == self.source.name)
                .order_by(ledger.c.file_id)
            )
            return [(r[0].rsplit("/", 1)[-1], r[1], r[2]) for r in rows]

    def counts(self, file_id: int) -> tuple[int, int, int, int]:
        """(raw, clean, quarantined, replaced) rows of one version, as the ledger says."""
        return ledger_counts(self.warehouse, file_id)

    def assert_reconciles(self, files: int, raw: int, clean: int, quarantined: int) -> None:
        result = reconcile(self.warehouse, self.source)
        assert result.problems == []
        assert (result.files, result.raw_rows, result.clean_rows, result.quarantined_rows) == (
            files,
            raw,
            clean,
            quarantined,
        )
        assert result.raw_rows == result.clean_rows + result.quarantined_rows + result.replaced_rows


# -- the independent computation ----------------------------------------------------------------


def frame_of(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def passing(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the catalog above lets through (region allowed, amount a number >= 0)."""
    amount = pd.to_numeric(frame["amount"], errors="coerce")
    return frame[frame["region"].isin(["north", "south"]) & (amount >= 0)]


def expected_clean(current: list[str]) -> list[tuple[Any, ...]]:
    """Current versions' texts in delivery order: the newest file wins, then the last line."""
    frames = [passing(frame_of(text)) for text in current]
    rows = pd.concat(frames).drop_duplicates("order_id", keep="last").sort_values("order_id")
    return [
        (
            r.order_id,
            pd.Timestamp(r.ordered_at).tz_localize(ZONE).tz_convert("UTC").to_pydatetime(),
            r.region,
            Decimal(r.amount),
        )
        for r in rows.itertuples()
    ]


def expected_day_totals(rows: list[tuple[Any, ...]]) -> dict[dt.date, Decimal]:
    totals: dict[dt.date, Decimal] = {}
    for _, at, _, amount in rows:
        day = pd.Timestamp(at).tz_convert(ZONE).date()
        totals[day] = totals.get(day, Decimal(0)) + amount
    return totals


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


# -- A, B, A ------------------------------------------------------------------------------------

A = HEADER + (
    "O-1,2024-03-01 10:00,north,10.50\n"
    "O-2,2024-03-01 23:30,south,4.25\n"
    "O-3,2024-03-02 09:00,north,7\n"
    "O-4,2024-03-02 09:30,west,1\n"  # quarantined: region not allowed
)
B = HEADER + ("O-1,2024-03-01 10:00,north,99\nO-5,2024-03-05 12:00,south,3\n")


@pytest.mark.parametrize("fused", [False, True], ids=["sql", "while-loading"])
def test_a_rollback_a_b_a_makes_a_current_again(
    warehouse: Warehouse, store: ObjectStore, fused: bool
) -> None:
    pipe = Pipeline(warehouse, store, fused)

    [a1] = pipe.deliver("orders.csv", A)[0].outcomes
    assert pipe.clean_rows() == expected_clean([A])
    assert pipe.day_totals() == expected_day_totals(expected_clean([A]))
    assert pipe.counts(a1.file_id) == (4, 3, 1, 0)
    pipe.assert_reconciles(files=1, raw=4, clean=3, quarantined=1)

    report, _ = pipe.deliver("orders.csv", B)
    [b] = report.outcomes
    assert b.superseded == [a1.file_id]
    assert pipe.clean_rows() == expected_clean([B])
    assert pipe.day_totals() == expected_day_totals(expected_clean([B]))
    pipe.assert_reconciles(files=2, raw=6, clean=2, quarantined=1)

    report, days = pipe.deliver("orders.csv", A)
    [a2] = report.outcomes
    assert (a2.status, a2.superseded, a2.rows) == ("loaded", [b.file_id], 4)
    assert pipe.versions() == [
        ("orders.csv", "superseded", b.file_id),
        ("orders.csv", "superseded", a2.file_id),
        ("orders.csv", "loaded", None),
    ]
    assert pipe.clean_rows() == expected_clean([A])
    # B's days and A's days are refreshed: 5 March has no revenue any more.
    assert days >= {day("2024-03-01"), day("2024-03-02"), day("2024-03-05")}
    assert pipe.day_totals() == expected_day_totals(expected_clean([A]))
    assert pipe.day_totals()[day("2024-03-01")] == Decimal("10.50") + Decimal("4.25")
    assert pipe.counts(a2.file_id) == (4, 3, 1, 0)
    assert pipe.counts(b.file_id) == (2, 0, 0, 2)
    # Superseded versions keep their history; the current one holds A's rows.
    pipe.assert_reconciles(files=3, raw=10, clean=3, quarantined=2)


# -- a correction gives back the rows its predecessor had displaced -----------------------------

X = HEADER + (
    "K-1,2024-04-10 08:00,north,4\n"
    "K-2,2024-04-10 09:00,south,7\n"
    "K-1,2024-04-10 11:00,north,5\n"  # the last line of K-1 in this file wins
)
Y = HEADER + (
    "K-1,2024-04-12 10:00,south,100\n"  # a later file takes K-1, on another day
    "K-3,2024-04-10 12:00,north,1\n"
)
Y_CORRECTED = HEADER + "K-3,2024-04-10 12:00,north,2\n"


@pytest.mark.parametrize("fused", [False, True], ids=["sql", "while-loading"])
def test_a_correction_reinstates_the_rows_its_version_had_displaced(
    warehouse: Warehouse, store: ObjectStore, fused: bool
) -> None:
    pipe = Pipeline(warehouse, store, fused)

    [x] = pipe.deliver("x.csv", X)[0].outcomes
    assert x.cleaned is fused
    assert pipe.counts(x.file_id) == (3, 2, 0, 1)
    pipe.assert_reconciles(files=1, raw=3, clean=2, quarantined=0)

    [y] = pipe.deliver("y.csv", Y)[0].outcomes
    assert pipe.clean_rows() == expected_clean([X, Y])
    assert pipe.counts(x.file_id) == (3, 1, 0, 2)
    assert pipe.day_totals() == expected_day_totals(expected_clean([X, Y]))
    pipe.assert_reconciles(files=2, raw=5, clean=3, quarantined=0)

    report, days = pipe.deliver("y.csv", Y_CORRECTED)
    [y2] = report.outcomes
    assert y2.superseded == [y.file_id]
    rows = pipe.clean_rows()
    assert rows == expected_clean([X, Y_CORRECTED])
    # X's last line for K-1 is back in clean.
    assert ("K-1", Decimal("5")) in {(r[0], r[3]) for r in rows}
    # Both the removed row's day (12 April) and the reinstated row's (10 April) are refreshed.
    assert days >= {day("2024-04-10"), day("2024-04-12")}
    totals = pipe.day_totals()
    assert totals == expected_day_totals(expected_clean([X, Y_CORRECTED]))
    assert totals == {day("2024-04-10"): Decimal(5 + 7 + 2)}
    assert pipe.counts(x.file_id) == (3, 2, 0, 1)
    assert pipe.counts(y.file_id) == (2, 0, 0, 2)
    assert pipe.counts(y2.file_id) == (1, 1, 0, 0)
    pipe.assert_reconciles(files=3, raw=6, clean=3, quarantined=0)


W = HEADER + "K-1,2024-04-11 08:00,north,6\n"


def test_the_newest_current_version_wins_among_the_displaced(
    warehouse: Warehouse, local_store: ObjectStore
) -> None:
    pipe = Pipeline(warehouse, local_store, fused=False)
    [x] = pipe.deliver("x.csv", X)[0].outcomes
    [w] = pipe.deliver("w.csv", W)[0].outcomes
    pipe.deliver("y.csv", Y)
    assert pipe.counts(w.file_id) == (1, 0, 0, 1)

    pipe.deliver("y.csv", Y_CORRECTED)

    assert pipe.clean_rows() == expected_clean([X, W, Y_CORRECTED])
    assert pipe.day_totals() == expected_day_totals(expected_clean([X, W, Y_CORRECTED]))
    assert pipe.counts(x.file_id) == (3, 1, 0, 2)
    assert pipe.counts(w.file_id) == (1, 1, 0, 0)
    pipe.assert_reconciles(files=4, raw=7, clean=3, quarantined=0)


def test_reconciliation_covers_a_loaded_version_not_cleaned_yet_and_duplicates(
    warehouse: Warehouse, local_store: ObjectStore
) -> None:
    pipe = Pipeline(warehouse, local_store, fused=False)
    [x] = pipe.deliver("x.csv", X)[0].outcomes
    pipe.store.write(f"{pipe.source.landing_prefix}/x_copy.csv", X.encode())
    pipe.store.write(f"{pipe.source.landing_prefix}/y.csv", Y.encode())
    report = load_pending(pipe.source, pipe.store, warehouse)
    copy, y = sorted(report.outcomes, key=lambda o: o.key)

    result = reconcile(warehouse, pipe.source)

    assert copy.status == "duplicate"
    assert result.problems == [
        f"file {y.file_id} ({y.key}): loaded but not cleaned yet: its 2 raw rows are in"
        f" neither clean.{pipe.source.name} nor quarantine"
    ]
    clean_pending(warehouse, pipe.source)
    assert pipe.counts(x.file_id) == (3, 1, 0, 2)
    # x, its duplicate (no rows of its own) and y.
    pipe.assert_reconciles(files=3, raw=5, clean=3, quarantined=0)


def test_a_rollback_after_a_failed_version_settles_the_failure(
    warehouse: Warehouse, store: ObjectStore
) -> None:
    pipe = Pipeline(warehouse, store, fused=False)
    [a1] = pipe.deliver("orders.csv", A)[0].outcomes
    [b] = pipe.deliver("orders.csv", HEADER + "O-1,2024-03-01 10:00,north,1,extra\n")[0].outcomes
    assert b.status == "failed"

    [a2] = pipe.deliver("orders.csv", A)[0].outcomes

    # A's rows never left: the key is back at them, and B's failure is no longer open.
    assert (a2.status, a2.duplicate_of) == ("duplicate", a1.file_id)
    assert pipe.versions() == [
        ("orders.csv", "loaded", None),
        ("orders.csv", "superseded", a2.file_id),
        ("orders.csv", "duplicate", None),
    ]
    assert pipe.clean_rows() == expected_clean([A])
    assert pipe.day_totals() == expected_day_totals(expected_clean([A]))
    # The failed version counts with no rows.
    pipe.assert_reconciles(files=3, raw=4, clean=3, quarantined=1)


def test_a_correction_that_duplicates_another_file_reinstates_too(
    warehouse: Warehouse, local_store: ObjectStore
) -> None:
    pipe = Pipeline(warehouse, local_store, fused=True)
    [x] = pipe.deliver("x.csv", X)[0].outcomes
    [z] = pipe.deliver("z.csv", Y_CORRECTED)[0].outcomes
    [y] = pipe.deliver("y.csv", Y)[0].outcomes
    assert pipe.counts(z.file_id) == (1, 0, 0, 1)

    # y.csv is corrected to the content z.csv already delivered: no rows of its own.
    [y2] = pipe.deliver("y.csv", Y_CORRECTED)[0].outcomes

    assert (y2.status, y2.duplicate_of, y2.superseded) == ("duplicate", z.file_id, [y.file_id])
    assert pipe.clean_rows() == expected_clean([X, Y_CORRECTED])
    assert pipe.day_totals() == {day("2024-04-10"): Decimal(5 + 7 + 2)}
    assert pipe.counts(x.file_id) == (3, 2, 0, 1)
    assert pipe.counts(z.file_id) == (1, 1, 0, 0)
    pipe.assert_reconciles(files=4, raw=6, clean=3, quarantined=0)
