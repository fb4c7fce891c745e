"""What an audience declares (`access/*.yaml` of the catalog), validated by pydantic.

```yaml
audiences:
  - name: sales_north                  # PostgreSQL role ap_audience_sales_north (NOLOGIN)
    description: Sales managers of the north region.
    value_chains: [sales]              # every KPI of these value chains ...
    kpis: [tickets_opened]             # ... and these KPIs
    filter: region = 'north'           # rows of these dimension values only (no totals over region)
```
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from analytics_pipelines.lib.catalog.models import Name

ROLE_PREFIX = "ap_audience_"
# Views over rows of every KPI (lib/ml, migration 0007): granted to every audience, which sees
# in them what the policies of the tables beneath let it see.
SHARED_VIEWS = ("forecasts", "anomalies")
# PostgreSQL identifiers are at most 63 bytes; the role name is the prefix plus the audience name.
_MAX_NAME = 63 - len(ROLE_PREFIX)
_AUDIENCE_NAME = re.compile(rf"^[a-z][a-z0-9_]{{0,{_MAX_NAME - 1}}}$")


def audience_role(name: str) -> str:
    """The NOLOGIN role of an audience (a validated name, so a plain identifier)."""
    return ROLE_PREFIX + name


class AudienceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    value_chains: list[Name] = []
    kpis: list[Name] = []
    # Allow-listed filter language of KPIs (lib/kpi/expressions.py) over dimension view columns.
    filter: str | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _AUDIENCE_NAME.match(value):
            raise ValueError(
                f"audience name {value!r} is not allowed: use lower-case letters, digits and _, "
                f"starting with a letter, at most {_MAX_NAME} characters (it becomes the "
                f"PostgreSQL role {ROLE_PREFIX}<name>)"
            )
        return value

    @field_validator("filter")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("filter is empty; leave it out to read every row")
        return value

    @model_validator(mode="after")
    def _reads_something(self) -> AudienceSpec:
        if not self.value_chains and not self.kpis:
            raise ValueError("declare value_chains or kpis: what the audience may read")
        return self

    @property
    def role(self) -> str:
        return audience_role(self.name)


class AccessFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    audiences: list[AudienceSpec] = Field(default_factory=list)
