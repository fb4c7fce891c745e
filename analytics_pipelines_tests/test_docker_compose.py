"""The Docker stack (docker-compose.yml, Dockerfile) and Dagster's instance files.

`docker-compose config` resolves the compose file exactly as `docker-compose up` would
(interpolation, YAML anchors, schema validation), without needing a Docker daemon. The
tests that need the `docker-compose` binary skip when it is missing; CI installs it
(Debian's `docker-compose` package).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from analytics_pipelines.cli.dev import dev_instance_yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"

PROJECT_SERVICES = ("migrate", "code-location", "webserver", "daemon")
ALL_SERVICES = {"postgres", "minio", "create-bucket", *PROJECT_SERVICES}
PROJECT_ENV_VARS = (
    "DATABASE_URL",
    "STORAGE_URL",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "S3_REGION",
    "LOG_FORMAT",
    "DAGSTER_HOME",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_PORT",
)
DAGSTER_HOME = "/opt/dagster/dagster_home"

requires_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="the docker-compose binary is not installed (CI installs Debian's docker-compose)",
)


def compose_config(tmp_path: Path, env_file: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`docker-compose config` with a controlled `.env` and no inherited interpolation vars."""
    env_path = tmp_path / "compose.env"
    env_path.write_text("".join(f"{k}={v}\n" for k, v in (env_file or {}).items()))
    # Only what the binary itself needs: a developer's own POSTGRES_PASSWORD etc. must
    # not change what is being asserted.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_path), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        pytest.skip("the docker-compose binary is not installed")
    return compose_config(tmp_path_factory.mktemp("compose"))["services"]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """{dependency: condition}, for both the short (list) and the long (mapping) form."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published_ports(service: Mapping[str, Any]) -> set[tuple[int, int]]:
    """{(published, target)} from compose v1 strings or compose v2 mappings."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add((int(port["published"]), int(port["target"])))
        else:
            *_, published, target = str(port).split("/")[0].split(":")
            ports.add((int(published), int(target)))
    return ports


def healthcheck_test(service: Mapping[str, Any]) -> str:
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), "healthcheck disabled"
    test = check.get("test")
    assert test, "no healthcheck"
    return " ".join(test) if isinstance(test, list) else str(test)


def command_of(service: Mapping[str, Any]) -> str:
    command = service.get("command") or []
    return " ".join(command) if isinstance(command, list) else str(command)


# --- docker-compose.yml ------------------------------------------------------------


@requires_compose
def test_compose_has_every_service(services: dict[str, Any]) -> None:
    assert set(services) == ALL_SERVICES


@requires_compose
def test_infrastructure_services(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in healthcheck_test(postgres)
    assert any(str(v).startswith("postgres_data:") for v in postgres["volumes"])
    assert (5432, 5432) in published_ports(postgres)

    minio = services["minio"]
    assert minio["image"].startswith("minio/minio")
    assert healthcheck_test(minio)
    assert {(9000, 9000), (9001, 9001)} <= published_ports(minio)
    assert any(str(v).startswith("minio_data:") for v in minio["volumes"])

    bucket = services["create-bucket"]
    assert bucket["image"].startswith("minio/mc")
    assert depends_on(bucket) == {"minio": "service_healthy"}
    assert "mc mb" in command_of(bucket)
    assert bucket.get("restart", "no") == "no"


@requires_compose
def test_project_services_share_one_image(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in PROJECT_SERVICES}
    assert len(images) == 1
    for name in PROJECT_SERVICES:
        build = services[name]["build"]
        assert Path(build["context"]).resolve() == ROOT
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"


@requires_compose
def test_startup_order(services: dict[str, Any]) -> None:
    assert depends_on(services["migrate"]) == {"postgres": "service_healthy"}
    assert services["migrate"].get("restart", "no") == "no"
    code_location = depends_on(services["code-location"])
    assert code_location["postgres"] == "service_healthy"
    assert code_location["migrate"] == "service_completed_successfully"
    assert code_location["create-bucket"] == "service_completed_successfully"
    for name in ("webserver", "daemon"):
        deps = depends_on(services[name])
        assert deps["migrate"] == "service_completed_successfully", name
        assert deps["code-location"] == "service_healthy", name


@requires_compose
def test_project_service_commands(services: dict[str, Any]) -> None:
    migrate_command = command_of(services["migrate"])
    assert "migrate.sh" in migrate_command
    script = (ROOT / migrate_command.split()[0].replace("/app/", "", 1)).read_text()
    steps = ["docker/prepare_database.py", "alembic upgrade head", "access apply"]
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions)  # roles first, then the tables, then the audiences

    code_location = services["code-location"]
    assert command_of(code_location) == (
        "dagster code-server start -h 0.0.0.0 -p 4000 -m analytics_pipelines.definitions"
        " --location-name analytics_pipelines"
    )
    assert "grpc-health-check" in healthcheck_test(code_location)

    webserver = services["webserver"]
    assert command_of(webserver).startswith("dagster-webserver")
    assert f"-w {DAGSTER_HOME}/workspace.yaml" in command_of(webserver)
    assert (3000, 3000) in published_ports(webserver)
    assert healthcheck_test(webserver)

    daemon = services["daemon"]
    assert command_of(daemon).startswith("dagster-daemon run")
    assert f"-w {DAGSTER_HOME}/workspace.yaml" in command_of(daemon)


