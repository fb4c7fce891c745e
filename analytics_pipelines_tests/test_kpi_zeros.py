"""True zeros: a cell exists where the source has rows; a filter that matches none there gives 0.

Checked against plain Python over the same rows, on days that include the spring DST change of
the KPI's zone, a cell whose filter matches nothing, and a zero denominator.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from analytics_pipelines.lib.kpi.engine import refresh_kpi
from analytics_pipelines.lib.kpi.plan import plan_kpi
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_kpi_support import (
    create_clean,
    make_catalog,
    make_kpi,
    make_source,
    stored_values,
    unique,
)

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-03-29 is 23 hours long in Berlin.
DAYS = [dt.date(2026, 3, 28), dt.date(2026, 3, 29), dt.date(2026, 3, 30)]


def _rows() -> list[dict[str, Any]]:
    rows = []
    plan = {
        # (day, region): statuses, one row each (qty = position + 1)
        (DAYS[0], "north"): ["placed", "returned", "placed"],
        (DAYS[0], "south"): ["placed", "placed"],  # no return: the empty-filter cell
        (DAYS[1], "north"): ["placed"],  # DST day, no return either
        (DAYS[1], "south"): ["returned", "returned"],
        (DAYS[2], "north"): ["returned"],
    }
    for (day, region), statuses in plan.items():
        for i, status in enumerate(statuses):
            # 02:30 does not exist on the DST day: 01:30 and 03:30 local stand either side of it.
            local = dt.datetime.combine(day, dt.time(1 + 2 * i, 30), BERLIN)
            rows.append(
                {
                    "line_id": f"{day}-{region}-{i}",
                    "at": local.astimezone(dt.UTC),
                    "region": region,
                    "status": status,
                    "qty": i + 1,
                    "price": Decimal("2.50"),
                }
            )
    return rows


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), BERLIN).astimezone(dt.UTC)


def _expected(rows: list[dict[str, Any]]) -> dict[str, dict[tuple[dt.datetime, frozenset], Any]]:
    """Plain Python: per local day, per region and in total."""
    cells: dict[tuple[dt.datetime, frozenset], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        day = row["at"].astimezone(BERLIN).date()
        for dims in (frozenset({("region", row["region"])}), frozenset()):
            cells[(_utc_midnight(day), dims)].append(row)
    returned = {k: [r for r in v if r["status"] == "returned"] for k, v in cells.items()}
    lines = {k: len(v) for k, v in cells.items()}
    returns = {k: len(v) for k, v in returned.items()}
    returned_qty = {k: sum(r["qty"] for r in v) for k, v in returned.items()}
    return {
        "lines": lines,
        "returns": returns,
        "returned_qty": returned_qty,
        "returned_qty_or_null": {k: (v if returned[k] else None) for k, v in returned_qty.items()},
        "return_rate": {k: returns[k] / lines[k] for k in cells},
        "lines_per_return": {k: (lines[k] / returns[k] if returns[k] else None) for k in cells},
    }


def test_a_filter_that_matches_nothing_in_a_cell_gives_zero(warehouse: Warehouse) -> None:
    source = make_source(unique("kpi_zeros"))
    rows = _rows()
    create_clean(warehouse, source, rows)
    common: dict[str, Any] = {"dimensions": ["region"], "timezone": "Europe/Berlin"}
    names = {n: unique(n) for n in _expected(rows)}
    kpis = [
        make_kpi(names["lines"], source.name, measure="count(*)", **common),
        make_kpi(
            names["returns"],
            source.name,
            measure="count(*)",
            filter="status = 'returned'",
            **common,
        ),
        make_kpi(
            names["returned_qty"],
            source.name,
            measure="sum(qty)",
            filter="status = 'returned'",
            **common,
        ),
        make_kpi(
            names["returned_qty_or_null"],
            source.name,
            measure="sum(qty)",
            filter="status = 'returned'",
            fill_nulls_with=None,
            **common,
        ),
        make_kpi(
            names["return_rate"],
            source.name,
            derived=f"{names['returns']} / {names['lines']}",
            **common,
        ),
        make_kpi(
            names["lines_per_return"],
            source.name,
            derived=f"{names['lines']} / {names['returns']}",
            **common,
        ),
    ]
    catalog = make_catalog([source], kpis)
    for kpi in kpis:  # inputs before the derived KPIs, as the asset graph orders them
        refresh_kpi(warehouse, plan_kpi(catalog, kpi.name), DAYS[0], DAYS[-1])

    for label, expected in _expected(rows).items():
        stored = {
            (start, dims): value
            for (grain, start, dims), value in stored_values(warehouse, names[label]).items()
            if grain == "day"
        }
        assert set(stored) == set(expected), label
        for cell, want in expected.items():
            got = stored[cell]
            if want is None:
                assert got is None, (label, cell, got)
            else:
                assert got is not None and abs(float(got) - want) < 1e-12, (label, cell, got, want)

    # The cells a user would look at: south on the 28th had orders and no return.
    south_28 = (_utc_midnight(DAYS[0]), frozenset({("region", "south")}))
    assert stored_values(warehouse, names["returns"])[("day", *south_28)] == 0
    assert stored_values(warehouse, names["return_rate"])[("day", *south_28)] == 0
    assert stored_values(warehouse, names["lines_per_return"])[("day", *south_28)] is None
    # No row at all for a region on a day: no cell (south had no rows on the 30th).
    south_30 = ("day", _utc_midnight(DAYS[2]), frozenset({("region", "south")}))
    assert south_30 not in stored_values(warehouse, names["returns"])


def test_a_filter_literal_outside_allowed_values_is_refused_with_a_suggestion() -> None:
    import pytest

    from analytics_pipelines.lib.catalog import CatalogError, ColumnSpec

    source = make_source(unique("kpi_allowed"))
    columns = [
        c
        if c.name != "status"
        else ColumnSpec(name="status", allowed_values=["placed", "cancelled"])
        for c in source.columns
    ]
    source = source.model_copy(update={"columns": columns})
    typo = make_kpi(unique("typo"), source.name, measure="count(*)", filter="status = 'canceled'")
    in_list = make_kpi(
        unique("listed"), source.name, measure="count(*)", filter="status in ('placed', 'shiped')"
    )
    dimension = make_kpi(unique("dims"), source.name, measure="count(*)", dimensions=["regoin"])
    fine = make_kpi(unique("fine"), source.name, measure="count(*)", filter="status != 'placed'")
    catalog = make_catalog([source], [typo, in_list, dimension, fine])

    with pytest.raises(CatalogError) as refused:
        plan_kpi(catalog, typo.name)
    assert "filter: 'canceled' is not an allowed value of status (placed, cancelled)" in str(
        refused.value
    )
    assert "did you mean 'cancelled'?" in str(refused.value)
    with pytest.raises(CatalogError, match="'shiped' is not an allowed value of status"):
        plan_kpi(catalog, in_list.name)
    with pytest.raises(
        CatalogError, match=r"'regoin' is not a column of source .* \(did you mean 'region'\?\)"
    ):
        plan_kpi(catalog, dimension.name)
    assert plan_kpi(catalog, fine.name).filter is not None


def test_catalog_validate_names_a_filter_typo_and_a_dimension_typo(tmp_path) -> None:
    import shutil

    import pytest

    from analytics_pipelines.lib.catalog import CatalogError, load_catalog
    from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR

    catalog = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG_DIR, catalog)
    sales = catalog / "kpis" / "sales.yaml"
    text = sales.read_text()
    assert "filter: status != 'cancelled'" in text and "dimensions: [region]" in text
    text = text.replace("filter: status != 'cancelled'", "filter: status != 'canceled'", 1)
    sales.write_text(text.replace("dimensions: [region]", "dimensions: [regoin]", 1))

    with pytest.raises(CatalogError) as refused:
        load_catalog(catalog)
    message = str(refused.value)
    assert "filter: 'canceled' is not an allowed value of status" in message
    assert "did you mean 'cancelled'?" in message
    assert (
        "dimensions: 'regoin' is not a column of source orders (did you mean 'region'?)" in message
    )
