"""Failed-file alerts: a file our readers reject leaves its run green, so the ledger is watched too."""

import time
from collections.abc import Sequence

import dagster as dg

from analytics_pipelines.lib import alerts
from analytics_pipelines.lib.ingest import file_status
from analytics_pipelines.lib.ingest.config import definitions_catalog, sensor_interval_seconds
from analytics_pipelines.lib.settings import SettingsError, get_settings
from analytics_pipelines.lib.warehouse import dbapi_connection
from analytics_pipelines.resources import WarehouseResource

FAILED_FILE_ALERT_SENSOR = "failed_file_alert_sensor"
# A burst of failures is announced over a few ticks rather than in one tick that times out.
MAX_ALERTS_PER_TICK = 25
# No new post starts after this; a tick must finish well inside Dagster's 60 s sensor timeout.
TICK_BUDGET_SECONDS = 30.0


def build_failed_file_alert_sensor(sources: Sequence[str]) -> dg.SensorDefinition:
    """One alert per failed file version of these sources, marked `alerted_at` once delivered.

    The ledger is the sensor's memory (no cursor): a version is marked only after the receiver
    answered 2xx, so a receiver that is down gets it on a later tick, and a crash between the
    post and the mark repeats one alert rather than losing it. Without ALERT_WEBHOOK_URL the
    structured `file_failed` log line is the alert: the version is marked, so configuring a
    webhook later announces new failures, not the whole history.
    """
    watched = sorted(sources)

    @dg.sensor(
        name=FAILED_FILE_ALERT_SENSOR,
        minimum_interval_seconds=sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Posts every failed file version (source, key, file id, etag, reason, run) to "
            "ALERT_WEBHOOK_URL once, retrying on later ticks until the receiver takes it; "
            "without a webhook the failure is logged once."
        ),
    )
    def failed_file_alert_sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> dg.SkipReason:
        try:
            settings = get_settings()
        except SettingsError as error:
            # Nothing is marked: the alerts go out once the settings are fixed.
            return dg.SkipReason(f"settings are invalid, no alert sent: {error}")
        webhook_url = settings.alert_webhook_url
        started = time.monotonic()
        with warehouse.get_warehouse().connect() as conn:
            pending = file_status.unalerted_failures(
                dbapi_connection(conn), watched, MAX_ALERTS_PER_TICK
            )
        sent: list[int] = []
        for version in pending:
            if time.monotonic() - started > TICK_BUDGET_SECONDS:
                break
            alert = alerts.file_failure_alert(version, settings.dagster_webserver_url)
            delivered = alerts.send_file_failure_alert(alert, webhook_url, alerts.DEFAULT_POLICY)
            if webhook_url and not delivered:
                # The receiver is down or refuses: later versions would fare no better now.
                left = len(pending) - len(sent)
                context.log.warning(
                    f"alert for file {version.file_id} ({version.key}) not delivered; "
                    f"{left} failed version(s) wait for the next tick"
                )
                return dg.SkipReason(
                    f"{len(sent)} alert(s) delivered; the webhook did not take the alert for file "
                    f"{version.file_id} ({version.key}): retried on the next tick"
                )
            with warehouse.get_warehouse().begin() as conn:
                file_status.mark_alerted(dbapi_connection(conn), version.file_id)
            sent.append(version.file_id)
        if not sent:
            return dg.SkipReason("no failed file version waits for an alert")
        channel = (
            "posted to the webhook" if webhook_url else "logged (ALERT_WEBHOOK_URL is not set)"
        )
        return dg.SkipReason(
            f"{len(sent)} failed file version(s) {channel}: files {', '.join(map(str, sent))}"
        )

    return failed_file_alert_sensor


@dg.definitions
def failed_file_alerts() -> dg.Definitions:
    return dg.Definitions(
        sensors=[build_failed_file_alert_sensor(list(definitions_catalog().sources))]
    )
