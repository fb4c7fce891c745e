"""The blocking quarantine-rate rule, shared by the `clean/<source>` check and every KPI refresh.

One rule, one measurement: `quarantine_verdict` compares `latest_quarantine_rate` (the
quarantined share of the file versions cleaned by the latest clean run) with the source's
`max_quarantine_rate`. The asset check reports it; the KPI invalidation sensor, the schedules
and the KPI asset body obey it. Measuring the warehouse (not reading the check's last
evaluation) means the verdict cannot disagree with the check, and it changes in the same
transaction that changes the data: a clean run commits its rows, its touched periods and its
quarantine counters together, so a sensor tick never sees a bad file's periods without also
seeing the block.

A source stays blocked until its latest clean run is under the threshold again: a quarantine
replay that releases rows lowers the counters of those same file versions; a corrected file is a
newer clean run (so is any later delivery: the check measures the latest clean run only, and the
KPIs follow it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from analytics_pipelines.lib.catalog.models import SourceSpec
from analytics_pipelines.lib.clean.quality import QuarantineRate, latest_quarantine_rate
from analytics_pipelines.lib.kpi.plan import KpiPlan, kpi_sources
from analytics_pipelines.lib.warehouse import Warehouse

# The asset check's name (constant, also used in the reasons users read).
QUARANTINE_RATE_CHECK = "quarantine_rate"


@dataclass(frozen=True)
class QuarantineVerdict:
    source: str
    measured: QuarantineRate
    threshold: float

    @property
    def passed(self) -> bool:
        return self.measured.rate <= self.threshold

    @property
    def inspect_command(self) -> str:
        return f"analytics-pipelines quarantine show {self.source}"

    @property
    def summary(self) -> str:
        """The check's description: counts, rate and threshold."""
        text = (
            f"{self.measured.quarantined} of {self.measured.rows} rows quarantined"
            f" ({self.measured.rate:.1%}, threshold {self.threshold:.1%})"
        )
        return text if self.passed else f"{text}; see `{self.inspect_command}`"

    @property
    def reason(self) -> str:
        """Why KPIs of this source are not refreshed (only meaningful when not passed)."""
        return (
            f"blocked by check {QUARANTINE_RATE_CHECK} on clean/{self.source}: "
            f"{self.measured.quarantined} of {self.measured.rows} rows of the latest clean run "
            f"quarantined, rate {self.measured.rate:.1%} > threshold {self.threshold:.1%}; "
            f"see `{self.inspect_command}`"
        )


def quarantine_verdict(warehouse: Warehouse, source: SourceSpec) -> QuarantineVerdict:
    return QuarantineVerdict(
        source.name, latest_quarantine_rate(warehouse, source), source.max_quarantine_rate
    )


def blocked_sources(
    warehouse: Warehouse, sources: Iterable[SourceSpec]
) -> dict[str, QuarantineVerdict]:
    """The failing verdicts among `sources`, by source name."""
    verdicts = (quarantine_verdict(warehouse, s) for s in {s.name: s for s in sources}.values())
    return {v.source: v for v in verdicts if not v.passed}


def kpi_blocks(
    plans: Mapping[str, KpiPlan], names: Iterable[str], blocked: Mapping[str, QuarantineVerdict]
) -> dict[str, list[QuarantineVerdict]]:
    """The KPIs among `names` that must not refresh, with the verdicts that block each."""
    result: dict[str, list[QuarantineVerdict]] = {}
    for name in names:
        verdicts = [blocked[s.name] for s in kpi_sources(plans, name) if s.name in blocked]
        if verdicts:
            result[name] = verdicts
    return result


def held_message(holds: Mapping[str, list[QuarantineVerdict]]) -> str:
    """'KPIs a, b held: <reason>' per distinct block, for tick logs and skip reasons."""
    by_reason: dict[str, list[str]] = {}
    for name, verdicts in sorted(holds.items()):
        for verdict in verdicts:
            by_reason.setdefault(verdict.reason, []).append(name)
    return "; ".join(
        f"not refreshing {', '.join(names)} ({reason})" for reason, names in by_reason.items()
    )
