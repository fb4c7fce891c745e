"""A KPI's recent values as a small SVG line chart, for its materialisation in the Dagster UI.

The chart shows the last `RECENT_PERIODS` periods of the KPI's finest grain up to the refreshed
day: the total, and one line per value of its first dimension (the `MAX_SERIES` largest, the
rest counted in the legend). Dagster has no image metadata type; its UI renders markdown with
`data:` image sources (rehype-sanitize configured to allow them), so the SVG travels as a
base64 data URI inside markdown metadata.

Written by hand rather than with a plotting library: a few polylines and labels do not justify
matplotlib's weight in every KPI run, and an SVG stays readable text (the tests parse it). The
root element carries the value range, the plot box and the periods (`data-y-min`, `data-y-max`,
`data-plot`, `data-periods`), so a point's period and value can be read back from its position.
Coordinates have one decimal: a chart is about 5 kB, and a single-run backfill stores it with
every partition's materialisation.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from analytics_pipelines.lib.catalog import KpiSpec
from analytics_pipelines.lib.kpi.display import period_label
from analytics_pipelines.lib.kpi.periods import local_midnight_sql
from analytics_pipelines.lib.tables import kpi_values

RECENT_PERIODS = 30
MAX_SERIES = 8  # dimension values drawn besides the total
TOTAL_LABEL = "total"
NULL_LABEL = "(null)"
WIDTH, HEIGHT = 720, 340
LEFT, RIGHT, TOP, BOTTOM = 72, 170, 40, 44
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
)  # fmt: skip
TOTAL_COLOUR = "#222222"


@dataclass(frozen=True)
class Series:
    label: str
    values: list[float | None]  # one per period; None: no value stored for it


@dataclass(frozen=True)
class ChartData:
    kpi: str
    unit: str
    grain: str
    dimension: str | None
    periods: list[str]
    series: list[Series] = field(default_factory=list)  # the total first
    omitted: int = 0  # dimension values left out of the chart


def _as_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def recent_values(
    conn: Connection, kpi: KpiSpec, last_day: dt.date, periods: int = RECENT_PERIODS
) -> ChartData:
    """The stored values of the last `periods` periods of the finest grain up to `last_day`."""
    grain = kpi.grains[0]
    dimension = kpi.dimensions[0] if kpi.dimensions else None
    dims = sa.cast(kpi_values.c.dimensions, JSONB)
    empty = sa.cast(sa.literal("{}", sa.Text()), JSONB)
    mine = sa.and_(
        kpi_values.c.kpi == kpi.name,
        kpi_values.c.grain == grain,
        kpi_values.c.period_start
        < local_midnight_sql(last_day + dt.timedelta(days=1), kpi.timezone),
    )
    recent = (
        sa.select(kpi_values.c.period_start)
        .where(mine)
        .distinct()
        .order_by(kpi_values.c.period_start.desc())
        .limit(periods)
        .subquery()
    )
    wanted = dims == empty
    label = sa.null()
    if dimension is not None:
        # The total and the rows grouped by the first dimension alone.
        alone = sa.and_(
            dims.has_key(dimension),
            dims.op("-", return_type=JSONB)(sa.literal(dimension, sa.Text())) == empty,
        )
        wanted = sa.or_(wanted, alone)
        label = dims[dimension].astext
    rows = conn.execute(
        sa.select(
            kpi_values.c.period_start,
            (dims == empty).label("is_total"),
            label.label("member"),
            kpi_values.c.value,
        )
        .where(mine, wanted, kpi_values.c.period_start.in_(sa.select(recent.c.period_start)))
        .order_by(kpi_values.c.period_start)
    ).all()
    zone = ZoneInfo(kpi.timezone)
    starts = sorted({r.period_start for r in rows})
    index = {start: i for i, start in enumerate(starts)}
    by_label: dict[str, list[float | None]] = defaultdict(lambda: [None] * len(starts))
    for row in rows:
        name = TOTAL_LABEL if row.is_total else (NULL_LABEL if row.member is None else row.member)
        by_label[name][index[row.period_start]] = _as_float(row.value)
    total = by_label.pop(TOTAL_LABEL, [None] * len(starts))
    # The largest members by their values' size over the window; ties by name, for stable output.
    ranked = sorted(
        by_label.items(), key=lambda item: (-sum(abs(v or 0) for v in item[1]), item[0])
    )
    return ChartData(
        kpi=kpi.name,
        unit=kpi.unit,
        grain=grain,
        dimension=dimension,
        periods=[period_label(grain, s.astimezone(zone)) for s in starts],
        series=[Series(TOTAL_LABEL, total)] + [Series(n, v) for n, v in ranked[:MAX_SERIES]],
        omitted=max(0, len(ranked) - MAX_SERIES),
    )


def _nice_step(span: float, ticks: int = 4) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def value_range(values: list[float]) -> tuple[float, float, float]:
    """(low, high, tick step): round numbers that enclose every value."""
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) or 1.0
        low, high = low - pad, high + pad
    step = _nice_step(high - low)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def _number(value: float, step: float) -> str:
    decimals = max(0, min(6, -math.floor(math.log10(step)))) if step < 1 else 0
    return f"{value:,.{decimals}f}"


def _text(x: float, y: float, body: str, **attrs: str) -> str:
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
    return f'<text x="{x:.2f}" y="{y:.2f}"{extra}>{escape(body)}</text>'


def render_svg(data: ChartData) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    present = [v for s in data.series for v in s.values if v is not None]
    low, high, step = value_range(present or [0.0])
    n = len(data.periods)

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    by = f" by {data.dimension}" if data.dimension else ""
    unit = f" ({data.unit})" if data.unit else ""
    title = f"{data.kpi}{unit} per {data.grain}{by}, last {n} period(s)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" '
        f'data-y-min="{low!r}" data-y-max="{high!r}" '
        f'data-plot="{LEFT} {TOP} {plot_w} {plot_h}" data-periods={quoteattr(",".join(data.periods))}>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        _text(LEFT, 20, title, font_size="13", font_weight="bold"),
    ]
    ticks = round((high - low) / step)
    for k in range(ticks + 1):
        value = low + k * step
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(value):.2f}" y2="{y(value):.2f}" '
            'stroke="#e5e5e5"/>'
        )
        parts.append(_text(LEFT - 6, y(value) + 4, _number(value, step), text_anchor="end"))
    for i in sorted({0, n // 2, n - 1} if n else set()):
        parts.append(_text(x(i), TOP + plot_h + 18, data.periods[i], text_anchor="middle"))
    for position, series in enumerate(data.series):
        total = series.label == TOTAL_LABEL
        colour = TOTAL_COLOUR if total else PALETTE[(position - 1) % len(PALETTE)]
        # A period without a value breaks the line rather than bridging it; a value alone
        # between gaps is a zero-length piece, drawn as a dot by the round line cap.
        lines: list[str] = []
        dots: list[str] = []
        for i, point in enumerate(series.values):
            if point is None:
                continue
            joined = i > 0 and series.values[i - 1] is not None
            alone = not joined and (i + 1 == n or series.values[i + 1] is None)
            move = f"{'L' if joined else 'M'}{x(i):.1f} {y(point):.1f}"
            (dots if alone else lines).append(move + ("h0" if alone else ""))
        parts.append(f"<g data-series={quoteattr(series.label)}>")
        for path, width in ((lines, 3 if total else 2), (dots, 6)):
            if path:
                parts.append(
                    f'<path d="{"".join(path)}" fill="none" stroke="{colour}" '
                    f'stroke-width="{width}" stroke-linecap="round" stroke-linejoin="round"/>'
                )
        legend_y = TOP + 14 + 16 * position
        parts.append(
            f'<rect x="{WIDTH - RIGHT + 14}" y="{legend_y - 8}" width="12" height="3" '
            f'fill="{colour}"/>'
        )
        parts.append(_text(WIDTH - RIGHT + 32, legend_y - 3, series.label[:22]))
        parts.append("</g>")
    if data.omitted:
        legend_y = TOP + 14 + 16 * len(data.series)
        parts.append(_text(WIDTH - RIGHT + 14, legend_y - 3, f"+{data.omitted} more not drawn"))
    if not present:
        parts.append(
            _text(LEFT + plot_w / 2, TOP + plot_h / 2, "no values yet", text_anchor="middle")
        )
    parts.append("</svg>")
    return "\n".join(parts)


def chart_markdown(svg: str, caption: str) -> str:
    """Markdown the Dagster UI shows as the image itself."""
    encoded = base64.b64encode(svg.encode()).decode()
    return f"![{caption}](data:image/svg+xml;base64,{encoded})"
