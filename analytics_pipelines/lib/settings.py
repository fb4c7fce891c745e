"""Runtime settings, read from the environment and `.env`, validated once at every entry point."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_CATALOG_DIR = Path(__file__).resolve().parent.parent / "catalog"

# Accept what people paste from their tools; the engine always runs on psycopg2 because
# SQLAlchemy 2.1 maps a bare `postgresql://` URL to psycopg 3, which dagster-postgres rejects.
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")

# What each variable expects, said in the error message instead of pydantic's jargon.
EXPECTATIONS: dict[str, str] = {
    "DATABASE_URL": "a PostgreSQL URL, e.g. postgresql://user:password@localhost:5432/analytics",
    "STORAGE_URL": "s3://bucket[/prefix] or file:///absolute/path",
    "S3_ENDPOINT_URL": "an http(s) URL of the S3/MinIO endpoint, e.g. http://localhost:9000",
    "S3_REGION": "an S3 region name, e.g. us-east-1",
    "CATALOG_DIR": "an existing directory holding sources/*.yaml and kpis/*.yaml",
    "LOG_FORMAT": "console or json",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "SENSOR_INTERVAL_SECONDS": "a whole number of seconds between 1 and 3600",
    "ALERT_WEBHOOK_URL": "an http(s) URL",
}


class SettingsError(Exception):
    """Raised when the environment does not describe a usable deployment."""


def normalise_database_url(url: str) -> str:
    """Return the URL with the psycopg2 driver named explicitly."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _POSTGRES_SCHEMES:
        raise ValueError("expected a postgresql:// URL")
    return f"postgresql+psycopg2://{rest}"


def mask_url(url: str) -> str:
    """Hide the password of a URL so it can be logged or shown in the UI."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: SecretStr
    storage_url: str
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    catalog_dir: Path = DEMO_CATALOG_DIR
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    sensor_interval_seconds: int = Field(default=30, ge=1, le=3600)
    alert_webhook_url: str | None = None
    dagster_webserver_url: str = "http://localhost:3000"

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> str:
        return normalise_database_url(str(value))

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "s3" and parts.netloc:
            return value
        if parts.scheme == "file" and parts.path.startswith("/"):
            return value
        raise ValueError("unknown scheme or missing bucket/path")

    @field_validator("s3_endpoint_url", "alert_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("expected an http(s) URL")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("catalog_dir")
    @classmethod
    def _existing_dir(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError("directory does not exist")
        return value

    @property
    def database_url_plain(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def database_url_masked(self) -> str:
        return mask_url(self.database_url_plain)


def _describe(error: ValidationError) -> str:
    problems: dict[str, str] = {}
    for item in error.errors():
        name = str(item["loc"][0]).upper() if item["loc"] else "?"
        given = os.environ.get(name)
        if item["type"] == "missing":
            what = "is not set"
        elif given is not None and name not in ("DATABASE_URL", "S3_SECRET_ACCESS_KEY"):
            what = f"is invalid ({given!r})"
        else:
            what = "is invalid"
        problems.setdefault(
            name, f"  {name} {what}: expected {EXPECTATIONS.get(name, item['msg'])}"
        )
    return "invalid settings:\n" + "\n".join(problems.values())


def load_settings() -> Settings:
    """Read and validate the settings; raise SettingsError naming every bad variable."""
    try:
        return Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


def load_database_url() -> str:
    """Only DATABASE_URL, for tools that need nothing else (migrations)."""
    from dotenv import load_dotenv

    load_dotenv(override=False)
    given = os.environ.get("DATABASE_URL")
    if not given:
        raise SettingsError(
            f"invalid settings:\n  DATABASE_URL is not set: expected {EXPECTATIONS['DATABASE_URL']}"
        )
    try:
        return normalise_database_url(given)
    except ValueError:
        raise SettingsError(
            f"invalid settings:\n  DATABASE_URL is invalid: expected {EXPECTATIONS['DATABASE_URL']}"
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached: the environment does not change under a run)."""
    return load_settings()
