"""Run-failure alerts: every failed run of this code location is logged and, if configured, posted."""

import dagster as dg

from analytics_pipelines.lib import alerts
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.settings import SettingsError, get_settings

log = get_logger(__name__)


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    description=(
        "Logs every failed run as a structured event and posts it (run, job, assets, partition, "
        "error, link) to ALERT_WEBHOOK_URL when that is set."
    ),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    try:
        settings = get_settings()
        webhook_url, webserver_url = settings.alert_webhook_url, settings.dagster_webserver_url
    except SettingsError as error:
        # The failure is still logged below; only the webhook is lost, and this says why.
        log.error("alert_settings_invalid", reason=str(error))
        webhook_url, webserver_url = None, None
    alert = alerts.failure_alert_from_context(context, webserver_url)
    alerts.send_failure_alert(alert, webhook_url, alerts.DEFAULT_POLICY)
