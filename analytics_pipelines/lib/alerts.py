"""Failure alerts: the payload describing a failed run, and posting it to a webhook without ever raising."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from analytics_pipelines.lib.logging import get_logger

log = get_logger(__name__)

DEFAULT_WEBSERVER_URL = "http://localhost:3000"
# Errors longer than this are cut: chat webhooks reject huge bodies, the UI link has the rest.
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    timeout_seconds: float = 5.0
    first_backoff_seconds: float = 1.0

    def backoff(self, attempt: int) -> float:
        """Pause after the given failed attempt (1-based): 1 s, 2 s, 4 s, ..."""
        return float(self.first_backoff_seconds * (2 ** (attempt - 1)))


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


def _retryable_status(status: int) -> bool:
    # Client errors other than timeout / rate limit will not change on a retry.
    return status >= 500 or status in (408, 429)


def post_json(url: str, payload: dict[str, Any], policy: RetryPolicy = DEFAULT_POLICY) -> bool:
    """POST `payload` as JSON; retry with exponential backoff; True when the receiver took it.

    Never raises: an alert that cannot be delivered is logged, it must not fail the caller.
    """
    body = json.dumps(payload, default=str).encode("utf-8")
    where = _where(url)
    for attempt in range(1, policy.attempts + 1):
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "analytics-pipelines"},
        )
        reason: str
        retry = True
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout_seconds) as response:
                status = response.status
            if 200 <= status < 300:
                log.info("webhook_delivered", url=where, status=status, attempt=attempt)
                return True
            reason = f"HTTP {status}"
            retry = _retryable_status(status)
        except urllib.error.HTTPError as error:
            reason = f"HTTP {error.code}"
            retry = _retryable_status(error.code)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            cause = getattr(error, "reason", error)
            reason = f"{type(cause).__name__}: {cause}"
        except Exception as error:  # an alert must never take the sensor down
            reason = f"{type(error).__name__}: {error}"
            retry = False
        if not retry or attempt == policy.attempts:
            log.error(
                "webhook_failed",
                url=where,
                attempt=attempt,
                attempts=policy.attempts,
                reason=reason,
            )
            return False
        pause = policy.backoff(attempt)
        log.warning("webhook_retry", url=where, attempt=attempt, reason=reason, retry_in_s=pause)
        time.sleep(pause)
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
