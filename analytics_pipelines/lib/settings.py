"""Runtime settings, read from the environment and `.env`, validated once at every entry point.

Where a value comes from, first match wins:

1. the process environment (`export`, docker-compose, CI);
2. `.env` in the current directory (what Dagster's own CLI reads too);
3. the `analytics-pipelines dev` stack running for this folder (`.data/dev-stack.json`,
   current only while its lock is held), so a second shell needs no exports.

Every entry point (the CLI, the code location, Alembic) calls `resolve_environment` first.
DATABASE_URL and STORAGE_URL are needed only by what connects: loading the definitions
(`dg check defs`, `dg list defs`) works without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_CATALOG_DIR = Path(__file__).resolve().parent.parent / "catalog"
DEV_DATA_DIR = Path(".data")
DOTENV_NAME = ".env"

# What a running dev stack shares with a second shell: our settings and where Dagster's
# instance is (DAGSTER_HOME).
PROJECT_VARIABLES = (
    "DATABASE_URL",
    "STORAGE_URL",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "S3_REGION",
    "CATALOG_DIR",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "SENSOR_INTERVAL_SECONDS",
    "ALERT_WEBHOOK_URL",
    "DAGSTER_WEBSERVER_URL",
    "KPI_PARTITIONS_START",
    "ACCESS_ADMIN_DATABASE_URL",
)
DAGSTER_INSTANCE_VARIABLES = ("DAGSTER_HOME",)

# Accept what people paste from their tools; the engine always runs on psycopg2 because
# SQLAlchemy 2.1 maps a bare `postgresql://` URL to psycopg 3, which dagster-postgres rejects.
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")

# What each variable expects, said in the error message instead of pydantic's jargon.
EXPECTATIONS: dict[str, str] = {
    "DATABASE_URL": "a PostgreSQL URL, e.g. postgresql://user:password@localhost:5432/analytics",
    "STORAGE_URL": "s3://bucket[/prefix] or file:///absolute/path",
    "ACCESS_ADMIN_DATABASE_URL": "a PostgreSQL URL of a role with CREATEROLE (access apply)",
    "S3_ENDPOINT_URL": "an http(s) URL of the S3/MinIO endpoint, e.g. http://localhost:9000",
    "S3_REGION": "an S3 region name, e.g. us-east-1",
    "CATALOG_DIR": "an existing directory holding sources/*.yaml and kpis/*.yaml",
    "LOG_FORMAT": "console or json",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "SENSOR_INTERVAL_SECONDS": "a whole number of seconds between 1 and 3600",
    "ALERT_WEBHOOK_URL": "an http(s) URL",
}


# Never echoed in an error message: they may carry a password.
_SECRET_VARIABLES = ("DATABASE_URL", "ACCESS_ADMIN_DATABASE_URL", "S3_SECRET_ACCESS_KEY")


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

    # Optional here so that the definitions load without a database; `load_settings` and the
    # properties below insist where a connection is made.
    database_url_given: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    storage_url_given: str | None = Field(
        default=None, validation_alias=AliasChoices("STORAGE_URL", "storage_url")
    )
    # Role management (`access apply`): a role with CREATEROLE, not the pipeline's own.
    access_admin_database_url: SecretStr | None = None
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

    @field_validator("database_url_given", "access_admin_database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> str | None:
        if value in (None, ""):
            return None
        return normalise_database_url(str(value))

    @field_validator("storage_url_given", mode="before")
    @classmethod
    def _storage_url(cls, value: object) -> str | None:
        if value in (None, ""):
            return None
        value = str(value)
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
    def database_url(self) -> SecretStr:
        if self.database_url_given is None:
            raise SettingsError(_missing("DATABASE_URL"))
        return self.database_url_given

    @property
    def storage_url(self) -> str:
        if self.storage_url_given is None:
            raise SettingsError(_missing("STORAGE_URL"))
        return self.storage_url_given

    @property
    def database_url_plain(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def database_url_masked(self) -> str:
        return mask_url(self.database_url_plain)

    @property
    def access_admin_url_plain(self) -> str:
        """Where roles are managed: ACCESS_ADMIN_DATABASE_URL, else DATABASE_URL."""
        if self.access_admin_database_url is not None:
            return self.access_admin_database_url.get_secret_value()
        return self.database_url_plain


_FIELD_VARIABLES = {"database_url_given": "DATABASE_URL", "storage_url_given": "STORAGE_URL"}


def _missing(name: str) -> str:
    return f"invalid settings:\n  {name} is not set: expected {EXPECTATIONS[name]}{_HOW_TO_SET}"


# Said once under every "not set": the three places a value can come from.
_HOW_TO_SET = (
    "\n(set it in the environment or in .env, or start `make dev`, whose settings every "
    "command of this folder uses while it runs)"
)


def missing_connections_line(missing: list[str], consequence: str = "") -> str:
    """One line for a command that must connect but has nothing to connect to."""
    names = " and ".join(missing)
    verb = "is" if len(missing) == 1 else "are"
    pronoun = "it" if len(missing) == 1 else "them"
    what = f"{names} {verb} not set" + (f" ({consequence})" if consequence else "")
    return (
        f"{what}: start `make dev` in this folder (every command here then uses its stack), "
        f"or set {pronoun} in the environment or in .env (see .env.example)"
    )


def _describe(error: ValidationError | None, missing: list[str]) -> str:
    problems = {name: f"  {name} is not set: expected {EXPECTATIONS[name]}" for name in missing}
    for item in error.errors() if error is not None else ():
        field_name = str(item["loc"][0]) if item["loc"] else "?"
        name = _FIELD_VARIABLES.get(field_name, field_name.upper())
        given = os.environ.get(name)
        if item["type"] == "missing":
            what = "is not set"
        elif given is not None and name not in _SECRET_VARIABLES:
            what = f"is invalid ({given!r})"
        else:
            what = "is invalid"
        problems.setdefault(
            name, f"  {name} {what}: expected {EXPECTATIONS.get(name, item['msg'])}"
        )
    message = "invalid settings:\n" + "\n".join(problems.values())
    return message + (_HOW_TO_SET if missing else "")


def _unset_connections() -> list[str]:
    return [
        name
        for name in ("DATABASE_URL", "STORAGE_URL")
        if not os.environ.get(name) and not dotenv_values(DOTENV_NAME).get(name)
    ]


def load_settings(*, connections: bool = True) -> Settings:
    """Read and validate the settings; raise SettingsError naming every bad variable.

    With `connections=False` (loading the definitions) DATABASE_URL and STORAGE_URL may be
    unset; a value that is set is still validated.
    """
    missing = _unset_connections() if connections else []
    try:
        settings = Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error, missing)) from None
    if missing:
        raise SettingsError(_describe(None, missing))
    return settings


def load_database_url() -> str:
    """Only DATABASE_URL, for tools that need nothing else (migrations)."""
    resolve_environment()
    given = os.environ.get("DATABASE_URL")
    if not given:
        raise SettingsError(_missing("DATABASE_URL"))
    try:
        return normalise_database_url(given)
    except ValueError:
        raise SettingsError(
            f"invalid settings:\n  DATABASE_URL is invalid: expected {EXPECTATIONS['DATABASE_URL']}"
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached: the environment does not change under a run).

    DATABASE_URL and STORAGE_URL may be unset (the definitions load without them); reading
    `database_url` or `storage_url` then raises SettingsError saying what to set.
    """
    return load_settings(connections=False)


