"""A project-local PostgreSQL started from the system's server binaries (for `make dev` and tests).

PostgreSQL refuses to run as root; when we are root the server runs as the `postgres` system
user through `runuser`, and the data folder is handed to that user.

With `password_auth` (`make dev`) connections over TCP need a password (scram-sha-256); the
superuser connects only through the Unix socket in the data folder, which only the server's
user (and root) can reach (`admin_url`). Tests' throwaway servers trust every local login.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them, e.g. "
    "`apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql@15` (macOS), "
    "or set DATABASE_URL to an existing database."
)


class PostgresUnavailable(Exception):
    """The server binaries are missing or the server would not start."""


def find_bindir() -> Path:
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += [str(Path(p).parent) for p in filter(None, [shutil.which("initdb")])]
    for candidate in candidates:
        if (
            candidate
            and (Path(candidate) / "initdb").exists()
            and (Path(candidate) / "pg_ctl").exists()
        ):
            return Path(candidate)
    raise PostgresUnavailable(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalPostgres:
    datadir: Path
    port: int
    database: str = "analytics"
    user: str = "postgres"
    # Throwaway servers (tests, benchmarks) skip fsync; a developer's data folder keeps it.
    durable: bool = True
    # Further server settings (`-c name=value`), e.g. a benchmark's.
    settings: dict[str, str] = field(default_factory=dict)
    # Passwords over TCP, the superuser through the data folder's socket only (see module).
    password_auth: bool = False

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).resolve()
        self.bindir = find_bindir()
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """The superuser through the Unix socket in the data folder (no password needed)."""
        return f"postgresql://{self.user}@/{self.database}?host={self.datadir}&port={self.port}"

    @property
    def _client_host(self) -> str:
        return str(self.datadir) if self.password_auth else "127.0.0.1"

    def _write_hba(self) -> None:
        # Rewritten at every start: a data folder made before passwords were required trusted
        # every login; the socket's folder is the server user's alone.
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(
            "# Written by analytics_pipelines (lib/pgserver.py): the superuser through the socket,\n"
            "# every TCP login with a password.\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        self._hand_over(hba)

    def _run(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, cwd="/", input=stdin
        )
        if check and result.returncode != 0:
            raise PostgresUnavailable(
                f"{args[0]} failed: {(result.stderr or result.stdout).strip()}"
            )
        return result

    def _hand_over(self, path: Path) -> None:
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def is_running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.datadir), check=False).returncode == 0

    def start(self) -> str:
        """Initialise (once), start and create the database; return its URL."""
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if not (self.datadir / "PG_VERSION").exists():
            self.datadir.mkdir(parents=True, exist_ok=True)
            self._hand_over(self.datadir)
            self._run(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        if self.password_auth:
            self._write_hba()
            if self.is_running():
                self._run("pg_ctl", "reload", "-D", str(self.datadir))
        if not self.is_running():
            options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1"
            if not self.durable:
                options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
            log = self.datadir / "server.log"
            self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.datadir),
                "-l",
                str(log),
                "-o",
                options,
            )
        connection = ("-h", self._client_host, "-p", str(self.port), "-U", self.user)
        exists = self._run(
            "psql",
            *connection,
            "-d",
            "postgres",
            "-tA",
            "-v",
            f"db={self.database}",
            stdin="SELECT 1 FROM pg_database WHERE datname = :'db';\n",
        ).stdout.strip()
        if exists != "1":
            self._run("createdb", *connection, self.database)
        return self.url

    def stop(self) -> None:
        if self.is_running():
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.datadir), check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)
