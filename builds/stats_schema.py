"""The OpenAPI description of the statistics API (`builds.stats_views`): the bodies'
shapes, which follow openwrt/asu's (`labels` and a list of `datasets` for a chart), and
the errors each endpoint may answer."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers

from asuproject.openapi import ALSO_HEAD, METHOD_NOT_ALLOWED, error_example, error_response

TAG = "stats"
TOP_DEFAULT = 10
TOP_MAX = 100

N_PARAMETER = OpenApiParameter(
    "n", OpenApiTypes.INT, description=f"how many, 1 to {TOP_MAX} (default {TOP_DEFAULT})"
)
BRANCH_PARAMETER = OpenApiParameter(
    "branch", OpenApiTypes.STR, description="only this branch, e.g. 24.10"
)
BAD_QUERY = error_response(
    "A query parameter is out of range; `detail` names it and says why.",
    error_example(422, "n: Ensure this value is less than or equal to 100."),
)


def series_schema(
    name: str, point: serializers.Field, color: bool = False
) -> serializers.Serializer:
    """`{labels: [day], datasets: [{label, data: [point per label]}]}`, with a `color`
    for each dataset of openwrt/asu's builds-per-day."""
    fields = {"label": serializers.CharField(), "data": serializers.ListField(child=point)}
    if color:
        fields["color"] = serializers.CharField()
    dataset = inline_serializer(f"{name}Dataset", fields)
    return inline_serializer(
        name,
        {
            "labels": serializers.ListField(child=serializers.CharField()),
            "datasets": serializers.ListField(child=dataset),
        },
    )


def top_schema(name: str, key: str, with_target: bool = False) -> serializers.Serializer:
    """`{key: [{name, count}]}`; profiles name their target too."""
    fields = {"name": serializers.CharField(), "count": serializers.IntegerField()}
    if with_target:
        fields["target"] = serializers.CharField()
    row = inline_serializer(f"{name}Row", fields)
    return inline_serializer(name, {key: serializers.ListField(child=row)})


def stats_endpoint(
    operation_id: str, summary: str, body: serializers.Serializer, parameters: list | None = None
):
    """The description of a statistics GET: its body, and a 422 when it takes parameters."""
    responses = {200: body, 405: METHOD_NOT_ALLOWED}
    if parameters:
        responses[422] = BAD_QUERY
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        tags=[TAG],
        parameters=parameters or [],
        responses=responses,
        extensions={ALSO_HEAD: True},
    )


summary = stats_endpoint(
    "stats_summary",
    "Queue length and builds of the last 24 hours (as openwrt/asu)",
    inline_serializer(
        "StatsSummary",
        {"queue_length": serializers.IntegerField(), "builds_24h": serializers.IntegerField()},
    ),
)
builds_per_day = stats_endpoint(
    "stats_builds_per_day",
    "Build requests, cache hits and failed builds per day, last 30 days",
    series_schema("BuildsPerDay", serializers.IntegerField(), color=True),
)
builds_by_version = stats_endpoint(
    "stats_builds_by_version",
    "Builds per week for 26 weeks, by branch, or by version of `branch`",
    series_schema("BuildsByVersion", serializers.IntegerField()),
    [BRANCH_PARAMETER],
)
cache_hit_rate = stats_endpoint(
    "stats_cache_hit_rate",
    "Share of build requests answered by a finished image, percent per day (null on "
    "days without requests)",
    series_schema("CacheHitRate", serializers.FloatField(allow_null=True)),
)
build_durations = stats_endpoint(
    "stats_build_durations",
    "Median and 90th percentile build duration per target, last 30 days",
    inline_serializer(
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


def top(key: str, title: str, with_branch: bool, with_target: bool):
    name = f"Top{key.title().replace('_', '')}"
    parameters = [N_PARAMETER, BRANCH_PARAMETER] if with_branch else [N_PARAMETER]
    return stats_endpoint(f"stats_{key}", title, top_schema(name, key, with_target), parameters)
