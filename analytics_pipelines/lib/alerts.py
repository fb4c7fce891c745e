"""Failure alerts: the payload describing a failed run, and posting it to a webhook without ever raising."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Self

import dagster as dg
import urllib3

from analytics_pipelines.lib.ingest.file_status import FileVersion
from analytics_pipelines.lib.logging import get_logger

log = get_logger(__name__)

DEFAULT_WEBSERVER_URL = "http://localhost:3000"
# Errors longer than this are cut: chat webhooks reject huge bodies, the UI link has the rest.
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one webhook delivery; turned into a `urllib3.Retry` per post.

    Backoff is urllib3's: no pause before the first retry, then `backoff_factor * 2**(n-1)`
    seconds before retry n (2 s, 4 s, ... with the default factor of 1 s).
    """

    attempts: int = 3
    timeout_seconds: float = 5.0
    first_backoff_seconds: float = 1.0


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class FailureAlert:
    run_id: str
    job: str
    assets: list[str]
    partition: str | None
    error: str
    run_url: str
    failed_steps: list[dict[str, str]] = field(default_factory=list)
    event: str = "run_failed"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run_url(webserver_url: str | None, run_id: str) -> str:
    base = (webserver_url or DEFAULT_WEBSERVER_URL).rstrip("/")
    return f"{base}/runs/{run_id}"


def shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _where(url: str) -> str:
    # Webhook URLs often carry their secret in the path (Slack, Teams): log the host only.
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


# Server errors, timeouts and rate limits may pass on a retry; other client errors will not.
_RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})


def _reason(response: urllib3.BaseHTTPResponse | None, error: Exception | None) -> str:
    if response is not None:
        return f"HTTP {response.status}"
    # urllib3 wraps the cause (timeout, refused connection) in its own error types.
    cause = getattr(error, "reason", None) or error
    return f"{type(cause).__name__}: {cause}"


class _LoggedRetry(urllib3.Retry):
    """urllib3's retry, logging every retry it decides on (host only: paths carry secrets)."""

    where: str = ""

    def new(self, **kwargs: Any) -> Self:
        retry = super().new(**kwargs)
        retry.where = self.where
        return retry

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: urllib3.BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        following = super().increment(method, url, response, error, _pool, _stacktrace)
        log.warning(
            "webhook_retry",
            url=self.where,
            attempt=len(following.history),
            reason=_reason(response, error),
            retry_in_s=following.get_backoff_time(),
        )
        return following


def _retry(policy: RetryPolicy, where: str) -> _LoggedRetry:
    retry = _LoggedRetry(
        total=policy.attempts - 1,
        # POST is not idempotent for urllib3; a webhook receiver treats a repeat as one more
        # notice, which is better than a lost one.
        allowed_methods=None,
        status_forcelist=_RETRY_STATUSES,
        backoff_factor=policy.first_backoff_seconds,
        raise_on_status=False,
        raise_on_redirect=False,
        # A receiver asking for "Retry-After: 3600" must not hold the sensor tick that long.
        respect_retry_after_header=False,
    )
    retry.where = where
    return retry


def post_json(url: str, payload: dict[str, Any], policy: RetryPolicy = DEFAULT_POLICY) -> bool:
    """POST `payload` as JSON, retried by `urllib3.Retry`; True when the receiver took it.

    Never raises: an alert that cannot be delivered is logged, it must not fail the caller.
    """
    body = json.dumps(payload, default=str).encode("utf-8")
    where = _where(url)
    timeout = urllib3.Timeout(connect=policy.timeout_seconds, read=policy.timeout_seconds)
    attempt = policy.attempts
    try:
        with urllib3.PoolManager(timeout=timeout) as http:
            response = http.request(
                "POST",
                url,
                body=body,
                headers={"Content-Type": "application/json", "User-Agent": "analytics-pipelines"},
                retries=_retry(policy, where),
            )
        status = response.status
        history = response.retries.history if response.retries is not None else ()
        attempt = len(history) + 1
        if 200 <= status < 300:
            log.info("webhook_delivered", url=where, status=status, attempt=attempt)
            return True
        reason = f"HTTP {status}"
    except urllib3.exceptions.MaxRetryError as error:
        reason = _reason(None, error)
    except Exception as error:  # an alert must never take the sensor down
        reason = f"{type(error).__name__}: {error}"
    log.error("webhook_failed", url=where, attempt=attempt, attempts=policy.attempts, reason=reason)
    return False


