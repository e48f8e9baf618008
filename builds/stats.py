"""Statistics over time: what is counted (`count_*`, `record_build`) and what the charts
and their JSON read back (`builds_per_day` and the rest).

Requests are counted in the web process's memory (`tally.counting.add`); a build's
outcome is written by its worker together with the build's row. Daily counts are kept
ASU_STATS_DAYS days; the charts read the last DAYS of them, `builds_by_version` the last
WEEKS weeks.
"""

import math
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from django.db.models import Sum
from prometheus_client.utils import floatToGoString

from builds.models import Build
from tally.counting import DailyKey, TotalKey, day_number, save, today
from tally.models import DailyCount
from targets.models import Branch
from targets.sync import branch_of

Kind = DailyCount.Kind
DAYS = 30
WEEKS = 26
CLIENTS = ("luci", "owut", "auc", "ofs")
# The client's name in a request body, without parsing it: `"client": "luci/25.103..."`.
CLIENT_VALUE = re.compile(rb'\s*:\s*"([A-Za-z]*)')
OUTCOMES = {200: "cache_hit", 202: "pending", 500: "failed"}
# Upper bounds (seconds) of the build-duration buckets, as Prometheus' `le`.
DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, math.inf)
# Failure reasons, by what the build's `detail` says; the first match wins.
FAILURE_REASONS = (
    ("Impossible package selection: missing", "missing packages"),
    ("Impossible package selection", "package conflicts"),
    ("Received incorrect version", "revision mismatch"),
    ("exceed device storage", "image too large"),
    ("ImageBuilder", "ImageBuilder problem"),
    ("timed out", "timeout"),
    ("The server failed", "server error"),
)
# The first packages of a build's request are counted; no list is longer in practice.
PACKAGES_COUNTED = 500


# Counting ------------------------------------------------------------------------------


def client_family(body: bytes, user_agent: str) -> str:
    """luci, owut, auc, ofs or other: the `client` field's name before its "/", else
    auc when the User-Agent says so (auc sends no `client`)."""
    at = body.find(b'"client"')  # a plain search first: far quicker than a regex's
    found = CLIENT_VALUE.match(body, at + 8) if at >= 0 else None
    name = found.group(1).decode().lower() if found else ""
    if not name and user_agent.lower().startswith("auc"):
        name = "auc"
    return name if name in CLIENTS else "other"


def build_request_counts(status: int, client: str) -> tuple[list[DailyKey], list[TotalKey]]:
    """What one answer of POST /api/v1/build adds: a request by its client, and a cache
    hit when a finished image answered it (200)."""
    day = today()
    daily = [(day, Kind.REQUESTS, "", ""), (day, Kind.CLIENTS, client, "")]
    outcome = OUTCOMES.get(status, "refused")
    totals = [("asu_build_requests_total", (("client", client), ("outcome", outcome)))]
    if status == 200:
        daily.append((day, Kind.CACHE_HITS, "", ""))
    return daily, totals


def failure_reason(detail: str) -> str:
    for words, reason in FAILURE_REASONS:
        if words in detail:
            return reason
    return "other build error"


def record_build(build: Build, failed: bool, detail: str, finished_at: datetime) -> None:
    """Count a build its worker finished: by hour, version, target, profile, requested
    packages, duration (done) or failure reason, at once in the database."""
    day, hour = day_number(finished_at.astimezone(UTC).date()), finished_at.astimezone(UTC).hour
    branch = branch_of(build.version, Branch.objects.all())
    branch_name = branch.name if branch else ""
    daily: dict[DailyKey, int] = defaultdict(int)
    for kind, key, extra in (
        (Kind.BUILDS, f"{hour:02d}", ""),
        (Kind.VERSIONS, build.version, branch_name),
        (Kind.TARGETS, build.target, ""),
        (Kind.PROFILES, build.profile, build.target),
    ):
        daily[(day, kind, key, extra)] += 1
    requested = (build.request or {}).get("packages") or []
    for name in {str(p).removeprefix("+") for p in requested[:PACKAGES_COUNTED]}:
        if name and not name.startswith("-"):
            daily[(day, Kind.PACKAGES, name[:200], branch_name)] += 1
    status = "failed" if failed else "done"
    totals = {("asu_builds_finished_total", _labels(target=build.target, status=status)): 1}
    if failed:
        daily[(day, Kind.FAILURES, failure_reason(detail), "")] += 1
    elif build.started_at is not None:
        seconds = max(0.0, (finished_at - build.started_at).total_seconds())
        bucket = floatToGoString(next(b for b in DURATION_BUCKETS if seconds <= b))
        daily[(day, Kind.DURATIONS, build.target, bucket)] += 1
        totals[("asu_build_duration_seconds_bucket", _labels(target=build.target, le=bucket))] = 1
        totals[("asu_build_duration_seconds_sum", _labels(target=build.target))] = seconds
    save(daily, totals)


def _labels(**labels: str) -> tuple:
    return tuple(labels.items())


# Reading -------------------------------------------------------------------------------


def last_days(days: int = DAYS) -> list[date]:
    """The last `days` days, today (UTC) last."""
    end = datetime.now(UTC).date()
    return [end - timedelta(days=days - 1 - i) for i in range(days)]


def day_label(day: date) -> str:
    """A day as openwrt/asu labels it: "2026-11-03Z"."""
    return f"{day.isoformat()}Z"


