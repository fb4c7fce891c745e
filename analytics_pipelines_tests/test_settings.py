"""Settings fail fast, naming every bad variable, at every entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analytics_pipelines.lib.settings import SettingsError, load_settings, mask_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SETTING_NAMES = (
    "DATABASE_URL",
    "STORAGE_URL",
    "S3_ENDPOINT_URL",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "CATALOG_DIR",
)


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def test_every_missing_variable_is_named(bare_env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "DATABASE_URL is not set" in message
    assert "STORAGE_URL is not set" in message


def test_every_invalid_variable_is_named_with_what_is_expected(
    bare_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@db/x")
    monkeypatch.setenv("STORAGE_URL", "ftp://files/x")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    monkeypatch.setenv("S3_ENDPOINT_URL", "minio:9000")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for expected in (
        "DATABASE_URL is invalid: expected a PostgreSQL URL",
        "STORAGE_URL is invalid ('ftp://files/x'): expected s3://bucket[/prefix] or file:///absolute/path",
        "LOG_FORMAT is invalid ('xml'): expected console or json",
        "S3_ENDPOINT_URL is invalid ('minio:9000')",
    ):
        assert expected in message
    assert "hunter2" not in message


def test_bare_postgres_url_gets_the_psycopg2_driver(bare_env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@db:5432/analytics")
    monkeypatch.setenv("STORAGE_URL", "s3://landing/tenant-a")
    settings = load_settings()
    assert settings.database_url_plain == "postgresql+psycopg2://app:secret@db:5432/analytics"
    assert settings.database_url_masked == "postgresql+psycopg2://app:***@db:5432/analytics"
    assert ":secret@" not in repr(settings)


def test_mask_url_leaves_passwordless_urls_alone() -> None:
    assert mask_url("postgresql://app@db/x") == "postgresql://app@db/x"


def test_values_come_from_dotenv(bare_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgres://u@h/d\nSTORAGE_URL=file:///srv/data\nLOG_LEVEL=debug\n"
    )
    settings = load_settings()
    assert settings.storage_url == "file:///srv/data"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("command", "also_named"),
    [
        ([sys.executable, "-m", "analytics_pipelines.cli", "health"], "DATABASE_URL is not set"),
        # Loading the definitions needs no database: only the invalid value is named.
        ([sys.executable, "-c", "from analytics_pipelines.definitions import defs; defs()"], None),
    ],
    ids=["cli", "definitions"],
)
def test_entry_points_exit_2_with_one_message_and_no_traceback(
    bare_env: dict[str, str], command: list[str], also_named: str | None
) -> None:
    bare_env["STORAGE_URL"] = "gopher://x"
    result = subprocess.run(command, env=bare_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "STORAGE_URL is invalid ('gopher://x')" in result.stderr
    if also_named:
        assert also_named in result.stderr
    else:
        assert "DATABASE_URL" not in result.stderr