@requires_compose
def test_project_environment(services: dict[str, Any]) -> None:
    for name in PROJECT_SERVICES:
        env = services[name]["environment"]
        missing = [var for var in PROJECT_ENV_VARS if var not in env]
        assert not missing, f"{name} lacks {missing}"
        assert re.fullmatch(
            r"postgresql\+psycopg2://[^@]+@postgres:5432/analytics", env["DATABASE_URL"]
        )
        assert env["STORAGE_URL"] == "s3://analytics/"
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["S3_REGION"] == "us-east-1"
        assert env["LOG_FORMAT"] == "json"
        assert env["DAGSTER_HOME"] == DAGSTER_HOME
        assert env["DAGSTER_PG_HOST"] == "postgres"
        assert str(env["DAGSTER_PG_PORT"]) == "5432"
        # Dagster's storage must not share the warehouse database (both use alembic_version).
        assert env["DAGSTER_PG_DB"] != "analytics"


@requires_compose
def test_secrets_come_from_the_env_file(tmp_path: Path) -> None:
    env_file = {
        "POSTGRES_USER": "warehouse",
        "POSTGRES_PASSWORD": "pg-from-env-file",
        "PIPELINES_DB_PASSWORD": "pipelines-from-env-file",
        "MINIO_ROOT_USER": "minio-user",
        "MINIO_ROOT_PASSWORD": "minio-from-env-file",
    }
    services = compose_config(tmp_path, env_file)["services"]
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_USER"] == "warehouse"
    assert postgres["POSTGRES_PASSWORD"] == "pg-from-env-file"
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "minio-from-env-file"
    for name in PROJECT_SERVICES:
        env = services[name]["environment"]
        # Every service runs as the pipeline's role; only `migrate` holds the superuser's URL.
        assert env["DATABASE_URL"].startswith(
            "postgresql+psycopg2://analytics_pipelines:pipelines-from-env-file@postgres:5432/"
        )
        assert env["DAGSTER_PG_USER"] == "analytics_pipelines"
        assert env["DAGSTER_PG_PASSWORD"] == "pipelines-from-env-file"
        admin = env.get("ACCESS_ADMIN_DATABASE_URL")
        if name == "migrate":
            assert admin and admin.startswith("postgresql+psycopg2://warehouse:pg-from-env-file@")
        else:
            assert admin is None, name
        assert env["S3_ACCESS_KEY_ID"] == "minio-user"
        assert env["S3_SECRET_ACCESS_KEY"] == "minio-from-env-file"


def test_no_secret_is_hard_coded_in_compose_file() -> None:
    """Every password/secret in docker-compose.yml is a ${VAR:-dev default} interpolation."""
    secret_lines = [
        line.strip()
        for line in COMPOSE_FILE.read_text().splitlines()
        if re.match(r"\s*[A-Z_]*(PASSWORD|SECRET)[A-Z_]*:", line)
    ]
    assert secret_lines
    for line in secret_lines:
        assert re.fullmatch(r"[A-Z_]+: \$\{[A-Z_]+(:-[^}]*)?\}", line), line
    for line in COMPOSE_FILE.read_text().splitlines():
        if "ACCESS_ADMIN_DATABASE_URL:" in line:
            assert "${POSTGRES_PASSWORD" in line, line
        elif "DATABASE_URL:" in line:
            assert "${PIPELINES_DB_PASSWORD" in line, line


