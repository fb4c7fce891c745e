"""Semi-additive KPIs (a stock level): per entity, the last (first) row of each period, then the
measure across entities, compared with pandas on generated movements around the spring DST day
of Europe/Berlin (2026-03-29, 23 hours long), with ties, gaps, a filter and late data."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from itertools import combinations
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import polars as pl
import pytest
from pydantic import ValidationError

from analytics_pipelines.lib.catalog import CatalogError, ColumnSpec, SourceSpec, load_catalog
from analytics_pipelines.lib.demo import Shares, demo_source_spec, generate_source
from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.plan import entity_columns, plan_kpi
from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_support import (
    UTC,
    assert_same_values,
    create_clean,
    insert_clean,
    make_catalog,
    make_kpi,
    make_source,
    pandas_period_start,
    stored_values,
    unique,
)

BERLIN = ZoneInfo("Europe/Berlin")
ZONE = "Europe/Berlin"
FIRST, LAST = dt.date(2026, 3, 23), dt.date(2026, 4, 5)  # Monday .. Sunday, two ISO weeks
GRAINS = ["hour", "day", "week", "month"]
PER = ["warehouse", "sku"]
STOCKED = [(w, s) for w in ("BER", "HAM", "MUC") for s in ("SKU-A", "SKU-B", "SKU-C")]
SPARSE = ("FRA", "SKU-D")  # moves on 24 and 26 March only: no row, no value elsewhere


def _source(
    name: str, *, primary_key: list[str] | None = None, event_type: str = "timestamp"
) -> SourceSpec:
    columns = [
        ColumnSpec(name="movement_id", type="string", required=True),
        ColumnSpec.model_validate({"name": "at", "type": event_type, "required": True}),
        ColumnSpec(name="warehouse", type="string", required=True),
        ColumnSpec(name="sku", type="string", required=True),
        ColumnSpec(name="kind", type="string", allowed_values=["receipt", "pick", "count"]),
        ColumnSpec(name="on_hand", type="integer", min=0),
    ]
    return SourceSpec.model_validate(
        {
            **make_source(name, timezone=ZONE).model_dump(),
            "columns": columns,
            "primary_key": primary_key or ["movement_id"],
        }
    )


def _local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), BERLIN).astimezone(UTC)


def _movement(ident: str, at: dt.datetime, entity: tuple[str, str], kind: str, on_hand: int):
    return {
        "movement_id": ident,
        "at": at,
        "warehouse": entity[0],
        "sku": entity[1],
        "kind": kind,
        "on_hand": on_hand,
    }


def _rows() -> list[dict[str, Any]]:
    rng = np.random.default_rng(2026)
    rows = []
    day = FIRST
    while day <= LAST:
        # Every instant of the local day, whatever its length (23 hours on 29 March).
        start, end = _local(day, 0), _local(day + dt.timedelta(days=1), 0)
        seconds = int((end - start).total_seconds())
        for w, s in STOCKED:
            for _ in range(int(rng.integers(0, 4))):  # some entity-days have no row at all
                at = start + dt.timedelta(seconds=int(rng.integers(0, seconds)))
                kind = str(rng.choice(["receipt", "pick", "count"], p=[0.3, 0.5, 0.2]))
                rows.append(
                    _movement(f"M-{len(rows):05d}", at, (w, s), kind, int(rng.integers(0, 500)))
                )
        day += dt.timedelta(days=1)
    rows += [
        # Around the DST change: 00:30 local is still 28 March in UTC; 01:30 is +01:00,
        # 03:30 already +02:00.
        _movement("D-1", _local(dt.date(2026, 3, 29), 0, 30), ("BER", "SKU-A"), "count", 7),
        _movement("D-2", _local(dt.date(2026, 3, 29), 1, 30), ("BER", "SKU-A"), "pick", 6),
        _movement("D-3", _local(dt.date(2026, 3, 29), 3, 30), ("BER", "SKU-A"), "pick", 5),
        # Two movements of one entity at the same instant, the latest and the earliest of
        # their day: `last` takes the greater movement_id, `first` the smaller.
        _movement("T-1", _local(dt.date(2026, 3, 27), 23, 59), ("HAM", "SKU-A"), "pick", 111),
        _movement("T-2", _local(dt.date(2026, 3, 27), 23, 59), ("HAM", "SKU-A"), "pick", 222),
        _movement("T-3", _local(dt.date(2026, 3, 25), 0, 0), ("HAM", "SKU-B"), "receipt", 333),
        _movement("T-4", _local(dt.date(2026, 3, 25), 0, 0), ("HAM", "SKU-B"), "receipt", 444),
        _movement("S-1", _local(dt.date(2026, 3, 24), 9), SPARSE, "receipt", 40),
        _movement("S-2", _local(dt.date(2026, 3, 26), 10), SPARSE, "pick", 30),
        _movement("S-3", _local(dt.date(2026, 3, 26), 15), SPARSE, "pick", 25),
    ]
    return rows


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame


def expected(
    frame: pd.DataFrame,
    *,
    take: str,
    how: str,
    dimensions: list[str],
    passes: Any = None,
    grains: list[str] = GRAINS,
) -> dict[tuple[str, dt.datetime, frozenset[tuple[str, Any]]], float | None]:
    """pandas: per period and entity the last (first) row that passes the filter, ties by the
    greater (smaller) movement_id; a cell per dimension subset wherever the source has rows."""
    result: dict[tuple[str, dt.datetime, frozenset[tuple[str, Any]]], float | None] = {}
    for grain in grains:
        data = frame.assign(
            _period=pandas_period_start(frame["at"], grain, ZONE),
            _passes=passes(frame) if passes is not None else True,
        )
        # Sorted so that the wanted row of each entity is the last of its group.
        if take == "last":
            data = data.sort_values(["_passes", "at", "movement_id"])
        else:
            data = data.sort_values(
                ["_passes", "at", "movement_id"], ascending=[True, False, False]
            )
        picked = data.groupby(["_period", *PER]).tail(1)
        for size in range(len(dimensions) + 1):
            for subset in combinations(dimensions, size):
                for key, group in picked.groupby(["_period", *subset]):
                    key = key if isinstance(key, tuple) else (key,)
                    values = group.loc[group["_passes"], "on_hand"]
                    value = values.sum() if how == "sum" else values.mean()
                    dims = frozenset(zip(subset, key[1:], strict=True))
                    start = key[0].to_pydatetime().astimezone(UTC)
                    result[(grain, start, dims)] = None if pd.isna(value) else float(value)
    return result


def _counted(frame: pd.DataFrame) -> pd.Series:
    return frame["kind"] == "count"


# With hours the finest picks are per hour, else per day; coarser periods pick from those.
DAYS_UP = ["day", "week", "month"]
CASES: dict[str, dict[str, Any]] = {
    "last_sum": {"take": "last", "how": "sum", "dimensions": ["warehouse", "sku"]},
    "first_sum": {"take": "first", "how": "sum", "dimensions": ["warehouse"], "grains": DAYS_UP},
    "last_avg": {"take": "last", "how": "avg", "dimensions": ["warehouse"]},
    "counted": {
        "take": "last",
        "how": "sum",
        "dimensions": ["warehouse"],
        "passes": _counted,
        "grains": DAYS_UP,
    },
}
FILTERS = {"counted": "kind = 'count'"}


@pytest.fixture
def stocks(warehouse: Warehouse) -> dict[str, Any]:
    source = _source(unique("stock_moves"))
    rows = _rows()
    create_clean(warehouse, source, rows)
    kpis = {
        label: make_kpi(
            unique(f"stock_{label}"),
            source.name,
            measure=f"{case['how']}(on_hand)",
            filter=FILTERS.get(label),
            semi_additive={"take": case["take"], "per": PER},
            dimensions=case["dimensions"],
            grains=case.get("grains", GRAINS),
            timezone=ZONE,
        )
        for label, case in CASES.items()
    }
    catalog = make_catalog([source], kpis.values())
    plans = {label: plan_kpi(catalog, kpi.name) for label, kpi in kpis.items()}
    for plan in plans.values():
        refresh_kpi(warehouse, plan, FIRST, LAST)
    return {"source": source, "rows": rows, "plans": plans}


def _stored(warehouse: Warehouse, stocks: dict[str, Any], label: str) -> dict[Any, Any]:
    return stored_values(warehouse, stocks["plans"][label].name)


def test_values_match_pandas_for_every_grain_and_dimension_subset(
    warehouse: Warehouse, stocks: dict[str, Any]
) -> None:
    frame = _frame(stocks["rows"])
    for label, case in CASES.items():
        assert_same_values(_stored(warehouse, stocks, label), expected(frame, **case), label)


def _day(day: dt.date) -> dt.datetime:
    return _local(day, 0)


def test_the_cells_a_user_reads(warehouse: Warehouse, stocks: dict[str, Any]) -> None:
    last = _stored(warehouse, stocks, "last_sum")
    first = _stored(warehouse, stocks, "first_sum")
    ham_a = frozenset({("warehouse", "HAM"), ("sku", "SKU-A")})
    ham_b = frozenset({("warehouse", "HAM"), ("sku", "SKU-B")})
    ber_a = frozenset({("warehouse", "BER"), ("sku", "SKU-A")})
    sparse = frozenset({("warehouse", "FRA"), ("sku", "SKU-D")})
    # The tie at 23:59 goes to the greater movement_id, the tie at 00:00 (for first) to the smaller.
    assert last[("day", _day(dt.date(2026, 3, 27)), ham_a)] == 222
    ham_25th = [
        r
        for r in stocks["rows"]
        if r["warehouse"] == "HAM" and r["at"].astimezone(BERLIN).date() == dt.date(2026, 3, 25)
    ]
    firsts = {
        sku: min(
            (r for r in ham_25th if r["sku"] == sku), key=lambda r: (r["at"], r["movement_id"])
        )
        for sku in {r["sku"] for r in ham_25th}
    }
    assert firsts["SKU-B"]["movement_id"] == "T-3"
    ham = frozenset({("warehouse", "HAM")})
    assert first[("day", _day(dt.date(2026, 3, 25)), ham)] == sum(
        r["on_hand"] for r in firsts.values()
    )
    assert (
        last[("day", _day(dt.date(2026, 3, 25)), ham_b)]
        == max(
            (r for r in ham_25th if r["sku"] == "SKU-B"), key=lambda r: (r["at"], r["movement_id"])
        )["on_hand"]
    )
    # The DST day starts at 23:00 UTC on the 28th and ends at 22:00 UTC on the 29th.
    dst_rows = [
        r
        for r in stocks["rows"]
        if (r["warehouse"], r["sku"]) == ("BER", "SKU-A")
        and _day(dt.date(2026, 3, 29)) <= r["at"] < _day(dt.date(2026, 3, 30))
    ]
    assert {"D-1", "D-2", "D-3"} <= {r["movement_id"] for r in dst_rows}
    assert (
        last[("day", _day(dt.date(2026, 3, 29)), ber_a)]
        == max(dst_rows, key=lambda r: (r["at"], r["movement_id"]))["on_hand"]
    )
    # Not carried forward: the sparse entity has values on its two days only; its week is the
    # last of the 26th (S-3), its first the receipt of the 24th (S-1).
    sparse_days = sorted(start for grain, start, dims in last if grain == "day" and dims == sparse)
    assert sparse_days == [_day(dt.date(2026, 3, 24)), _day(dt.date(2026, 3, 26))]
    assert last[("week", _day(FIRST), sparse)] == 25
    assert last[("month", _day(dt.date(2026, 3, 1)), sparse)] == 25
    assert first[("week", _day(FIRST), frozenset({("warehouse", "FRA")}))] == 40
    # A week's stock is the sum of each entity's last row of the week, wherever in it that was.
    week_entities = {
        dims: value
        for (grain, start, dims), value in last.items()
        if grain == "week" and start == _day(FIRST) and len(dims) == 2
    }
    total = last[("week", _day(FIRST), frozenset())]
    week_1 = [r for r in stocks["rows"] if _day(FIRST) <= r["at"] < _day(dt.date(2026, 3, 30))]
    last_rows = {
        (r["warehouse"], r["sku"]): r
        for r in sorted(week_1, key=lambda r: (r["at"], r["movement_id"]))
    }
    assert len({r["at"].astimezone(BERLIN).date() for r in last_rows.values()}) >= 3
    assert total == sum(r["on_hand"] for r in last_rows.values()) == sum(week_entities.values())
    assert total != sum(
        value for (g, s, d), value in last.items() if g == "day" and len(d) == 2 and
        s == _day(dt.date(2026, 3, 29))
    )  # fmt: skip


def test_the_filter_applies_before_the_pick_and_an_empty_cell_is_zero(
    warehouse: Warehouse, stocks: dict[str, Any]
) -> None:
    counted = _stored(warehouse, stocks, "counted")
    frame = _frame(stocks["rows"])
    days = pandas_period_start(frame["at"], "day", ZONE)
    fra_days = frame[frame["warehouse"] == "FRA"].assign(_day=days)
    # FRA has rows on two days but never a count: the cells exist and are 0.
    for start in fra_days["_day"].unique():
        cell = ("day", start.to_pydatetime().astimezone(UTC), frozenset({("warehouse", "FRA")}))
        assert counted[cell] == 0
    # BER on the DST day: each entity's last *count* of the day, even where a pick came later.
    ber_29 = [
        r
        for r in stocks["rows"]
        if r["warehouse"] == "BER"
        and r["kind"] == "count"
        and _day(dt.date(2026, 3, 29)) <= r["at"] < _day(dt.date(2026, 3, 30))
    ]
    last_counts = {
        sku: max((r for r in ber_29 if r["sku"] == sku), key=lambda r: (r["at"], r["movement_id"]))
        for sku in {r["sku"] for r in ber_29}
    }
    assert last_counts["SKU-A"]["movement_id"] in {"D-1"} | {
        r["movement_id"] for r in ber_29 if r["at"] > _local(dt.date(2026, 3, 29), 3, 30)
    }
    cell = ("day", _day(dt.date(2026, 3, 29)), frozenset({("warehouse", "BER")}))
    assert counted[cell] == sum(r["on_hand"] for r in last_counts.values())


def test_a_late_row_changes_its_day_week_and_month(
    warehouse: Warehouse, stocks: dict[str, Any]
) -> None:
    plan = stocks["plans"]["last_sum"]
    before = _stored(warehouse, stocks, "last_sum")
    late = _movement("L-1", _local(dt.date(2026, 3, 26), 22), SPARSE, "count", 90)
    with warehouse.begin() as conn:
        insert_clean(conn, stocks["source"], [late])
    refresh_kpi(warehouse, plan, dt.date(2026, 3, 26), dt.date(2026, 3, 26))
    after = _stored(warehouse, stocks, "last_sum")

    frame = _frame([*stocks["rows"], late])
    assert_same_values(after, expected(frame, **CASES["last_sum"]), "after the late row")
    sparse = frozenset({("warehouse", "FRA"), ("sku", "SKU-D")})
    for grain, start in [
        ("day", _day(dt.date(2026, 3, 26))),
        ("week", _day(FIRST)),
        ("month", _day(dt.date(2026, 3, 1))),
    ]:
        assert before[(grain, start, sparse)] == 25
        assert after[(grain, start, sparse)] == 90
        total = (grain, start, frozenset())
        assert after[total] - before[total] == 65
    changed = {key for key in after if after[key] != before.get(key)}
    assert all(start < _day(dt.date(2026, 4, 1)) for _, start, _ in changed)
    assert ("day", _day(dt.date(2026, 3, 24)), sparse) not in changed


def _catalog_with(**semi: Any) -> tuple[Any, str]:
    source = _source(unique("stock_rules"))
    fields = {"measure": "sum(on_hand)", "dimensions": ["warehouse"]}
    fields.update(semi.pop("fields", {}))
    kpi = make_kpi(unique("stock_rule"), source.name, semi_additive=semi, **fields)
    return make_catalog([source], [kpi]), kpi.name


@pytest.mark.parametrize(
    ("semi", "message"),
    [
        (
            {"take": "last", "per": ["warehous", "sku"]},
            r"semi_additive: per: not columns of source stock_rules_\w+: "
            r"warehous \(did you mean 'warehouse'\?\)",
        ),
        (
            {"take": "last"},
            r"per \(by default the primary key without at\): movement_id covers the whole "
            r"primary key, so every row is an entity of its own",
        ),
        (
            {"take": "last", "per": ["warehouse", "at"]},
            "per: at is the event time the rows are picked along",
        ),
        (
            {"take": "last", "per": ["sku"]},
            r"dimensions warehouse are not among per \(sku\)",
        ),
        (
            {"take": "first", "per": PER, "fields": {"measure": "count_distinct(kind)"}},
            "uses count_distinct; the picked rows combine with avg, count, max, min, sum",
        ),
    ],
)
def test_the_catalog_refuses_what_makes_no_sense(semi: dict[str, Any], message: str) -> None:
    catalog, name = _catalog_with(**semi)
    with pytest.raises(CatalogError, match=message):
        plan_kpi(catalog, name)


def test_model_refuses_a_derived_kpi_an_unknown_take_and_a_repeated_column() -> None:
    with pytest.raises(ValidationError, match="semi_additive applies to a measure"):
        make_kpi("x", "s", derived="a / b", semi_additive={"take": "last", "per": ["w"]})
    with pytest.raises(ValidationError, match="take"):
        make_kpi("x", "s", measure="sum(q)", semi_additive={"take": "latest", "per": ["w"]})
    with pytest.raises(ValidationError, match="per names w more than once"):
        make_kpi("x", "s", measure="sum(q)", semi_additive={"take": "last", "per": ["w", "w"]})


@pytest.mark.parametrize("event_type", ["timestamp", "date"])
def test_a_snapshot_source_defaults_per_to_its_key_without_the_event_time(
    warehouse: Warehouse, event_type: str
) -> None:
    source = _source(
        unique("stock_snapshots"), primary_key=["warehouse", "sku", "at"], event_type=event_type
    )
    kpi = make_kpi(
        unique("snapshot_last"),
        source.name,
        measure="sum(on_hand)",
        semi_additive={"take": "last"},
        grains=["day", "week"],
        timezone=ZONE,
    )
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)
    assert entity_columns(plan.kpi, plan.source) == ["warehouse", "sku"]
    rows = [
        _movement("a", _local(dt.date(2026, 3, 23), 8), ("HAM", "SKU-A"), "count", 10),
        _movement("b", _local(dt.date(2026, 3, 24), 8), ("HAM", "SKU-A"), "count", 12),
        _movement("c", _local(dt.date(2026, 3, 23), 8), ("HAM", "SKU-B"), "count", 5),
    ]
    if event_type == "date":  # a date is the local day it names
        rows = [{**row, "at": row["at"].astimezone(BERLIN).date()} for row in rows]
    create_clean(warehouse, source, rows)
    refresh_kpi(warehouse, plan, FIRST, FIRST + dt.timedelta(days=1))
    stored = stored_values(warehouse, kpi.name)
    assert stored[("day", _day(FIRST), frozenset())] == 15
    assert stored[("day", _day(FIRST + dt.timedelta(days=1)), frozenset())] == 12
    assert stored[("week", _day(FIRST), frozenset())] == 17  # SKU-A on the 24th, SKU-B on the 23rd


def test_the_demo_stock_on_hand_over_generated_movements(
    warehouse: Warehouse, tmp_path: Any
) -> None:
    """The demo generator's balances run on from movement to movement and never go negative;
    the demo KPI over them matches pandas."""
    spec = demo_source_spec("inventory_movements")
    store = LocalFolderStore(tmp_path)
    summary = generate_source(
        store, spec, rows=6_000, days=3, seed=7, start=dt.date(2026, 3, 28), shares=Shares(0, 0, 0)
    )
    lines = []
    for stats in summary.files:
        with store.open(stats.key) as handle:
            lines += [json.loads(line) for line in handle.read().decode().splitlines()]
    moved_at = [dt.datetime.fromisoformat(line["moved_at"]) for line in lines]
    movements = pl.DataFrame(lines).with_columns(
        moved_at=pl.Series(moved_at, dtype=pl.Datetime("us", "UTC"))
    )
    assert movements["on_hand_after"].min() >= 0
    in_order = movements.sort("moved_at", "movement_id").with_columns(
        before=pl.col("on_hand_after").shift(1).over("warehouse", "product_sku")
    )
    running = in_order.filter(pl.col("before").is_not_null())
    assert running.height > 1_000  # keys moved more than once in the three days
    assert (running["before"] + running["quantity"] == running["on_hand_after"]).all()

    source = spec.model_copy(update={"name": unique("inventory_movements")})
    demo = load_catalog(DEMO_CATALOG_DIR).kpis["stock_on_hand"]
    kpi = demo.model_copy(update={"name": unique("stock_on_hand"), "source": source.name})
    plan = plan_kpi(make_catalog([source], [kpi]), kpi.name)
    rows = [
        {**row, "unit_cost": None if row["unit_cost"] is None else Decimal(str(row["unit_cost"]))}
        for row in movements.to_dicts()
    ]
    create_clean(warehouse, source, rows)
    refresh_kpi(warehouse, plan, dt.date(2026, 3, 28), dt.date(2026, 3, 30))

    frame = movements.to_pandas()
    want: dict[Any, float | None] = {}
    for grain in ("day", "week", "month"):
        data = frame.assign(_period=pandas_period_start(frame["moved_at"], grain, ZONE))
        picked = (
            data.sort_values(["moved_at", "movement_id"])
            .groupby(["_period", "warehouse", "product_sku"])
            .tail(1)
        )
        for key, group in picked.groupby(["_period", "warehouse"]):
            cell = (grain, key[0].to_pydatetime().astimezone(UTC),
                    frozenset({("warehouse", key[1])}))  # fmt: skip
            want[cell] = float(group["on_hand_after"].sum())
        for period, group in picked.groupby("_period"):
            want[(grain, period.to_pydatetime().astimezone(UTC), frozenset())] = float(
                group["on_hand_after"].sum()
            )
    assert_same_values(stored_values(warehouse, kpi.name), want, "demo stock_on_hand")
