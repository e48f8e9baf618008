"""The statistics as JSON, one endpoint per chart of /stats/, and the page itself.

openwrt/asu's own paths answer in its shapes (`/api/v1/stats/summary`,
`/api/v1/builds-per-day`, `/api/v1/builds-by-version`, `/api/v1/top-packages`); the
others live under `/api/v1/stats/`. Query parameters are checked: a value out of range
is a 422 whose `detail` says which and why.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from asuproject.api_views import JsonAPIView
from builds import charts, stats, stats_schema
from builds.stats_schema import TOP_DEFAULT, TOP_MAX
from tally.counting import flush

Kind = stats.Kind


class BranchQuery(serializers.Serializer):
    branch = serializers.RegexField(
        r"^[\w.-]{1,32}$",
        required=False,
        error_messages={"invalid": "must be a branch name such as 24.10."},
    )


class TopQuery(BranchQuery):
    n = serializers.IntegerField(min_value=1, max_value=TOP_MAX, default=TOP_DEFAULT)


def _query(request: Request, serializer_class: type[serializers.Serializer]) -> dict:
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)  # 422 with the field's problem
    return query.validated_data


class StatsView(JsonAPIView):
    """A statistics endpoint: this process's counts are written first, so they are in."""

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        flush()


class SummaryView(StatsView):
    @stats_schema.summary
    def get(self, request: Request) -> Response:
        return Response(stats.summary())


class BuildsPerDayView(StatsView):
    @stats_schema.builds_per_day
    def get(self, request: Request) -> Response:
        return Response(stats.builds_per_day())


class BuildsByVersionView(StatsView):
    @stats_schema.builds_by_version
    def get(self, request: Request) -> Response:
        query = _query(request, BranchQuery)
        return Response(stats.builds_by_version(query.get("branch")))


class CacheHitRateView(StatsView):
    @stats_schema.cache_hit_rate
    def get(self, request: Request) -> Response:
        return Response(stats.cache_hit_rate())


class BuildDurationsView(StatsView):
    @stats_schema.build_durations
    def get(self, request: Request) -> Response:
        return Response({"targets": stats.build_durations()})


def top_view(kind: str, key: str, title: str, with_branch: bool = False) -> type[StatsView]:
    """The view of one top list of the last 30 days: `{key: [{name, count}]}`."""

    class TopView(StatsView):
        @stats_schema.top(key, title, with_branch, with_target=kind == Kind.PROFILES)
        def get(self, request: Request) -> Response:
            query = _query(request, TopQuery)
            branch = query.get("branch") if with_branch else None
            return Response({key: stats.top(kind, query["n"], detail=branch)})

    TopView.__name__ = TopView.__qualname__ = f"Top{key.title().replace('_', '')}View"
    return TopView


TopPackagesView = top_view(
    Kind.PACKAGES, "packages", "Most requested packages, last 30 days", with_branch=True
)
TopVersionsView = top_view(Kind.VERSIONS, "versions", "Versions built most, last 30 days")
TopTargetsView = top_view(Kind.TARGETS, "targets", "Targets built most, last 30 days")
TopProfilesView = top_view(Kind.PROFILES, "profiles", "Profiles built most, last 30 days")
ClientsView = top_view(Kind.CLIENTS, "clients", "Build requests by client, last 30 days")
FailureReasonsView = top_view(Kind.FAILURES, "failure_reasons", "Why builds failed, last 30 days")


def asu_path(view: type[StatsView], operation_id: str) -> type[StatsView]:
    """`view` again for openwrt/asu's own path, described under its own operation id."""
    alias = type(f"Asu{view.__name__}", (view,), {})
    return extend_schema_view(get=extend_schema(operation_id=operation_id))(alias)


AsuBuildsPerDayView = asu_path(BuildsPerDayView, "builds_per_day")
AsuBuildsByVersionView = asu_path(BuildsByVersionView, "builds_by_version")
AsuTopPackagesView = asu_path(TopPackagesView, "top_packages")


@require_safe
def stats_page(request: HttpRequest) -> HttpResponse:
    """/stats/: every chart, drawn on the server as SVG."""
    flush()
    context = {"nav": "stats", "summary": stats.summary(), "charts": charts.stats_charts()}
    return render(request, "builds/stats.html", context)
