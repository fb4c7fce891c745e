"""What the server pays per feature of the raw table (issue #21, item 3).

`python -m bench.raw_cost CSV [ROUNDS]`: a throwaway PostgreSQL, then psql `\\copy` of the CSV
(one of `bench.data`'s orders files) into table variants in turn, plain text first, adding the
raw table's lineage features one at a time (file-id default, line sequence, loaded-at default,
BRIN on the file id: the single-table layout before), then the layout now: a table of its own
per file, created, filled and attached as its partition in one transaction. Prints each
variant's best server CPU seconds (from `/proc`) and wall time.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from analytics_pipelines.lib.pgserver import LocalPostgres, find_bindir, free_port
from analytics_pipelines.lib.settings import normalise_database_url
from analytics_pipelines.lib.warehouse import Warehouse
from bench.data import COLUMNS
from bench.floor import cpu_split
from bench.run import _libpq_url, _settle

_FILE_ID = "_file_id bigint NOT NULL DEFAULT public.bench_file_id()"
_LINE = "_line bigint NOT NULL DEFAULT nextval('public.{sequence}')"
_LOADED_AT = "_loaded_at timestamptz NOT NULL DEFAULT now()"
_LINEAGE = [_FILE_ID, _LINE, _LOADED_AT]
# Variant → (lineage columns, with the line sequence, with BRIN on the file id, as a partition).
VARIANTS: dict[str, tuple[list[str], bool, bool, bool]] = {
    "plain text table": ([], False, False, False),
    "+ _file_id default": ([_FILE_ID], False, False, False),
    "+ _line sequence": ([_FILE_ID, _LINE], True, False, False),
    "+ _loaded_at now()": (_LINEAGE, True, False, False),
    "+ BRIN on _file_id (the single-table layout before)": (_LINEAGE, True, True, False),
    "a partition per file (the product's DDL now)": (_LINEAGE, True, False, True),
}


def main(argv: list[str]) -> int:
    csv_path, rounds = Path(argv[0]).resolve(), int(argv[1]) if len(argv) > 1 else 5
    work = Path(tempfile.mkdtemp(prefix="ap-raw-cost-"))
    work.chmod(0o755)
    server = LocalPostgres(work / "pg", free_port(), durable=False, settings={"autovacuum": "off"})
    url = normalise_database_url(server.start())
    try:
        warehouse = Warehouse(url)
        with warehouse.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE FUNCTION public.bench_file_id() RETURNS bigint LANGUAGE sql IMMUTABLE"
                    " AS $$ SELECT current_setting('analytics.file_id')::bigint $$"
                )
            )
        text_columns = ", ".join(f"{c.name} text" for c in COLUMNS)
        names = ", ".join(c.name for c in COLUMNS)
        psql = str(find_bindir() / "psql")
        seen: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for round_no in range(rounds):
            for number, (name, (lineage, sequence, brin, partition)) in enumerate(VARIANTS.items()):
                table = f"variant_{round_no}_{number}"
                columns = ", ".join([text_columns, *lineage]).format(sequence=f"{table}_line")
                with warehouse.begin() as conn:
                    if sequence:
                        conn.execute(sa.text(f"CREATE SEQUENCE public.{table}_line CACHE 1000"))
                    conn.execute(
                        sa.text(
                            f"CREATE TABLE public.{table} ({columns})"
                            + (" PARTITION BY LIST (_file_id)" if partition else "")
                        )
                    )
                    if brin:
                        conn.execute(
                            sa.text(f"CREATE INDEX ON public.{table} USING brin (_file_id)")
                        )
                _settle(warehouse)
                command = [psql, _libpq_url(url), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1"]
                command += ["-c", "SET analytics.file_id = 1"]
                target = f"public.{table}"
                if partition:
                    # As `raw_tables.file_table_statements` words it.
                    target = f"public.{table}_file_1"
                    command += [
                        "-c",
                        f"CREATE TABLE {target} (LIKE public.{table} INCLUDING DEFAULTS,"
                        " CHECK (_file_id = 1))",
                    ]
                command += [
                    "-c",
                    f"\\copy {target} ({names}) FROM '{csv_path}' WITH (FORMAT csv, HEADER true)",
                ]
                if partition:
                    command += [
                        "-c",
                        f"ALTER TABLE public.{table} ATTACH PARTITION {target} FOR VALUES IN (1)",
                    ]
                started = time.perf_counter()
                _, cpu = cpu_split(
                    server.datadir, functools.partial(subprocess.run, command, check=True)
                )
                wall = time.perf_counter() - started
                # A reading far below the wall time is a /proc sample that missed the backend.
                if cpu is not None and cpu.server > wall / 4:
                    seen[name].append((cpu.server, wall))
                with warehouse.begin() as conn:
                    conn.execute(sa.text(f"DROP TABLE public.{table}"))
        print(f"| variant | server CPU-s, best of {rounds} | wall s, best |")
        print("| --- | ---: | ---: |")
        for name, runs in seen.items():
            cpu_best = min((s for s, _ in runs), default=float("nan"))
            wall_best = min((w for _, w in runs), default=float("nan"))
            print(f"| {name} | {cpu_best:.2f} | {wall_best:.2f} |")
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