def _daily_series(kinds: list[str], days: list[date]) -> dict[str, list[int]]:
    """Per kind, its count on each of `days` (0 where none)."""
    rows = (
        DailyCount.objects.filter(kind__in=kinds, day__gte=days[0], day__lte=days[-1])
        .values("kind", "day")
        .annotate(total=Sum("count"))
    )
    index = {day: i for i, day in enumerate(days)}
    series = {kind: [0] * len(days) for kind in kinds}
    for row in rows:
        series[row["kind"]][index[row["day"]]] = row["total"]
    return series


def builds_per_day(days: int = DAYS) -> dict:
    """openwrt/asu's `/api/v1/builds-per-day`: requests, cache hits and failed builds on
    each of the last `days` days."""
    window = last_days(days)
    series = _daily_series([Kind.REQUESTS, Kind.CACHE_HITS, Kind.FAILURES], window)
    datasets = [
        ("Requests", Kind.REQUESTS, "green"),
        ("Cache-Hits", Kind.CACHE_HITS, "orange"),
        ("Failures", Kind.FAILURES, "red"),
    ]
    return {
        "labels": [day_label(day) for day in window],
        "datasets": [
            {"label": label, "data": series[kind], "color": color}
            for label, kind, color in datasets
        ],
    }


def cache_hit_rate(days: int = DAYS) -> dict:
    """The share of build requests answered by a finished image, in percent, per day;
    null on days without requests."""
    window = last_days(days)
    series = _daily_series([Kind.REQUESTS, Kind.CACHE_HITS], window)
    rates = [
        round(100 * hits / requests, 1) if requests else None
        for requests, hits in zip(series[Kind.REQUESTS], series[Kind.CACHE_HITS], strict=True)
    ]
    return {
        "labels": [day_label(day) for day in window],
        "datasets": [{"label": "Cache-hit rate (%)", "data": rates}],
    }


def top(kind: str, n: int = 10, days: int = DAYS, detail: str | None = None) -> list[dict]:
    """The `n` most counted keys of `kind` over the last `days` days, most first; of one
    `detail` (a branch, for packages) when given. Profiles name their target too."""
    window = last_days(days)
    rows = DailyCount.objects.filter(kind=kind, day__gte=window[0])
    if detail is not None:
        rows = rows.filter(detail=detail)
    fields = ["key", "detail"] if kind == Kind.PROFILES else ["key"]
    ranked = rows.values(*fields).annotate(total=Sum("count")).order_by("-total", *fields)[:n]
    if kind == Kind.PROFILES:
        return [{"name": r["key"], "target": r["detail"], "count": r["total"]} for r in ranked]
    return [{"name": r["key"], "count": r["total"]} for r in ranked]


def build_durations(days: int = DAYS) -> list[dict]:
    """Per target, the builds done in the last `days` days and their median and 90th
    percentile duration in seconds, estimated from the duration buckets as Prometheus'
    histogram_quantile does. Most built targets first."""
    window = last_days(days)
    rows = (
        DailyCount.objects.filter(kind=Kind.DURATIONS, day__gte=window[0])
        .values("key", "detail")
        .annotate(total=Sum("count"))
    )
    buckets: dict[str, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        buckets[row["key"]][float(row["detail"])] += row["total"]
    result = [
        {
            "target": target,
            "builds": sum(counts.values()),
            "median": quantile(0.5, counts),
            "p90": quantile(0.9, counts),
        }
        for target, counts in buckets.items()
    ]
    return sorted(result, key=lambda row: (-row["builds"], row["target"]))


def quantile(q: float, counts: dict[float, int]) -> float | None:
    """The `q` quantile of the observations counted per bucket upper bound, interpolated
    linearly inside its bucket; the largest finite bound for the +Inf bucket."""
    total = sum(counts.values())
    if not total:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for upper in sorted({*DURATION_BUCKETS, *counts}):  # empty buckets bound the next one
        count = counts.get(upper, 0)
        if count and seen + count >= rank:
            if math.isinf(upper):
                return lower
            return round(lower + (upper - lower) * (rank - seen) / count, 1)
        seen += count
        lower = upper if not math.isinf(upper) else lower
    return lower


def builds_by_version(branch: str | None = None, weeks: int = WEEKS) -> dict:
    """openwrt/asu's `/api/v1/builds-by-version`: builds per week over the last `weeks`
    weeks, one dataset per branch, or per version of `branch` when given."""
    end = datetime.now(UTC).date() + timedelta(days=1)  # the next midnight
    start = end - timedelta(weeks=weeks)
    rows = (
        DailyCount.objects.filter(kind=Kind.VERSIONS, day__gte=start)
        .values("day", "key", "detail")
        .annotate(total=Sum("count"))
    )
    series: dict[str, list[int]] = {}
    for row in rows:
        if branch is not None and row["detail"] != branch:
            continue
        label = row["key"] if branch is not None else (row["detail"] or row["key"])
        data = series.setdefault(label, [0] * weeks)
        data[(row["day"] - start).days // 7] += row["total"]
    return {
        "labels": [day_label(start + timedelta(weeks=week)) for week in range(weeks)],
        "datasets": [{"label": label, "data": series[label]} for label in sorted(series)],
    }


def summary() -> dict:
    """openwrt/asu's `/api/v1/stats/summary`: builds queued now, and builds finished in
    the last 24 hours (counted by the hour)."""
    now = datetime.now(UTC)
    today_, yesterday = now.date(), now.date() - timedelta(days=1)
    rows = DailyCount.objects.filter(kind=Kind.BUILDS, day__gte=yesterday).values_list(
        "day", "key", "count"
    )
    # Today's hours so far, and yesterday's hours after this one.
    builds = sum(
        count
        for day, hour, count in rows
        if day == today_ or (day == yesterday and int(hour) > now.hour)
    )
    return {"queue_length": Build.objects.queued().count(), "builds_24h": builds}
