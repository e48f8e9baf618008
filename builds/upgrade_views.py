"""POST /api/v1/upgrade-check, and the /upgrade/ page that asks it for a person."""

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from asuproject.api_errors import error_body, flatten_errors
from asuproject.api_views import JsonAPIView
from asuproject.input import MAX_PACKAGES, PACKAGE_RE, LimitedJSONParser, name_field, target_field
from asuproject.openapi import METHOD_NOT_ALLOWED, error_example, error_response
from builds.serializers import MAX_NAME_LENGTH, PackageVersionsField
from builds.upgrade import UpgradeCheckRejected, parse_board, parse_installed, upgrade_check


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class InstalledField(PackageVersionsField):
    """{package name: installed version}."""


class UpgradeCheckSerializer(serializers.Serializer):
    """What a router says about itself: the fields of `ubus call system board` and its
    installed packages with their versions."""

    version = name_field(32, help_text="The router's OpenWrt version: 24.10.1, SNAPSHOT.")
    version_code = name_field(
        64,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="The router's revision (r28597-0425664679); tells a snapshot whether "
        "a newer one exists.",
    )
    target = target_field(help_text="ath79/generic")
    profile = name_field(
        128, help_text="The profile id or the board name: tplink,archer-c7-v5 works too."
    )
    installed = InstalledField(
        help_text="{package name: installed version}, as `opkg list-installed` or "
        "`apk list --installed` show them; ABI-suffixed names are understood."
    )
    target_version = name_field(
        32,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="Check only this version; by default the newest of the router's branch "
        "and of each newer branch.",
    )

    def validate_installed(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_PACKAGES:
            raise serializers.ValidationError(f"at most {MAX_PACKAGES} packages.")
        for name in value:
            if len(name) > MAX_NAME_LENGTH or not PACKAGE_RE.fullmatch(name) or name[0] in "+-":
                raise serializers.ValidationError(f"{name!r} is not a valid package name.")
        return value


def _text(**kwargs) -> serializers.CharField:
    return serializers.CharField(**kwargs)


def _names() -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField())


class PackageChangeSerializer(serializers.Serializer):
    name = _text()
    from_ = _text(help_text="The installed version.")
    to = _text(help_text="The candidate's version.")
    change = serializers.ChoiceField(["upgrade", "downgrade"])

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")  # a Python keyword
        return fields


class WhySerializer(serializers.Serializer):
    """Why a package comes or goes: a default or device package, or a rule."""

    name = _text()
    reason = serializers.ChoiceField(["default", "device", "rule"])
    rule = serializers.IntegerField(required=False, help_text="The rule's id (reason `rule`).")
    note = _text(required=False, allow_blank=True)
    version = _text(allow_null=True, required=False)


class AddedSerializer(WhySerializer):
    replaces = _text(allow_null=True, required=False, help_text="The package it replaces.")


class RemovedSerializer(WhySerializer):
    replaced_by = _text(allow_null=True, required=False)


class BuildBodySerializer(serializers.Serializer):
    version = _text()
    target = _text()
    profile = _text()
    packages = _names()
    diff_packages = serializers.BooleanField()


class CandidateSerializer(serializers.Serializer):
    """One candidate version; an unsupported one has only version, branch, supported,
    detail and up_to_date."""

    version = _text()
    branch = _text()
    supported = serializers.BooleanField(help_text="False: the version has no image for it.")
    up_to_date = serializers.BooleanField()
    detail = _text(allow_blank=True, help_text="Why it cannot be built, when it cannot.")
    version_code = _text(required=False, allow_null=True)
    version_changed = serializers.BooleanField(required=False)
    revision_changed = serializers.BooleanField(required=False)
    profile = _text(required=False)
    buildable = serializers.BooleanField(required=False)
    packages = serializers.ListField(child=serializers.CharField(), required=False)
    package_changes_applied = serializers.ListField(
        child=serializers.DictField(), required=False, help_text="The rules that fired."
    )
    changed = PackageChangeSerializer(many=True, required=False)
    added = AddedSerializer(many=True, required=False)
    removed = RemovedSerializer(many=True, required=False)
    unavailable = serializers.ListField(child=serializers.CharField(), required=False)
    build_request = BuildBodySerializer(required=False, help_text="POST it to /api/v1/build.")


class UpgradeCheckAnswerSerializer(serializers.Serializer):
    version = _text()
    version_code = _text(allow_null=True)
    target = _text()
    profile = _text()
    up_to_date = serializers.BooleanField()
    upgrades = CandidateSerializer(many=True)


