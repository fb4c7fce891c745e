"""The bench's PostgreSQL floor loads the whole file twice over (raw text and typed clean), as
the product's tables hold it, so the figure it gives is the cost of the real work."""

from __future__ import annotations

import csv
from pathlib import Path

import sqlalchemy as sa

from analytics_pipelines.lib.clean import FusedClean
from analytics_pipelines.lib.ingest import load_pending
from analytics_pipelines.lib.storage import LocalFolderStore
from analytics_pipelines.lib.warehouse import Warehouse
from bench.data import bench_source, write_orders_csv
from bench.floor import Floor
from bench.run import _libpq_url


def test_the_floor_loads_every_row_of_both_files_as_the_product_stores_them(
    warehouse: Warehouse, database_url: str, tmp_path: Path
) -> None:
    tmp_path.chmod(0o755)  # the psql clients read the files; the server reads none
    first = write_orders_csv(tmp_path / "a.csv", 1_500)
    later = write_orders_csv(tmp_path / "b.csv", 1_500, seed=8, first=1_500)
    source = bench_source("probe_of_the_floor")
    store = LocalFolderStore(tmp_path / "store")
    file_ids = []
    for path in (first, later):
        store.write(f"{source.landing_prefix}/{path.name}", path.open("rb"))
        report = load_pending(source, store, warehouse, clean_while_loading=FusedClean)
        file_ids += report.cleaned_file_ids
    floor = Floor(_libpq_url(database_url), warehouse, tmp_path, None)
    typed = [floor.export(source, f, f"typed_{i}") for i, f in enumerate(file_ids)]

    run = floor.first_file(first, typed[0])
    again = floor.next_file(first, typed[0], later, typed[1])

    with first.open() as handle:
        rows = sum(1 for _ in csv.DictReader(handle))
    assert (run.raw_rows, run.clean_rows) == (rows, rows)
    assert (again.raw_rows, again.clean_rows) == (2 * rows, 2 * rows)
    assert 0 < run.raw_seconds <= run.seconds and 0 < run.clean_seconds <= run.seconds
    # The typed file holds the rows the fused path stored, columns as clean lists them.
    assert "_cleaned_at" not in typed[0][1] and typed[0][1][:2] == ["order_id", "line_no"]
    with warehouse.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE 'floor\\_%'")
        ).scalar_one()
    assert left == 0  # the floor's tables, indexes and sequences are dropped after each run
