"""The charts of /stats/, drawn on the server as SVG: no script, no CDN.

Each chart is an `<svg role="img">` with a `<title>` and a `<desc>` that says what it
shows, every point or bar carries its value as a tooltip (`<title>`), and the page puts
the numbers in a table next to it. The drawing is narrow (WIDTH units) so that its text
stays readable when a phone shrinks it to 320 px; colours come from the page's CSS
(classes `series-1` to `series-3`), so the dark theme applies.
"""

import math
from itertools import count

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from builds import stats

WIDTH = 400
FONT = 14
_ids = count()


def nice_ceiling(value: float) -> float:
    """The smallest 2, 4 or 10 times a power of ten at or above `value` (at least 2):
    its half, the middle grid line, is a round number too."""
    if value <= 2:
        return 2
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (2, 4, 10) if step * power >= value)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _frame(height: int, title: str, description: str, body: list[str]) -> SafeString:
    uid = next(_ids)
    return mark_safe(  # noqa: S308 (every text inside went through escape)
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="chart-{uid}-title chart-{uid}-desc" '
        f'preserveAspectRatio="xMidYMid meet" font-size="{FONT}">'
        f'<title id="chart-{uid}-title">{escape(title)}</title>'
        f'<desc id="chart-{uid}-desc">{escape(description)}</desc>' + "".join(body) + "</svg>"
    )


def line_chart(
    labels: list[str],
    series: list[tuple[str, list[float | None]]],
    title: str,
    description: str,
    unit: str = "",
    top: float | None = None,
    zero_dots: bool = False,
) -> SafeString:
    """Lines over days: one per series (gaps where None) with a dot on each value other
    than 0 (and on 0 too with `zero_dots`); the y axis from 0 to `top` or a round number
    above the largest value."""
    height, left, right, upper, lower = 230, 44, 10, 12, 30
    plot_w, plot_h = WIDTH - left - right, height - upper - lower
    values = [v for _, data in series for v in data if v is not None]
    top = top or nice_ceiling(max(values, default=0))
    x = [left + plot_w * i / max(1, len(labels) - 1) for i in range(len(labels))]

    def y(value: float) -> float:
        return upper + plot_h - plot_h * value / top

    body = []
    for fraction in (0, 0.5, 1):
        level = y(top * fraction)
        body.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{level:.1f}" '
            f'y2="{level:.1f}"/><text class="axis" x="{left - 6}" y="{level + 4:.1f}" '
            f'text-anchor="end">{_number(top * fraction)}{escape(unit)}</text>'
        )
    # A date every week, counted back from the last day.
    for i in range(len(labels) - 1, -1, -7):
        anchor = "end" if i == len(labels) - 1 else "middle"
        body.append(
            f'<text class="axis" x="{x[i]:.1f}" y="{height - 10}" text-anchor="{anchor}">'
            f"{escape(labels[i][5:10])}</text>"
        )
    # The first series drawn last, on top where lines meet (at 0, most days).
    for number, (name, data) in reversed(list(enumerate(series, start=1))):
        body.append(_line(number, name, labels, x, [None if v is None else y(v) for v in data]))
        for i, value in enumerate(data):
            if value or (zero_dots and value is not None):
                body.append(
                    f'<circle class="point series-{number}" cx="{x[i]:.1f}" '
                    f'cy="{y(value):.1f}" r="2.6"><title>{escape(labels[i][:10])}: '
                    f"{escape(name)} {_number(value)}{escape(unit)}</title></circle>"
                )
    return _frame(height, title, description, body)


def _line(number: int, name: str, labels: list, x: list[float], ys: list[float | None]) -> str:
    """A polyline per run of values without gaps."""
    runs, run = [], []
    for xi, yi in zip(x, ys, strict=True):
        if yi is None:
            runs, run = runs + [run] if run else runs, []
        else:
            run.append(f"{xi:.1f},{yi:.1f}")
    runs += [run] if run else []
    return "".join(
        f'<polyline class="line series-{number}" points="{" ".join(points)}">'
        f"<title>{escape(name)}</title></polyline>"
        for points in runs
    )


def bar_chart(
    rows: list[tuple[str, list[float]]], title: str, description: str, unit: str = ""
) -> SafeString:
    """Horizontal bars, one group per row: its label on a line of its own (so long names
    fit a phone), then one bar per value with the value at the right."""
    bar, gap = 13, 4
    per_row = FONT + 6 + len(rows[0][1]) * (bar + gap) + 8 if rows else 0
    height = max(1, per_row * len(rows))
    largest = max((v for _, values in rows for v in values), default=0) or 1
    span = WIDTH - 70
    body = []
    for index, (label, values) in enumerate(rows):
        top = index * per_row
        body.append(f'<text class="label" x="0" y="{top + FONT}">{escape(label)}</text>')
        for number, value in enumerate(values, start=1):
            y = top + FONT + 6 + (number - 1) * (bar + gap)
            width = max(2.0, span * value / largest)
            body.append(
                f'<rect class="bar series-{number}" x="0" y="{y}" width="{width:.1f}" '
                f'height="{bar}" rx="2"><title>{escape(label)}: {_number(value)}'
                f'{escape(unit)}</title></rect><text class="value" x="{WIDTH}" '
                f'y="{y + bar - 2}" text-anchor="end">{_number(value)}{escape(unit)}</text>'
            )
    return _frame(height, title, description, body)


