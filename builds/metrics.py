"""`/metrics` in Prometheus' text format, the same whichever web process answers.

What the database holds is read at scrape time: builds by state and the queue length
from the builds, and the running totals (`tally.models.Total`) that every process adds
to: requests by endpoint and status and build requests by client and outcome (counted
in memory by `CountRequestsMiddleware`, written every few seconds), builds queued,
builds finished and their duration by target, ImageBuilder downloads and sync runs
(written by the process that saw them). No multiprocess directory is needed.
"""

import hmac
import json
from collections import defaultdict
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.urls import ResolverMatch
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from asuproject.api_errors import error_response
from builds.models import Build
from builds.stats import DURATION_BUCKETS, build_request_counts, client_family
from tally.counting import add, flush
from tally.models import Total

# The running totals shown as counters: name without `_total`, help, label names.
COUNTERS = {
    "asu_http_requests": (
        "HTTP requests answered, by endpoint (URL name), method and status",
        ("endpoint", "method", "status"),
    ),
    "asu_build_requests": (
        "POST /api/v1/build answers by client and outcome "
        "(cache_hit: a finished image; pending: queued or building; failed; refused)",
        ("client", "outcome"),
    ),
    "asu_builds_queued": ("Builds queued: requests no earlier build answered", ()),
    "asu_builds_finished": (
        "Builds the workers finished, by target and status",
        ("target", "status"),
    ),
    "asu_imagebuilder_downloads": ("ImageBuilder downloads, by result", ("result",)),
    "asu_sync_runs": ("Catalogue sync runs by Celery, by result", ("result",)),
    "asu_sync_errors": ("Upstream files a sync run could not read", ()),
}
DURATION = "asu_build_duration_seconds"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NO_VIEW = "none"  # answered before any view: CORS preflights, refused addresses


class CountRequestsMiddleware:
    """Counts every answer by endpoint, method and status, and each build request by
    client and outcome, in memory: a few microseconds, no query."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        method = request.method if request.method in METHODS else "other"
        endpoint = endpoint_label(request.resolver_match)
        build_request = endpoint == "api-build" and method == "POST"
        body = _body(request) if build_request else b""
        user_agent = request.META.get("HTTP_USER_AGENT", "")
        count_request(endpoint, method, response.status_code, body, user_agent)
        return response


def count_request(endpoint: str, method: str, status: int, body: bytes, user_agent: str) -> None:
    """Count one answer by endpoint, method and status; and a build request's by client
    and outcome (`body` is read only then). Also for answers given before Django
    (`builds.fastpath`)."""
    labels = (("endpoint", endpoint), ("method", method), ("status", status))
    totals = [("asu_http_requests_total", labels)]
    daily: list = []
    if endpoint == "api-build" and method == "POST":
        daily, build_totals = build_request_counts(status, client_family(body, user_agent))
        totals += build_totals
    add(daily, totals)


def endpoint_label(match: ResolverMatch | None) -> str:
    """The URL name of the route that answered, or its pattern when it has none: a label
    that stays the same when a view moves or is renamed."""
    if match is None:
        return NO_VIEW
    return match.view_name if match.url_name else match.route


def _body(request: HttpRequest) -> bytes:
    try:
        return request.body  # read by the view already; refused if it was too large
    except Exception:
        return b""


def count_queued() -> None:
    """A request queued a new build (or a failed one again)."""
    add(totals=[("asu_builds_queued_total", ())])


class DatabaseCollector(Collector):
    """The metrics, read from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        states = GaugeMetricFamily("asu_builds", "Builds kept, by state", labels=["state"])
        counts = dict(Build.objects.values_list("status").annotate(n=Count("pk")))
        for state in Build.Status.values:
            states.add_metric([state], counts.get(state, 0))
        yield states
        yield GaugeMetricFamily(
            "asu_queue_length",
            "Builds queued and sent to the workers, not started yet",
            value=Build.objects.queued().count(),
        )
        totals: dict[str, list[tuple[dict, float]]] = defaultdict(list)
        for name, labels, value in Total.objects.values_list("name", "labels", "value"):
            totals[name].append((json.loads(labels or "{}"), value))
        for name, (documentation, label_names) in COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=label_names)
            for labels, value in totals.get(f"{name}_total", []):
                family.add_metric([labels.get(label, "") for label in label_names], value)
            yield family
        yield _durations(totals)


def _durations(totals: dict[str, list[tuple[dict, float]]]) -> HistogramMetricFamily:
    """The build-duration histogram by target, from its per-bucket rows."""
    family = HistogramMetricFamily(
        DURATION, "Duration of the builds done, from start to recorded result", labels=["target"]
    )
    per_bucket: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in totals.get(f"{DURATION}_bucket", []):
        per_bucket[labels.get("target", "")][labels.get("le", "+Inf")] = value
    sums = {labels.get("target", ""): value for labels, value in totals.get(f"{DURATION}_sum", [])}
    for target in sorted(per_bucket):
        cumulative, buckets = 0.0, []
        for bound in DURATION_BUCKETS:
            le = floatToGoString(bound)
            cumulative += per_bucket[target].get(le, 0)
            buckets.append((le, cumulative))
        family.add_metric([target], buckets, sum_value=sums.get(target, 0.0))
    return family


registry = CollectorRegistry(auto_describe=False)
registry.register(DatabaseCollector())


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics. Open, unless ASU_METRICS_TOKEN is set: then only with
    `Authorization: Bearer <token>`."""
    token = settings.ASU_METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = error_response(
                401,
                "This server's metrics need a token: send `Authorization: Bearer <token>` "
                "with the token set in ASU_METRICS_TOKEN.",
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    flush()  # this process's own counts, so that they are in
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
