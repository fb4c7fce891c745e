"""Quarantine operations (show, replay after a catalog fix) and schema drift of clean tables."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from analytics_pipelines.cli import quarantine as quarantine_cli
from analytics_pipelines.lib.catalog import ColumnSpec, SourceSpec
from analytics_pipelines.lib.clean import SchemaDriftError, clean_pending
from analytics_pipelines.lib.clean.replay import (
    quarantine_summary,
    rebuild_clean,
    replay_quarantine,
)
from analytics_pipelines.lib.warehouse import Warehouse
from analytics_pipelines_tests.test_clean_process import (
    assert_reconciles,
    clean_rows,
    failed_rules,
    land,
    ledger_counts,
    make_source,
    quarantined,
    row,
)


def with_column(source: SourceSpec, name: str, **changes: Any) -> SourceSpec:
    columns = [c.model_copy(update=changes) if c.name == name else c for c in source.columns]
    return source.model_copy(update={"columns": columns})


def test_summary_lists_reasons_with_counts(warehouse: Warehouse) -> None:
    source = make_source()
    land(
        warehouse,
        source,
        [
            row(line_no="1", region="west"),
            row(line_no="2", region="east", quantity="0"),
            row(line_no="3"),
        ],
    )
    clean_pending(warehouse, source)

    summary = quarantine_summary(warehouse, source)

    assert summary.rows == 2
    assert [(r.column, r.rule, r.rows) for r in summary.reasons] == [
        ("region", "allowed_values", 2),
        ("quantity", "min", 1),
    ]
    assert summary.reasons[0].message == "not one of: north, south"


def test_replay_after_a_catalog_fix_moves_passing_rows_to_clean(warehouse: Warehouse) -> None:
    source = make_source()
    file_id = land(
        warehouse,
        source,
        [
            row(line_no="1"),
            row(line_no="2", region="west"),
            row(line_no="3", region="west", quantity="0"),
        ],
    )
    clean_pending(warehouse, source)
    assert ledger_counts(warehouse, file_id) == (3, 1, 2, 0)

    fixed = with_column(source, "region", allowed_values=["north", "south", "west"])
    report = replay_quarantine(warehouse, fixed)

    assert (report.examined, report.released, report.still_quarantined) == (2, 1, 1)
    assert [r["line_no"] for r in clean_rows(warehouse, fixed)] == [1, 2]
    [left] = quarantined(warehouse, fixed)
    # The remaining row's reasons are re-evaluated: only the quantity is still wrong.
    assert (left["line"], failed_rules(left)) == (3, {("quantity", "min")})
    assert ledger_counts(warehouse, file_id) == (3, 2, 1, 0)
    assert_reconciles(warehouse, fixed)


def test_replayed_row_loses_to_a_newer_version_of_its_key(warehouse: Warehouse) -> None:
    source = make_source()
    old = land(warehouse, source, [row(region="west")])
    new = land(warehouse, source, [row(quantity="9")])
    clean_pending(warehouse, source)

    fixed = with_column(source, "region", allowed_values=["north", "south", "west"])
    report = replay_quarantine(warehouse, fixed)

    assert (report.released, report.landed, report.replaced) == (1, 0, 1)
    [only] = clean_rows(warehouse, fixed)
    assert only["_file_id"] == new
    assert ledger_counts(warehouse, old) == (1, 0, 0, 1)
    assert_reconciles(warehouse, fixed)


def test_cli_show_and_replay(
    warehouse: Warehouse,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    import yaml

    source = make_source()
    land(warehouse, source, [row(region="west"), row(line_no="2")])
    clean_pending(warehouse, source)
    fixed = with_column(source, "region", allowed_values=["north", "south", "west"])
    for spec, folder in ((source, "before"), (fixed, "after")):
        (tmp_path / folder / "sources").mkdir(parents=True)
        (tmp_path / folder / "kpis").mkdir()
        (tmp_path / folder / "sources" / "s.yaml").write_text(
            yaml.safe_dump({"sources": [spec.model_dump(mode="json", exclude_none=True)]})
        )
    monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path}")
    monkeypatch.setenv("CATALOG_DIR", str(tmp_path / "before"))

    assert quarantine_cli.run_show(argparse.Namespace(source=source.name)) == 0
    out = capsys.readouterr().out
    assert "1 quarantined rows" in out
    assert "region.allowed_values" in out and "not one of: north, south" in out

    monkeypatch.setenv("CATALOG_DIR", str(tmp_path / "after"))
    assert quarantine_cli.run_replay(argparse.Namespace(source=source.name)) == 0
    assert "1 now pass" in capsys.readouterr().out
    assert len(clean_rows(warehouse, source)) == 2

    assert quarantine_cli.run_show(argparse.Namespace(source="nope")) == 2


def test_a_column_added_to_the_catalog_is_added_to_the_table(warehouse: Warehouse) -> None:
    source = make_source()
    land(warehouse, source, [row()])
    clean_pending(warehouse, source)

    grown = source.model_copy(
        update={"columns": [*source.columns, ColumnSpec(name="coupon", type="decimal")]}
    )
    land(warehouse, grown, [{**row(line_no="2"), "coupon": "1.5"}])
    report = clean_pending(warehouse, grown)

    assert report.schema_changes == ("added column coupon (decimal)",)
    rows = clean_rows(warehouse, grown)
    assert [(r["line_no"], r["coupon"]) for r in rows] == [(1, None), (2, 1.5)]


def test_an_incompatible_type_change_is_refused_with_what_to_do(warehouse: Warehouse) -> None:
    source = make_source()
    file_id = land(warehouse, source, [row()])
    clean_pending(warehouse, source)

    changed = with_column(source, "quantity", type="string", min=None, max=None)
    land(warehouse, changed, [row(line_no="2")])
    with pytest.raises(SchemaDriftError) as caught:
        clean_pending(warehouse, changed)

    message = str(caught.value)
    assert f"clean.{source.name}" in message
    assert (
        "column quantity is bigint in the warehouse but the catalog now declares string" in message
    )
    assert f"analytics-pipelines clean rebuild {source.name}" in message
    # Nothing happened: the second file is still pending, the table unchanged.
    assert len(clean_rows(warehouse, source)) == 1
    assert ledger_counts(warehouse, file_id) == (1, 1, 0, 0)

    report = rebuild_clean(warehouse, changed)
    assert (report.files, report.clean_rows) == (2, 2)
    with warehouse.connect() as conn:
        kind = conn.execute(
            sa.text(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = 'clean'"
                " AND table_name = :t AND column_name = 'quantity'"
            ),
            {"t": source.name},
        ).scalar_one()
    assert kind == "text"
    assert_reconciles(warehouse, changed)


def test_a_primary_key_change_is_refused(warehouse: Warehouse) -> None:
    source = make_source()
    land(warehouse, source, [row()])
    clean_pending(warehouse, source)

    rekeyed = source.model_copy(update={"primary_key": ["order_id"]})
    with pytest.raises(SchemaDriftError, match=r"primary key is \(order_id, line_no\)"):
        clean_pending(warehouse, rekeyed)