@dataclass(frozen=True)
class EnvironmentSources:
    """Which variables `resolve_environment` filled, and from where (for `make dev` to say)."""

    from_dotenv: dict[str, str] = field(default_factory=dict)
    from_dev_stack: dict[str, str] = field(default_factory=dict)


def resolve_environment(*, dagster_instance: bool = True) -> EnvironmentSources:
    """Fill os.environ, without overriding it, from `.env`, then from a running dev stack.

    `dagster_instance=False` leaves DAGSTER_HOME alone: inside the code location Dagster has
    already chosen its instance, and a different one in the environment would only mislead.
    """
    from analytics_pipelines.lib.dev_lock import running_stack_environment

    from_dotenv = {
        name: value
        for name, value in dotenv_values(DOTENV_NAME).items()
        if value is not None and name not in os.environ
    }
    os.environ.update(from_dotenv)
    shared = PROJECT_VARIABLES + (DAGSTER_INSTANCE_VARIABLES if dagster_instance else ())
    from_dev_stack = {
        name: value
        for name, value in running_stack_environment(DEV_DATA_DIR).items()
        if name in shared and name not in os.environ
    }
    os.environ.update(from_dev_stack)
    _RESOLVED.from_dotenv.update(from_dotenv)
    _RESOLVED.from_dev_stack.update(from_dev_stack)
    return EnvironmentSources(from_dotenv, from_dev_stack)


# Everything this process took from `.env` and a dev stack, over all its calls.
_RESOLVED = EnvironmentSources()


def resolved_sources() -> EnvironmentSources:
    """What `resolve_environment` filled in this process so far (the entry point calls it first)."""
    return _RESOLVED