# --- Dockerfile --------------------------------------------------------------------


def test_dockerfile_layers_and_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    deps = text.index("uv sync --frozen --no-dev --no-install-project")
    assert text.index("COPY pyproject.toml uv.lock") < deps < text.index("COPY . .")
    assert re.search(r"^RUN uv sync --frozen --no-dev$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert f"DAGSTER_HOME={DAGSTER_HOME}" in text
    assert 'cp docker/dagster.yaml docker/workspace.yaml "$DAGSTER_HOME/"' in text
    cmd = re.findall(r"^CMD (.+)$", text, re.MULTILINE)[-1]
    assert '"code-server", "start"' in cmd and "analytics_pipelines.definitions" in cmd
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".env"} <= set(ignored)


# --- docker/dagster.yaml / docker/workspace.yaml -------------------------------------


def load_yaml(name: str) -> dict[str, Any]:
    """A YAML file of the repository, by its path from the root."""
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def test_dagster_yaml_storage_and_run_queue() -> None:
    config = load_yaml("docker/dagster.yaml")
    postgres_db = config["storage"]["postgres"]["postgres_db"]
    assert postgres_db["username"] == {"env": "DAGSTER_PG_USER"}
    assert postgres_db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert postgres_db["hostname"] == {"env": "DAGSTER_PG_HOST"}
    assert postgres_db["db_name"] == {"env": "DAGSTER_PG_DB"}
    assert postgres_db["port"] == {"env": "DAGSTER_PG_PORT"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    assert config["telemetry"]["enabled"] is False
    runs = config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] >= 1
    assert runs["tag_concurrency_limits"]
    assert config["concurrency"]["pools"]["default_limit"] >= 1