def stats_charts() -> list[dict]:
    """Every chart of /stats/: id, title, intro, where its JSON is, the SVG (None when
    nothing was counted), and its numbers as table `head` and `rows`."""
    return [*_daily_charts(), _durations_chart(), *_top_charts()]


def _daily_charts() -> list[dict]:
    per_day = stats.builds_per_day()
    labels, datasets = per_day["labels"], per_day["datasets"]
    rate = stats.cache_hit_rate()["datasets"][0]["data"]
    builds = {
        "id": "builds-per-day",
        "title": "Builds per day",
        "intro": "Build requests, the requests answered at once by an image built before "
        "(cache hits), and builds that failed, over the last 30 days (UTC).",
        "legend": [d["label"] for d in datasets],
        "json": "/api/v1/builds-per-day",
        "svg": line_chart(
            labels,
            [(d["label"], d["data"]) for d in datasets],
            "Builds per day, last 30 days",
            "Build requests, cache hits and failed builds per day.",
        )
        if any(any(d["data"]) for d in datasets)
        else None,
        "head": ["Day", *(d["label"] for d in datasets)],
        "rows": [
            [label[:10], *(d["data"][i] for d in datasets)]
            for i, label in enumerate(labels)
            if any(d["data"][i] for d in datasets)
        ],
    }
    hit_rate = {
        "id": "cache-hit-rate",
        "title": "Cache-hit rate",
        "intro": "The share of build requests answered by an image built before, per day.",
        "json": "/api/v1/stats/cache-hit-rate",
        "svg": line_chart(
            labels,
            [("Cache-hit rate", rate)],
            "Cache-hit rate per day, last 30 days",
            "Percent of build requests answered from the cache, per day.",
            unit="%",
            top=100,
            zero_dots=True,
        )
        if any(v is not None for v in rate)
        else None,
        "head": ["Day", "Cache hits"],
        "rows": [[lb[:10], f"{v}%"] for lb, v in zip(labels, rate, strict=True) if v is not None],
    }
    return [builds, hit_rate]


def _durations_chart() -> dict:
    durations = stats.build_durations()[:15]
    return {
        "id": "build-durations",
        "title": "Build duration per target",
        "intro": "How long builds took, from start to result: the median and the 90th "
        "percentile per target over the last 30 days, estimated from duration buckets.",
        "legend": ["Median", "90th percentile"],
        "json": "/api/v1/stats/build-durations",
        "svg": bar_chart(
            [(d["target"], [d["median"] or 0, d["p90"] or 0]) for d in durations],
            "Build duration per target, last 30 days",
            "Median and 90th percentile build duration in seconds, per target.",
            unit=" s",
        )
        if durations
        else None,
        "head": ["Target", "Builds", "Median", "90th percentile"],
        "rows": [
            [d["target"], d["builds"], f"{d['median']} s", f"{d['p90']} s"] for d in durations
        ],
    }


TOP_CHARTS = (
    ("versions", "Versions", stats.Kind.VERSIONS, "Builds by OpenWrt version."),
    ("targets", "Targets", stats.Kind.TARGETS, "Builds by target."),
    ("profiles", "Profiles", stats.Kind.PROFILES, "Builds by device profile."),
    ("packages", "Requested packages", stats.Kind.PACKAGES, "Builds asking for each package."),
    (
        "clients",
        "Clients",
        stats.Kind.CLIENTS,
        "Build requests by client: LuCI, owut, auc, the Firmware Selector (ofs) or another.",
    ),
    ("failure-reasons", "Failure reasons", stats.Kind.FAILURES, "Failed builds by reason."),
)


def _top_charts() -> list[dict]:
    charts = []
    for slug, title, kind, intro in TOP_CHARTS:
        rows = stats.top(kind, 10)
        names = [
            f"{row['name']} ({row['target']})" if "target" in row else row["name"] for row in rows
        ]
        json_path = "/api/v1/top-packages" if slug == "packages" else f"/api/v1/stats/{slug}"
        charts.append(
            {
                "id": slug,
                "title": title,
                "intro": f"{intro} The ten most frequent over the last 30 days.",
                "json": json_path,
                "svg": bar_chart(
                    [(name, [row["count"]]) for name, row in zip(names, rows, strict=True)],
                    f"{title}, last 30 days",
                    intro,
                )
                if rows
                else None,
                "head": [title.split()[-1].capitalize(), "Count"],
                "rows": [[name, row["count"]] for name, row in zip(names, rows, strict=True)],
            }
        )
    return charts