EXAMPLE_REQUEST = {
    "version": "24.10.1",
    "version_code": "r28597-0425664679",
    "target": "ath79/generic",
    "profile": "tplink,archer-c7-v5",
    "installed": {
        "auc": "0.3.2-r1",
        "base-files": "1647~0425664679",
        "dnsmasq": "2.90-r3",
        "libubox20240329": "2024.03.29~eb9bcb64-r1",
        "luci-app-opkg": "25.103.51521~2ac26e5",
        "opkg": "2024.10.16~38eccbb1-r1",
    },
}
EXAMPLE_ANSWER = {
    "version": "24.10.1",
    "version_code": "r28597-0425664679",
    "target": "ath79/generic",
    "profile": "tplink,archer-c7-v5",
    "up_to_date": False,
    "upgrades": [
        {
            "version": "25.12.0",
            "branch": "25.12",
            "supported": True,
            "version_code": "r32402-8fd5bba1b2",
            "version_changed": True,
            "revision_changed": True,
            "profile": "tplink_archer-c7-v5",
            "up_to_date": False,
            "buildable": True,
            "packages": ["apk-mbedtls", "base-files", "dnsmasq", "libubox", "owut", "..."],
            "package_changes_applied": [
                {"id": 1, "kind": "rename", "source": "auc", "target": "owut", "note": "..."}
            ],
            "changed": [
                {"name": "dnsmasq", "from": "2.90-r3", "to": "2.91-r1", "change": "upgrade"}
            ],
            "added": [
                {
                    "name": "owut",
                    "reason": "rule",
                    "rule": 1,
                    "note": "...",
                    "replaces": "auc",
                    "version": "2025.10.01~d5a5e9b1-r1",
                },
                {"name": "kmod-usb2", "reason": "device", "version": "6.12.71-r1"},
            ],
            "removed": [
                {
                    "name": "auc",
                    "reason": "rule",
                    "rule": 1,
                    "note": "...",
                    "version": "0.3.2-r1",
                    "replaced_by": "owut",
                }
            ],
            "unavailable": [],
            "detail": "",
            "build_request": {
                "version": "25.12.0",
                "target": "ath79/generic",
                "profile": "tplink_archer-c7-v5",
                "packages": ["apk-mbedtls", "base-files", "..."],
                "diff_packages": False,
            },
        }
    ],
}


class UpgradeCheckView(JsonAPIView):
    """POST /api/v1/upgrade-check: what upgrading would change, before anything is built."""

    # Depth, number and string limits: a hostile body is a 422, not a RecursionError.
    parser_classes = [LimitedJSONParser]

    @extend_schema(
        operation_id="upgrade_check",
        summary="What an upgrade would change on a router",
        description=(
            "For the newest version of the router's branch and of each newer enabled "
            "branch (or only `target_version`): the package list a build would use after "
            "the package-change rules, the rules that fired, packages whose version "
            "changes, packages added or removed and why (`default`, `device`, `rule`), "
            "packages no longer offered (a build would fail), and for snapshots whether "
            "the revision changed. `up_to_date` is true when nothing would change. "
            "`build_request` is the body to POST to /api/v1/build. Reads the catalogue "
            "only, never the downloads server."
        ),
        request=UpgradeCheckSerializer,
        responses={
            200: OpenApiResponse(
                UpgradeCheckAnswerSerializer, description="The check, per candidate version."
            ),
            400: error_response(
                "A version or target the server does not offer.",
                error_example(400, "24.10.9 is not a version this server builds"),
            ),
            422: error_response(
                "A malformed request; `detail` says what.",
                error_example(422, "installed: This field is required."),
            ),
            405: METHOD_NOT_ALLOWED,
        },
        examples=[
            OpenApiExample("A 24.10 router", value=EXAMPLE_REQUEST, request_only=True),
            OpenApiExample("Its answer", value=EXAMPLE_ANSWER, response_only=True),
        ],
        tags=["upgrade"],
    )
    def post(self, request: Request) -> Response:
        serializer = UpgradeCheckSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            return Response(upgrade_check(serializer.validated_data))
        except UpgradeCheckRejected as exc:
            return Response(error_body(400, str(exc)), status=400)


def upgrade_page(request: HttpRequest) -> HttpResponse:
    """/upgrade/: paste `ubus call system board` and the installed list, see the check."""
    context = {"nav": "upgrade", "board": "", "installed": ""}
    if request.method == "POST":
        context["board"] = request.POST.get("board", "")
        context["installed"] = request.POST.get("installed", "")
        context.update(_page_check(context["board"], context["installed"]))
    return render(request, "builds/upgrade.html", context)


def _page_check(board: str, installed: str) -> dict:
    """The upgrade check of pasted text, or the error to show."""
    try:
        fields = {**parse_board(board), "installed": parse_installed(installed)}
        serializer = UpgradeCheckSerializer(data=fields)
        if not serializer.is_valid():
            return {"error": "; ".join(flatten_errors(serializer.errors))}
        answer = upgrade_check(serializer.validated_data)
    except UpgradeCheckRejected as exc:
        return {"error": str(exc)}
    for upgrade in answer["upgrades"]:
        upgrade["build_json"] = json.dumps(
            {**upgrade.get("build_request", {}), "client": "asu-upgrade-page"}
        )
    return {"answer": answer}
