"""The package-changes API: the rules in effect somewhere, and a dry run on a list.

Clients and people use the dry run to see what a build would do to their package
list before asking for it. Errors answer like the build API: integer `status` and a
`detail` that says what was wrong.
"""

from rest_framework.request import Request
from rest_framework.response import Response

from asuproject.api_views import JsonAPIView
from asuproject.input import LimitedJSONParser
from packages import schema
from packages.changes import (
    UnknownScope,
    apply_package_changes,
    enabled_rules,
    find_scope,
    rules_in_effect,
)
from packages.models import Package, without_abi_suffixes
from packages.serializers import ApplySerializer


def _bad_request(detail: str) -> Response:
    return Response({"status": 400, "title": "Bad Request", "detail": detail}, status=400)


def _names(version, target, profile) -> dict:
    return {
        "version": version.name if version else None,
        "target": target.name if target else None,
        "profile": profile.name if profile else None,
    }


class PackageChangesView(JsonAPIView):
    """GET /api/v1/package-changes?version=&target=&profile=

    The enabled rules in effect for a version, narrowed to a target and a profile when
    given; without a version, every enabled rule.
    """

    @schema.rules_in_effect
    def get(self, request: Request) -> Response:
        version = request.query_params.get("version", "").strip()
        target = request.query_params.get("target", "").strip()
        profile = request.query_params.get("profile", "").strip()
        if not version:
            if target or profile:
                return _bad_request("A target or profile needs its version: give version too.")
            rules, scope = enabled_rules(), (None, None, None)
        else:
            try:
                scope = find_scope(version, target, profile)
            except UnknownScope as exc:
                return _bad_request(str(exc))
            rules = rules_in_effect(*scope)
        return Response({**_names(*scope), "package_changes": [r.as_dict() for r in rules]})


class ApplyView(JsonAPIView):
    """POST /api/v1/package-changes/apply {version, target, profile, packages}

    A dry run: the package list with the rules applied, and the rules that fired.
    """

    # Depth, number and string limits: a hostile body is a 422, not a RecursionError.
    parser_classes = [LimitedJSONParser]

    @schema.dry_run
    def post(self, request: Request) -> Response:
        serializer = ApplySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            version, target, profile = find_scope(
                data["version"].strip(), data["target"], data["profile"].strip()
            )
        except UnknownScope as exc:
            return _bad_request(str(exc))
        # As a build request is normalised before the rules run.
        requested = list(dict.fromkeys(p.removeprefix("+") for p in data["packages"]))
        abi_names = Package.objects.for_target(target).abi_names()
        requested = list(dict.fromkeys(without_abi_suffixes(requested, abi_names)))
        packages, applied = apply_package_changes(requested, version, target, profile)
        return Response(
            {
                **_names(version, target, profile),
                "packages": packages,
                "package_changes_applied": applied,
            }
        )
