"""Shared fixtures: a real PostgreSQL (throwaway unless DATABASE_URL is given) and a real S3 HTTP endpoint."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from analytics_pipelines.lib.pgserver import LocalPostgres, free_port
from analytics_pipelines.lib.settings import get_settings, normalise_database_url
from analytics_pipelines.lib.storage import LocalFolderStore, ObjectStore, S3Store
from analytics_pipelines.lib.warehouse import Warehouse

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def world_readable_tempdir(prefix: str) -> Path:
    # The throwaway server runs as the `postgres` user when tests run as root: it must reach the folder.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a server database: DATABASE_URL if given, else a throwaway server on a free port."""
    given = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if given:
        yield normalise_database_url(given)
        return
    folder = world_readable_tempdir("ap-pg-")
    server = LocalPostgres(folder / "data", free_port(), durable=False)
    try:
        yield normalise_database_url(server.start())
    finally:
        server.destroy()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> str:
    """The migrated test database, also exported as DATABASE_URL for code that reads settings."""
    command.upgrade(alembic_config(postgres_server_url), "head")
    os.environ["DATABASE_URL"] = postgres_server_url
    return postgres_server_url


@pytest.fixture
def scratch_database_url(postgres_server_url: str) -> Iterator[str]:
    """An empty database of its own, for tests that migrate up and down."""
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
    url = sa.make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(scope="session")
def warehouse(database_url: str) -> Iterator[Warehouse]:
    wh = Warehouse(database_url)
    yield wh
    wh.dispose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback, spoken to over HTTP like MinIO."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


S3_CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


def make_bucket(endpoint: str) -> str:
    bucket = f"bucket-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_store(s3_endpoint: str) -> S3Store:
    return S3Store(make_bucket(s3_endpoint), "tenant", endpoint_url=s3_endpoint, **S3_CREDENTIALS)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalFolderStore:
    root = tmp_path / "store"
    root.mkdir()
    return LocalFolderStore(root)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Every contract runs against both implementations."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