def send_failure_alert(
    alert: FailureAlert, webhook_url: str | None, policy: RetryPolicy = DEFAULT_POLICY
) -> bool:
    """Log the failure as one structured event; post it when a webhook is configured."""
    log.error(
        "run_failed",
        run_id=alert.run_id,
        job=alert.job,
        assets=alert.assets,
        partition=alert.partition,
        error=alert.error,
        run_url=alert.run_url,
        failed_steps=[step["step"] for step in alert.failed_steps],
    )
    if not webhook_url:
        return False
    return post_json(webhook_url, alert.as_json(), policy)


@dataclass(frozen=True)
class FileFailureAlert:
    """A file version that could not be loaded: its run stays green, so this is how people learn."""

    source: str
    key: str
    file_id: int
    etag: str
    reason: str
    failed_at: str
    run_id: str | None
    run_url: str | None
    command: str
    retry_command: str
    event: str = "file_failed"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def file_failure_alert(version: FileVersion, webserver_url: str | None) -> FileFailureAlert:
    """What a person needs to act on a failed file version, read from its ledger row."""
    return FileFailureAlert(
        source=version.source,
        key=version.key,
        file_id=version.file_id,
        etag=version.etag,
        reason=shorten(version.reason or "no reason recorded"),
        failed_at=version.when.isoformat(),
        run_id=version.run_id,
        run_url=run_url(webserver_url, version.run_id) if version.run_id else None,
        command=f"analytics-pipelines files {version.source} --status failed",
        retry_command=f"analytics-pipelines files retry {version.source} --file-id {version.file_id}",
    )


def send_file_failure_alert(
    alert: FileFailureAlert, webhook_url: str | None, policy: RetryPolicy = DEFAULT_POLICY
) -> bool:
    """Log the failed file as one structured event; True once a configured webhook took it."""
    fields = alert.as_json()
    log.error(fields.pop("event"), **fields)
    if not webhook_url:
        return False
    return post_json(webhook_url, alert.as_json(), policy)


PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_of(tags: Mapping[str, str]) -> str | None:
    """The run's partition, or `first...last` for a ranged backfill run."""
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}...{end}"
    return None


def _assets_of(context: dg.RunFailureSensorContext) -> list[str]:
    run = context.dagster_run
    keys = set(run.asset_selection or ())
    if not keys:
        # A run launched without an explicit selection still records which assets it planned.
        records = context.instance.get_records_for_run(
            run_id=run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            if event is not None and event.asset_key is not None:
                keys.add(event.asset_key)
    return sorted(key.to_user_string() for key in keys)


def failure_alert_from_context(
    context: dg.RunFailureSensorContext, webserver_url: str | None
) -> FailureAlert:
    """What a person needs to act on a failed run, read from the failure sensor's context."""
    run = context.dagster_run
    steps: list[dict[str, str]] = []
    for event in context.get_step_failure_events():
        error_info = getattr(event.event_specific_data, "error", None)
        # Dagster wraps user errors ("Error occurred while executing op ..."): report the cause.
        while getattr(error_info, "cause", None) is not None:
            error_info = error_info.cause  # type: ignore[union-attr]
        message = getattr(error_info, "message", None) or event.message or "step failed"
        steps.append({"step": event.step_key or "", "error": shorten(message, 1000)})
    if steps:
        error = "; ".join(f"{step['step']}: {step['error']}" for step in steps)
    else:
        # Failures outside a step (e.g. a resource that would not start) only have the run event.
        error = context.failure_event.message or "run failed"
    return FailureAlert(
        run_id=run.run_id,
        job=run.job_name,
        assets=_assets_of(context),
        partition=partition_of(run.tags),
        error=shorten(error),
        run_url=run_url(webserver_url, run.run_id),
        failed_steps=steps,
    )
