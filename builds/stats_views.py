"""The statistics as JSON, one endpoint per chart of /stats/, and the page itself.

openwrt/asu's own paths answer in its shapes (`/api/v1/stats/summary`,
`/api/v1/builds-per-day`, `/api/v1/builds-by-version`, `/api/v1/top-packages`); the
others live under `/api/v1/stats/`. Query parameters are checked: a value out of range
is a 422 whose `detail` says which and why.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from builds import charts, stats
from tally.counting import flush

Kind = stats.Kind
TOP_DEFAULT = 10
TOP_MAX = 100


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


def _series_schema(name: str) -> serializers.Serializer:
    dataset = inline_serializer(
        f"{name}Dataset",
        {
            "label": serializers.CharField(),
            "data": serializers.ListField(child=serializers.FloatField(allow_null=True)),
        },
    )
    return inline_serializer(
        name, {"labels": serializers.ListField(child=serializers.CharField()), "datasets": dataset}
    )


def _top_schema(name: str, key: str) -> serializers.Serializer:
    row = inline_serializer(
        f"{name}Row", {"name": serializers.CharField(), "count": serializers.IntegerField()}
    )
    return inline_serializer(name, {key: serializers.ListField(child=row)})


N_PARAMETER = OpenApiParameter(
    "n", OpenApiTypes.INT, description=f"how many, 1 to {TOP_MAX} (default {TOP_DEFAULT})"
)
BRANCH_PARAMETER = OpenApiParameter(
    "branch", OpenApiTypes.STR, description="only this branch, e.g. 24.10"
)


class StatsView(APIView):
    """A statistics endpoint: this process's counts are written first, so they are in."""

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        flush()


class SummaryView(StatsView):
    @extend_schema(
        summary="Queue length and builds of the last 24 hours (as openwrt/asu)",
        responses=inline_serializer(
            "StatsSummary",
            {"queue_length": serializers.IntegerField(), "builds_24h": serializers.IntegerField()},
        ),
    )
    def get(self, request: Request) -> Response:
        return Response(stats.summary())


class BuildsPerDayView(StatsView):
    @extend_schema(
        summary="Build requests, cache hits and failed builds per day, last 30 days",
        responses=_series_schema("BuildsPerDay"),
    )
    def get(self, request: Request) -> Response:
        return Response(stats.builds_per_day())


class BuildsByVersionView(StatsView):
    @extend_schema(
        summary="Builds per week for 26 weeks, by branch, or by version of `branch`",
        parameters=[BRANCH_PARAMETER],
        responses=_series_schema("BuildsByVersion"),
    )
    def get(self, request: Request) -> Response:
        query = _query(request, BranchQuery)
        return Response(stats.builds_by_version(query.get("branch")))


class CacheHitRateView(StatsView):
    @extend_schema(
        summary="Share of build requests answered by a finished image, percent per day",
        responses=_series_schema("CacheHitRate"),
    )
    def get(self, request: Request) -> Response:
        return Response(stats.cache_hit_rate())


class BuildDurationsView(StatsView):
    @extend_schema(
        summary="Median and 90th percentile build duration per target, last 30 days",
        responses=inline_serializer(
            "BuildDurations",
            {
                "targets": serializers.ListField(
                    child=inline_serializer(
                        "BuildDurationsRow",
                        {
                            "target": serializers.CharField(),
                            "builds": serializers.IntegerField(),
                            "median": serializers.FloatField(allow_null=True),
                            "p90": serializers.FloatField(allow_null=True),
                        },
                    )
                )
            },
        ),
    )
    def get(self, request: Request) -> Response:
        return Response({"targets": stats.build_durations()})


def top_view(kind: str, key: str, title: str, with_branch: bool = False) -> type[StatsView]:
    """The view of one top list of the last 30 days: `{key: [{name, count}]}`."""
    parameters = [N_PARAMETER, BRANCH_PARAMETER] if with_branch else [N_PARAMETER]

    class TopView(StatsView):
        @extend_schema(
            summary=title,
            parameters=parameters,
            responses=_top_schema(f"Top{key.title().replace('_', '')}", key),
        )
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


@require_safe
def stats_page(request: HttpRequest) -> HttpResponse:
    """/stats/: every chart, drawn on the server as SVG."""
    flush()
    context = {"nav": "stats", "summary": stats.summary(), "charts": charts.stats_charts()}
    return render(request, "builds/stats.html", context)
