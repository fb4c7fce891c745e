"""Demo data generator: realistic, deterministic landing files with bad, duplicate and late rows."""

from __future__ import annotations

import argparse
import io
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from analytics_pipelines.cli import demo as demo_cli
from analytics_pipelines.lib.catalog import SourceSpec
from analytics_pipelines.lib.demo import (
    DemoError,
    Shares,
    demo_source_spec,
    generate_demo,
    generate_orders_csv,
    generate_source,
)
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore

SOURCES = ["orders", "inventory_movements", "support_tickets"]
START = date(2026, 1, 5)


def specs() -> list[SourceSpec]:
    return [demo_source_spec(name) for name in SOURCES]


def read_bytes(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as handle:
        return handle.read()


def read_orders(store: ObjectStore, keys: list[str]) -> pl.DataFrame:
    frames = [
        pl.read_csv(io.BytesIO(read_bytes(store, key)), infer_schema=False).with_columns(
            file=pl.lit(index)
        )
        for index, key in enumerate(keys)
    ]
    return pl.concat(frames).with_row_index("position")


def rule_violations(frame: pl.DataFrame, spec: SourceSpec) -> pl.Series:
    """True for each row that breaks a declared rule of the orders source (text columns)."""
    broken = pl.lit(False)
    for column in spec.columns:
        value = pl.col(column.name)
        present = (value.str.strip_chars() != "").fill_null(False)
        if column.required:
            broken = broken | ~present
        if column.type in ("integer", "decimal"):
            dtype = pl.Int64 if column.type == "integer" else pl.Float64
            number = value.cast(dtype, strict=False)
            broken = broken | (present & number.is_null())
            if column.min is not None:
                broken = broken | (number < column.min).fill_null(False)
            if column.max is not None:
                broken = broken | (number > column.max).fill_null(False)
        if column.type == "timestamp":
            iso = value.str.replace("T", " ").str.slice(0, 19)
            parsed = iso.str.strptime(pl.Datetime, "%Y-%m-%d %H:%M:%S", strict=False)
            broken = broken | (present & parsed.is_null())
        if column.allowed_values:
            broken = broken | (present & ~value.is_in(column.allowed_values))
        if column.pattern:
            broken = broken | (present & ~value.str.contains(column.pattern))
    return frame.select(broken).to_series()


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        store = LocalFolderStore(tmp_path / name)
        (tmp_path / name).mkdir()
        summaries = generate_demo(store, specs(), rows=3_000, days=3, seed=seed)
        runs[name] = {f.key: read_bytes(store, f.key) for s in summaries for f in s.files}
    assert len(runs["a"]) == 9
    assert runs["a"] == runs["b"]
    assert runs["a"].keys() == runs["c"].keys()
    assert all(runs["a"][key] != runs["c"][key] for key in runs["a"])


def test_files_land_under_each_landing_prefix_with_declared_columns(store: ObjectStore) -> None:
    summaries = generate_demo(store, specs(), rows=2_400, days=4, seed=3)
    by_source = {s.source: s for s in summaries}
    for spec in specs():
        summary = by_source[spec.name]
        listed = [info.key for info in store.list(spec.landing_prefix)]
        assert listed == [f.key for f in summary.files]
        assert len(listed) == 4
        assert listed[0] == f"{spec.landing_prefix}{spec.name}_2026-01-05.{spec.format}"
        assert summary.rows == 2_400
        declared = [c.name for c in spec.columns]
        for stats in summary.files:
            content = read_bytes(store, stats.key)
            if spec.format == "csv":
                frame = pl.read_csv(io.BytesIO(content), infer_schema=False)
                assert content.decode().splitlines()[0] == ",".join(declared)
            elif spec.format == "jsonl":
                lines = content.decode().splitlines()
                assert [list(json.loads(line)) for line in lines[:5]] == [declared] * 5
                frame = pl.DataFrame({"line": lines})
            else:
                frame = pl.read_parquet(io.BytesIO(content))
                assert frame.columns == declared
            assert frame.height == stats.rows == 600


def test_bad_duplicate_and_late_rows_in_expected_proportions(local_store: LocalFolderStore) -> None:
    spec = demo_source_spec("orders")
    summary = generate_source(local_store, spec, rows=40_000, days=4, seed=5)
    keys = [f.key for f in summary.files]
    orders = read_orders(local_store, keys)
    assert orders.height == 40_000

    bad = rule_violations(orders, spec)
    assert int(bad.sum()) == summary.bad
    assert 0.01 <= summary.bad / orders.height <= 0.02

    repeated = orders.filter(pl.struct("order_id", "line_no").is_duplicated())
    first_seen = repeated.group_by("order_id", "line_no").agg(
        pl.col("file").min().alias("first_file"), pl.len().alias("times")
    )
    assert int((first_seen["times"] - 1).sum()) == summary.duplicates
    assert 0.005 <= summary.duplicates / orders.height <= 0.015
    per_key = repeated.join(first_seen, on=["order_id", "line_no"])
    assert per_key.filter(pl.col("file") > pl.col("first_file")).height > 0, "no re-sent rows"
    within = repeated.group_by("order_id", "line_no", "file").len().filter(pl.col("len") > 1)
    assert within.height > 0, "no key repeated inside one file"

    # Late rows: new events in local wall clock dated before the file's own Berlin business day
    # (re-sent rows of the previous file are duplicates, not late arrivals).
    local_day = pl.col("ordered_at").str.strptime(pl.Date, "%Y-%m-%d %H:%M:%S", strict=False)
    file_day = pl.lit(START) + pl.duration(days=pl.col("file"))
    late = orders.filter(local_day < file_day).join(
        per_key.filter(pl.col("file") > pl.col("first_file")),
        on=["order_id", "line_no", "file"],
        how="anti",
    )
    late_per_file = late.group_by("file").len().sort("file")
    assert late_per_file["file"].to_list() == [1, 2, 3]
    assert summary.files[-1].late > 0
    assert 0.8 * summary.late <= late.height <= summary.late
    assert summary.late == sum(f.late for f in summary.files[1:])
    assert summary.files[0].late == 0


def test_timestamps_follow_each_source_time_zone_semantics(local_store: LocalFolderStore) -> None:
    summaries = generate_demo(
        local_store, specs(), rows=6_000, days=2, seed=9, shares=Shares(0, 0, 0)
    )
    orders, movements, tickets = summaries

    ordered_at = read_orders(local_store, [f.key for f in orders.files])["ordered_at"]
    naive = ordered_at.str.contains(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
    berlin = ordered_at.str.contains(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+01:00$")
    utc = ordered_at.str.contains(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
    assert bool((naive | berlin | utc).all())
    assert 0.85 <= naive.mean() <= 0.97  # type: ignore[operator]
    assert berlin.sum() > 0 and utc.sum() > 0
    # The first file holds 5 January in Berlin: naive times are local wall clock.
    first = read_orders(local_store, [orders.files[0].key])["ordered_at"]
    local_days = first.filter(first.str.contains(" ")).str.slice(0, 10).unique().to_list()
    assert local_days == ["2026-01-05"]
    instants = [
        datetime.fromisoformat(text).astimezone(ZoneInfo("Europe/Berlin")).date()
        for text in first.filter(first.str.contains("T")).to_list()
    ]
    assert set(instants) == {date(2026, 1, 5)}

    text = read_bytes(local_store, movements.files[0].key).decode()
    moved_at = [json.loads(line)["moved_at"] for line in text.splitlines()]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|\+01:00)", m) for m in moved_at)
    assert any(m.endswith("Z") for m in moved_at) and any(m.endswith("+01:00") for m in moved_at)
    first_instant = datetime.fromisoformat(moved_at[0].replace("Z", "+00:00"))
    assert first_instant >= datetime(2026, 1, 5, tzinfo=ZoneInfo("Europe/Berlin"))

    frame = pl.read_parquet(io.BytesIO(read_bytes(local_store, tickets.files[0].key)))
    assert frame.schema == pl.Schema(
        {  # type: ignore[arg-type]
            "ticket_id": pl.String,
            "opened_at": pl.Datetime("us", "UTC"),
            "opened_on": pl.Date,
            "customer_id": pl.String,
            "channel": pl.String,
            "priority": pl.String,
            "resolved": pl.Boolean,
            "resolution_minutes": pl.Int64,
            "satisfaction": pl.Int64,
        }
    )
    assert bool((frame["opened_at"].dt.date() == frame["opened_on"]).all())
    assert frame["opened_on"].unique().to_list() == [date(2026, 1, 5)]


def test_single_orders_csv_for_benchmarks(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    rows = generate_orders_csv(path, 450_001, seed=1, start=START, days=10)
    assert rows == 450_001
    stream = io.BytesIO()
    generate_orders_csv(stream, 450_001, seed=1, start=START, days=10)
    assert stream.getvalue() == path.read_bytes()
    frame = pl.read_csv(path, infer_schema=False)
    spec = demo_source_spec("orders")
    assert frame.columns == [c.name for c in spec.columns]
    assert frame.height == 450_001
    assert frame.select(pl.struct("order_id", "line_no").is_unique().all()).item()
    assert int(rule_violations(frame, spec).sum()) == 0
    # Rows stay in time order across the internal chunks.
    naive = frame.filter(pl.col("ordered_at").str.contains(" "))["ordered_at"]
    assert naive.to_list()[:1000] == sorted(naive.to_list()[:1000])
    assert naive.str.slice(0, 10).max() == (START + timedelta(days=9)).isoformat()

    noisy = io.BytesIO()
    generate_orders_csv(noisy, 20_000, seed=1, start=START, days=2, bad_share=0.02)
    bad = rule_violations(pl.read_csv(io.BytesIO(noisy.getvalue()), infer_schema=False), spec)
    assert int(bad.sum()) == 400


def test_rejects_a_source_without_a_generator_and_a_format_mismatch(tmp_path: Path) -> None:
    orders = demo_source_spec("orders")
    other = orders.model_copy(update={"name": "returns"})
    with pytest.raises(DemoError, match="source returns: no demo generator"):
        generate_demo(LocalFolderStore(tmp_path), [other], rows=10, days=1, seed=1)
    as_parquet = orders.model_copy(update={"format": "parquet"})
    with pytest.raises(DemoError, match="writes csv, the catalog declares parquet"):
        generate_demo(LocalFolderStore(tmp_path), [as_parquet], rows=10, days=1, seed=1)
    assert not any(tmp_path.iterdir())


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="analytics-pipelines")
    demo_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_writes_into_storage_url_and_prints_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "lake"
    folder.mkdir()
    monkeypatch.setenv("STORAGE_URL", f"file://{folder}")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/unused")
    monkeypatch.delenv("CATALOG_DIR", raising=False)
    argv = ["demo", "generate", "--rows", "5000", "--days", "2", "--seed", "4"]
    assert run_cli([*argv, "--files-per-source", "3", "--start-date", "2026-03-28"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert out[2] == (
        "orders: 3 files, 5000 rows (75 bad, 51 duplicates, 34 late) "
        f"-> file://{folder}/landing/orders/"
    )
    keys = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert keys[6:9] == [
        "landing/orders/orders_2026-03-28_0001.csv",
        "landing/orders/orders_2026-03-28_0002.csv",
        "landing/orders/orders_2026-03-29_0003.csv",
    ]
    # 29 March is the spring-forward day in Berlin: no wall-clock time between 02:00 and 03:00.
    text = "".join((folder / key).read_text() for key in keys[6:9])
    assert "2026-03-29 03:" in text and "2026-03-29 02:" not in text


def test_cli_names_an_unknown_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "generate", "--folder", str(tmp_path), "--source", "refunds"]
    assert run_cli(argv) == 2
    assert "unknown source(s) refunds" in capsys.readouterr().err