def _dagster_instance_info(dagster_home: Path, env: Mapping[str, str]) -> str:
    """`dagster instance info`: Dagster loads the instance from `dagster_home` and connects."""
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "info"],
        env={**os.environ, **env, "DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_shipped_dagster_yaml_loads_and_connects(tmp_path: Path, scratch_database_url: str) -> None:
    """Dagster accepts the file, resolves its {env: ...} values and reaches PostgreSQL with them."""
    url = make_url(scratch_database_url)
    shutil.copy(ROOT / "docker/dagster.yaml", tmp_path / "dagster.yaml")
    info = _dagster_instance_info(
        tmp_path,
        {
            "DAGSTER_PG_HOST": str(url.host),
            "DAGSTER_PG_USER": str(url.username),
            "DAGSTER_PG_PASSWORD": str(url.password or ""),
            "DAGSTER_PG_DB": str(url.database),
            "DAGSTER_PG_PORT": str(url.port),
        },
    )
    assert "run_storage: PostgresRunStorage" in info
    assert "event_log_storage: PostgresEventLogStorage" in info
    assert "module: dagster\n  class: DefaultRunLauncher" in info
    assert "max_concurrent_runs: 4" in info
    # It reached the database: Dagster's schema is there and current.
    assert "run_storage:\n    current: " in info


def test_dev_instance_has_the_shipped_shape(tmp_path: Path, scratch_database_url: str) -> None:
    """`analytics-pipelines dev` writes the same sections as dagster.yaml, and Dagster loads it."""
    shipped = load_yaml("docker/dagster.yaml")
    dev_yaml = dev_instance_yaml(scratch_database_url)
    dev = yaml.safe_load(dev_yaml)
    assert dev["nux"]["enabled"] is False  # no community pop-up in make dev's UI
    # Sensors tick and submit their runs in threads in both (a drop's KPI runs side by side).
    assert dev["sensors"] == shipped["sensors"]
    for section in ("run_coordinator", "run_launcher"):
        assert {k: dev[section][k] for k in ("module", "class")} == {
            k: shipped[section][k] for k in ("module", "class")
        }, section
    assert "max_concurrent_runs" not in dev["run_coordinator"].get("config", {})
    assert dev["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert set(dev["concurrency"]["pools"]) == set(shipped["concurrency"]["pools"])

    (tmp_path / "dagster.yaml").write_text(dev_yaml)
    # DAGSTER_HOME alone is enough: the file names its database.
    info = _dagster_instance_info(tmp_path, {})
    assert "run_storage: PostgresRunStorage" in info
    assert "module: dagster\n  class: DefaultRunLauncher" in info
    assert "max_concurrent_runs: 4" in info


def test_dagster_yaml_names_an_installed_driver() -> None:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed."""
    scheme = load_yaml("docker/dagster.yaml")["storage"]["postgres"]["postgres_db"]["scheme"]
    assert make_url(f"{scheme}://u@h/d").get_dialect().driver == "psycopg2"


def test_workspace_points_at_the_grpc_code_location() -> None:
    workspace = load_yaml("docker/workspace.yaml")
    (entry,) = workspace["load_from"]
    grpc = entry["grpc_server"]
    assert grpc["host"] == "code-location"
    assert grpc["port"] == 4000
    assert grpc["location_name"] == "analytics_pipelines"


def test_migrate_prepares_a_pipeline_role_without_privileges_and_migrates_as_it(
    scratch_database_url: str, tmp_path: Path
) -> None:
    """docker/migrate.sh's steps on a real server: the superuser prepares the role, the role
    runs every migration, the superuser applies the audiences; the role cannot create roles."""
    import psycopg2

    admin = make_url(scratch_database_url)
    dagster_db = f"{admin.database}_dagster"
    runtime = admin.set(username="analytics_pipelines", password="pipelines-test-password")
    env = {
        **os.environ,
        "ACCESS_ADMIN_DATABASE_URL": scratch_database_url,
        "POSTGRES_DB": str(admin.database),
        "DAGSTER_PG_DB": dagster_db,
        "PIPELINES_DB_PASSWORD": "pipelines-test-password",
        "DATABASE_URL": runtime.render_as_string(hide_password=False),
        "STORAGE_URL": f"file://{tmp_path}",
    }
    env.pop("CATALOG_DIR", None)
    bin_dir = Path(sys.executable).parent
    steps = [
        [sys.executable, str(ROOT / "docker/prepare_database.py")],
        [str(bin_dir / "alembic"), "upgrade", "head"],
        [str(bin_dir / "analytics-pipelines"), "access", "apply"],
    ]
    try:
        for step in steps:
            done = subprocess.run(
                step, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, (step, done.stdout, done.stderr)
        conn = psycopg2.connect(
            host=admin.host, port=admin.port, dbname=admin.database, user=admin.username
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles"
                    " WHERE rolname = 'analytics_pipelines'"
                )
                assert cursor.fetchone() == (False, False, False, False)
                cursor.execute(
                    "SELECT datname, pg_get_userbyid(datdba) FROM pg_database"
                    " WHERE datname = ANY(%s)",
                    ([admin.database, dagster_db],),
                )
                assert dict(cursor.fetchall()) == {
                    admin.database: "analytics_pipelines",
                    dagster_db: "analytics_pipelines",
                }
                # The migrations' tables are the role's, and the demo audiences' roles exist.
                cursor.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'ingest'")
                assert {owner for (owner,) in cursor.fetchall()} == {"analytics_pipelines"}
                cursor.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'ap_audience_%%'")
                assert cursor.fetchone()[0] >= 1
                cursor.execute("SET ROLE analytics_pipelines")
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cursor.execute("CREATE ROLE intruder")
        finally:
            conn.close()
    finally:
        _forget_demo_audiences(admin, dagster_db)


def _forget_demo_audiences(admin: Any, dagster_db: str) -> None:
    """Roles are the cluster's: leave neither the Dagster database nor a demo audience behind,
    unless an audience holds privileges in another test's database (then it stays theirs)."""
    import psycopg2
    from psycopg2 import sql

    from analytics_pipelines.lib.access.models import audience_role
    from analytics_pipelines.lib.catalog import load_catalog
    from analytics_pipelines.lib.settings import DEMO_CATALOG_DIR

    roles = [sql.Identifier(audience_role(a)) for a in load_catalog(DEMO_CATALOG_DIR).audiences]

    def run(database: str, statements: list[Any]) -> None:
        conn = psycopg2.connect(
            host=admin.host, port=admin.port, dbname=database, user=admin.username
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    with contextlib.suppress(psycopg2.errors.DependentObjectsStillExist):
                        cursor.execute(statement)
        finally:
            conn.close()

    run(admin.database, [sql.SQL("DROP OWNED BY {}").format(role) for role in roles])
    drop_dagster = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(dagster_db)
    )
    run("postgres", [drop_dagster, *(sql.SQL("DROP ROLE IF EXISTS {}").format(r) for r in roles)])
