"""PostgreSQL's own floor of file → raw + clean, measured in the bench's run (issue #21's method).

Two psql clients side by side, no client code of ours: (A) the CSV `\\copy` into a raw file table
with the product's DDL (lineage defaults, line sequence; created, filled and attached as its
partition in one transaction, as the loader does), (B) a binary `\\copy`
of the same rows already typed (exported from what the fused path stored) into a clean table
with the product's DDL, then its primary key. The floor is the time until both have finished.
"The next file" is the same with both tables already holding the first file and the key in
place. The reference script of the method is shared/bench/fused_floor.sh.

CPU seconds per side (client process, PostgreSQL server processes) come from /proc when the
server is local: `cpu_split` tells where the seconds of a method go on the 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean.schema import ensure_clean_table
from analytics_pipelines.lib.ingest.raw_tables import (
    FILE_ID_SETTING,
    ensure_raw_table,
    file_table_name,
    file_table_statements,
    line_sequence,
)
from analytics_pipelines.lib.pgserver import find_bindir
from analytics_pipelines.lib.tables import CLEANED_AT, FILE_ID
from analytics_pipelines.lib.warehouse import Warehouse
from bench.data import bench_source

T = TypeVar("T")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSplit:
    client: float
    server: float


@dataclass
class FloorRun:
    seconds: float
    raw_seconds: float  # until the raw \copy committed
    clean_seconds: float  # until the binary \copy and the key committed
    # Rows in the raw and the clean table afterwards (counted after the timing): a floor
    # that loaded less than the whole file would be a false floor.
    raw_rows: int = 0
    clean_rows: int = 0
    cpu: CpuSplit | None = None


def _ident(*names: str) -> str:
    return ".".join('"' + n.replace('"', '""') + '"' for n in names)


class Floor:
    """The two typed binary files of a source's clean rows, and floor runs made from them."""

    def __init__(self, url: str, warehouse: Warehouse, work: Path, datadir: Path | None) -> None:
        self.url = url
        self.datadir = datadir
        self.warehouse = warehouse
        self.work = work
        self.psql = str(find_bindir() / "psql")

    def _psql(self, *commands: str, one_transaction: bool = False) -> subprocess.Popen[bytes]:
        args = [self.psql, self.url, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        args += ["-1"] if one_transaction else []
        for command in commands:
            args += ["-c", command]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL)  # the tables own stdout

    def _run(self, *commands: str) -> None:
        if self._psql(*commands).wait() != 0:
            raise RuntimeError(f"psql failed: {commands}")

    def export(self, source: SourceSpec, file_id: int, name: str) -> tuple[Path, list[str]]:
        """The clean rows of one file version as a binary COPY file, and its column list."""
        with self.warehouse.connect() as conn:
            columns = [
                r[0]
                for r in conn.execute(
                    sa.text(
                        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t)"
                        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
                    ),
                    {"t": _ident("clean", source.name)},
                )
                if r[0] != CLEANED_AT
            ]
        path = self.work / f"{name}.bin"
        listed = ", ".join(_ident(c) for c in columns)
        # psql's \copy takes no bound parameters: identifiers are quoted, the id an int.
        self._run(
            f"\\copy (SELECT {listed} FROM {_ident('clean', source.name)} WHERE"  # noqa: S608
            f" {_ident(FILE_ID)} = {int(file_id)}) TO '{path}' WITH (FORMAT binary)"
        )
        return path, columns

    def _tables(self) -> SourceSpec:
        """Empty raw and clean tables of a new bench source, by the product's own DDL."""
        source = bench_source(f"floor_{uuid.uuid4().hex[:8]}")
        ensure_raw_table(self.warehouse, source)
        with self.warehouse.begin() as conn:
            ensure_clean_table(conn, source, defer_primary_key=True)
        return source

    def _side_by_side(
        self,
        source: SourceSpec,
        csv_path: Path,
        typed: tuple[Path, list[str]],
        file_id: int,
        key: bool,
    ) -> FloorRun:
        clean_columns = ", ".join(_ident(c) for c in typed[1])
        clean_side = [
            f"\\copy {_ident('clean', source.name)} ({clean_columns}) FROM '{typed[0]}'"
            " WITH (FORMAT binary)"
        ]
        if key:
            listed = ", ".join(_ident(c) for c in source.primary_key)
            clean_side.append(
                f"ALTER TABLE {_ident('clean', source.name)} ADD PRIMARY KEY ({listed})"
            )
        _checkpoint(self.warehouse)
        ends, cpu = cpu_split(
            self.datadir, lambda: self._both(source, csv_path, file_id, clean_side)
        )
        with self.warehouse.connect() as conn:
            raw_rows, clean_rows = (
                conn.execute(
                    sa.select(sa.func.count()).select_from(sa.table(source.name, schema=schema))
                ).scalar_one()
                for schema in ("raw", "clean")
            )
        return FloorRun(max(ends.values()), ends["raw"], ends["clean"], raw_rows, clean_rows, cpu)

    def _file_table(self, source: SourceSpec, file_id: int) -> tuple[str, str]:
        """The loader's own CREATE and ATTACH of a file table, as psql commands."""
        with self.warehouse.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            statements = file_table_statements(source.name, file_id)
            return statements[0].as_string(dbapi), statements[1].as_string(dbapi)

    def _both(
        self, source: SourceSpec, csv_path: Path, file_id: int, clean_side: list[str]
    ) -> dict[str, float]:
        """Seconds until each side has committed."""
        raw_columns = ", ".join(_ident(c.name) for c in source.columns)
        create, attach = self._file_table(source, file_id)
        started = time.perf_counter()
        raw = self._psql(
            f"SET {FILE_ID_SETTING} = {int(file_id)}",
            create,
            f"\\copy {_ident('raw', file_table_name(source.name, file_id))} ({raw_columns})"
            f" FROM '{csv_path}' WITH (FORMAT csv, HEADER true)",
            attach,
            one_transaction=True,
        )
        clean = self._psql(*clean_side, one_transaction=True)
        sides = {"raw": raw, "clean": clean}
        ends: dict[str, float] = {}
        while len(ends) < len(sides):
            for name, process in sides.items():
                if name not in ends and process.poll() is not None:
                    ends[name] = time.perf_counter() - started
            time.sleep(0.002)
        failed = [name for name, process in sides.items() if process.returncode != 0]
        if failed:
            raise RuntimeError(f"the floor's {failed[0]} side failed")
        return ends

    def first_file(self, csv_path: Path, typed: tuple[Path, list[str]]) -> FloorRun:
        source = self._tables()
        try:
            return self._side_by_side(source, csv_path, typed, 1, key=True)
        finally:
            self._drop(source)

    def next_file(
        self,
        csv_path: Path,
        typed: tuple[Path, list[str]],
        next_path: Path,
        next_typed: tuple[Path, list[str]],
    ) -> FloorRun:
        """The next file into tables already holding the first, its key in place."""
        source = self._tables()
        try:
            self._side_by_side(source, csv_path, typed, 1, key=True)
            return self._side_by_side(source, next_path, next_typed, 2, key=False)
        finally:
            self._drop(source)

    def _drop(self, source: SourceSpec) -> None:
        with self.warehouse.begin() as conn:
            for schema in ("raw", "clean"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {_ident(schema, source.name)}"))
            conn.execute(
                sa.text(f"DROP SEQUENCE IF EXISTS {_ident('raw', line_sequence(source.name))}")
            )


def _checkpoint(warehouse: Warehouse) -> None:
    with warehouse.connect() as conn:
        try:
            conn.execute(sa.text("CHECKPOINT"))
        except sa.exc.DBAPIError:  # not allowed to this role on a shared server: skip
            conn.rollback()


def _server_cpu(datadir: Path | None) -> float | None:
    """CPU seconds of the local server's processes so far: live ones and exited ones."""
    if datadir is None:
        return None
    try:
        postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
        total = 0.0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            pid, parent = int(entry.name), int(fields[1])
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # itself and exited children
            elif parent == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / _TICKS
    except (OSError, ValueError):
        return None


def cpu_split(datadir: Path | None, run: Callable[[], T]) -> tuple[T, CpuSplit | None]:
    """`run()` and the CPU seconds it took in this process (every thread) and in the server."""
    server_before, client_before = _server_cpu(datadir), os.times()
    result = run()
    server_after, client_after = _server_cpu(datadir), os.times()
    if server_before is None or server_after is None:
        return result, None
    # Children: the psql clients (floor, plain copy), once waited for.
    client = sum(client_after[:4]) - sum(client_before[:4])
    return result, CpuSplit(client, server_after - server_before)
