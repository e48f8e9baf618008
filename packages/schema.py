"""The OpenAPI description of the package-changes API (docs/api.md)."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from asuproject.openapi import METHOD_NOT_ALLOWED, error_example, error_response
from packages.serializers import ApplySerializer

TAG = "package changes"
KINDS = ["rename", "add", "remove"]
ARCHER = {"version": "24.10.1", "target": "ath79/generic"}


class RuleSerializer(serializers.Serializer):
    """A rule as the package-changes API lists it."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(KINDS)
    source = serializers.CharField(allow_null=True, help_text="The package that goes away.")
    target = serializers.CharField(allow_null=True, help_text="The package that comes in.")
    mandatory = serializers.BooleanField()
    revision = serializers.IntegerField(allow_null=True)
    branch = serializers.CharField(allow_null=True)
    later_branches = serializers.BooleanField()
    targets = serializers.ListField(child=serializers.CharField())
    profiles = serializers.ListField(child=serializers.CharField())
    only_if = serializers.CharField(allow_null=True)
    apply_on_build = serializers.BooleanField()
    publish = serializers.BooleanField()
    note = serializers.CharField(allow_blank=True)
    link = serializers.CharField(allow_blank=True)


class ScopeSerializer(serializers.Serializer):
    version = serializers.CharField(allow_null=True)
    target = serializers.CharField(allow_null=True)
    profile = serializers.CharField(allow_null=True)


class RulesInEffectSerializer(ScopeSerializer):
    package_changes = RuleSerializer(many=True)


class AppliedRuleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(KINDS)
    source = serializers.CharField(allow_null=True)
    target = serializers.CharField(allow_null=True)
    note = serializers.CharField(allow_blank=True)


class DryRunSerializer(ScopeSerializer):
    packages = serializers.ListField(child=serializers.CharField())
    package_changes_applied = AppliedRuleSerializer(many=True)


AUC_TO_OWUT = {
    "id": 7,
    "kind": "rename",
    "source": "auc",
    "target": "owut",
    "mandatory": False,
    "revision": 26792,
    "branch": None,
    "later_branches": False,
    "targets": [],
    "profiles": [],
    "only_if": None,
    "apply_on_build": True,
    "publish": True,
    "note": "auc was replaced by owut",
    "link": "",
}
UNKNOWN_VERSION = error_example(400, "Unsupported version: 9.9.9")

rules_in_effect = extend_schema(
    operation_id="package_changes",
    summary="Package-change rules in effect",
    description="The enabled rules for a version, narrowed to a target and a profile when "
    "given; without a version, every enabled rule.",
    tags=[TAG],
    parameters=[
        OpenApiParameter("version", str, description="`24.10.1`, `SNAPSHOT`, ..."),
        OpenApiParameter("target", str, description="`ath79/generic`; needs `version`."),
        OpenApiParameter("profile", str, description="A profile or board name; needs `target`."),
    ],
    responses={
        200: OpenApiResponse(
            RulesInEffectSerializer,
            examples=[
                OpenApiExample(
                    "24.10.1 ath79/generic",
                    value={
                        "version": "24.10.1",
                        "target": "ath79/generic",
                        "profile": None,
                        "package_changes": [AUC_TO_OWUT],
                    },
                    response_only=True,
                )
            ],
        ),
        400: error_response(
            "An unknown version, target or profile, or a target without its version.",
            UNKNOWN_VERSION,
        ),
        405: METHOD_NOT_ALLOWED,
    },
)

dry_run = extend_schema(
    operation_id="package_changes_apply",
    summary="Apply the rules to a package list (dry run)",
    description="The package list a build would use after the rules, and the rules that "
    "fired. Nothing is built.",
    tags=[TAG],
    request=ApplySerializer,
    examples=[
        OpenApiExample(
            "A 24.10 router with auc",
            value={**ARCHER, "profile": "tplink,archer-c7-v5", "packages": ["luci", "auc"]},
            request_only=True,
        ),
        OpenApiExample(
            "Result",
            value={
                **ARCHER,
                "profile": "tplink_archer-c7-v5",
                "packages": ["luci", "owut"],
                "package_changes_applied": [
                    {key: AUC_TO_OWUT[key] for key in ("id", "kind", "source", "target", "note")}
                ],
            },
            response_only=True,
            status_codes=["200"],
        ),
    ],
    responses={
        200: DryRunSerializer,
        400: error_response("An unknown version, target or profile.", UNKNOWN_VERSION),
        405: METHOD_NOT_ALLOWED,
        415: error_response(
            "The body is not sent as `application/json`.",
            error_example(415, 'Unsupported media type "text/plain" in request.'),
        ),
        422: error_response(
            "The body is not JSON, or a field is missing or malformed.",
            error_example(422, "target: must look like 'ath79/generic'."),
        ),
    },
)
