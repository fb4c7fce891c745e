"""Each anomalous cell goes to the alert webhook once (`alerted_at` marks it).

A cell is marked only after the receiver answered 2xx: one that is down gets the alert on a
later run, and a crash between the post and the mark repeats one alert rather than losing it.
Without ALERT_WEBHOOK_URL the structured `kpi_anomaly` log line is the alert and the cell is
marked, so configuring a webhook later announces new anomalies, not the whole history (the
failed-file alerts behave the same way, defs/ops/file_alerts.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analytics_pipelines.lib import alerts
from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.logging import get_logger
from analytics_pipelines.lib.ml.read import Anomaly, mark_alerted, unalerted_anomalies
from analytics_pipelines.lib.warehouse import Warehouse, dbapi_connection

log = get_logger(__name__)

# A burst (a first run over a long history) is announced over a few runs, not all at once.
MAX_ALERTS_PER_RUN = 25


@dataclass(frozen=True)
class AlertOutcome:
    sent: int = 0
    waiting: int = 0  # not delivered this run: retried on the next one
    reason: str | None = None
    cells: list[str] = field(default_factory=list)  # "period series" of the sent ones


def anomaly_payload(anomaly: Anomaly, kpi: KpiSpec) -> dict[str, object]:
    day = anomaly.period_date.isoformat()
    return {
        "event": "kpi_anomaly",
        **anomaly.as_json(),
        "unit": kpi.unit,
        "timezone": kpi.timezone,
        "command": f"analytics-pipelines kpi anomalies {kpi.name} --from {day} --to {day}",
    }


def send_anomaly_alerts(
    warehouse: Warehouse,
    kpi: KpiSpec,
    webhook_url: str | None,
    policy: alerts.RetryPolicy = alerts.DEFAULT_POLICY,
) -> AlertOutcome:
    with warehouse.connect() as conn:
        pending = unalerted_anomalies(dbapi_connection(conn), kpi.name, MAX_ALERTS_PER_RUN)
    sent: list[str] = []
    for anomaly in pending:
        payload = anomaly_payload(anomaly, kpi)
        log.warning("kpi_anomaly", **{k: v for k, v in payload.items() if k != "event"})
        if webhook_url and not alerts.post_json(webhook_url, payload, policy):
            # The receiver is down or refuses: the rest would fare no better now.
            return AlertOutcome(
                len(sent),
                len(pending) - len(sent),
                f"the webhook did not take the alert for {anomaly.period_date} "
                f"{anomaly.series}: retried on the next run",
                sent,
            )
        with warehouse.begin() as conn:
            mark_alerted(dbapi_connection(conn), kpi.name, anomaly.series_key, anomaly.period_date)
        sent.append(f"{anomaly.period_date} {anomaly.series}")
    return AlertOutcome(len(sent), 0, None, sent)
