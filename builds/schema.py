"""The OpenAPI description of the build API: the answers' shapes, the headers they carry,
and a request example for each client (docs/api.md, "The build request").

Documentation only: the views answer with bytes rendered in `builds.answers`; the
serializers here describe those bytes, and the contract tests check every answer against
them (tests/schema.py).
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers

from asuproject.openapi import (
    ALSO_HEAD,
    METHOD_NOT_ALLOWED,
    error_example,
    error_response,
)
from builds.answers import RETRY_AFTER
from builds.models import Step
from builds.serializers import BuildRequestSerializer

TAG = "builds"
HASH = "6d8b5c0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"
STEPS = sorted(Step.ALL)
RUNNING = ["queued", "started"]
ARCHER = {"version": "24.10.1", "target": "ath79/generic"}

# Response headers ------------------------------------------------------------------------

BUILD_CODES = [200, 202, 400, 404, 405, 422, 500, 529]
HEADERS = [
    OpenApiParameter(
        "X-Imagebuilder-Status",
        str,
        OpenApiParameter.HEADER,
        required=True,
        enum=[*STEPS, "queued"],
        description="Where the build is: `queued`, a step while it runs, `done`, `failed` "
        "(also on every refused request).",
        response=BUILD_CODES,
    ),
    OpenApiParameter(
        "X-Queue-Position",
        int,
        OpenApiParameter.HEADER,
        required=True,
        description="Builds ahead of this one while it is queued; 0 otherwise.",
        response=BUILD_CODES,
    ),
    OpenApiParameter(
        "X-Unknown-Package",
        str,
        OpenApiParameter.HEADER,
        description="The package names the target does not have, comma-separated (auc "
        "reads it); long lists end with `... and N more`.",
        response=[400, 500],
    ),
    OpenApiParameter(
        "Retry-After",
        int,
        OpenApiParameter.HEADER,
        required=True,
        description="Seconds to wait before asking again.",
        response=[503],
    ),
]

# Answers ---------------------------------------------------------------------------------


class BuildRunningSerializer(serializers.Serializer):
    """202: queued (with `queue_position`) or started (with `imagebuilder_status`)."""

    status = serializers.IntegerField(help_text="202")
    detail = serializers.ChoiceField(RUNNING)
    queue_position = serializers.IntegerField(
        required=False, help_text="Only while queued: builds ahead of this one."
    )
    imagebuilder_status = serializers.ChoiceField(
        STEPS, required=False, help_text="Only while started: the current step."
    )
    request_hash = serializers.CharField()
    enqueued_at = serializers.DateTimeField(allow_null=True)


class ImageSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(help_text="`sysupgrade`, `factory`, `combined`, ...")
    filesystem = serializers.CharField(required=False)
    sha256 = serializers.CharField()
    sha256_unsigned = serializers.CharField(required=False)


class BuildDoneSerializer(serializers.Serializer):
    """200: the target's profiles.json top level merged with the profile's entry, and the
    build's own fields. Keys of profiles.json not listed here are passed on as they are."""

    status = serializers.IntegerField(help_text="200")
    detail = serializers.CharField(help_text='"done"')
    imagebuilder_status = serializers.CharField(help_text='"done"')
    request_hash = serializers.CharField()
    enqueued_at = serializers.DateTimeField(allow_null=True)
    id = serializers.CharField(help_text="The profile built.")
    bin_dir = serializers.CharField(help_text="The folder under /store/ holding the images.")
    build_at = serializers.CharField(allow_null=True)
    images = ImageSerializer(many=True)
    manifest = serializers.DictField(child=serializers.CharField(), help_text="{name: version}")
    build_cmd = serializers.ListField(child=serializers.CharField())
    stdout = serializers.CharField(allow_blank=True)
    stderr = serializers.CharField(allow_blank=True)
    request = serializers.DictField(help_text="The normalised request, echoed back.")
    package_changes_applied = serializers.ListField(child=serializers.DictField())
    version_code = serializers.CharField(required=False)
    version_number = serializers.CharField(required=False)
    target = serializers.CharField(required=False)
    arch_packages = serializers.CharField(required=False)


class BuildFailedSerializer(serializers.Serializer):
    """500: the build failed (with its output), or the server failed (`status`, `title`
    and `detail` only)."""

    status = serializers.IntegerField(help_text="500")
    title = serializers.CharField()
    detail = serializers.CharField(help_text='"Error: ..." for a failed build.')
    imagebuilder_status = serializers.CharField(required=False, help_text='"failed"')
    stdout = serializers.CharField(required=False, allow_blank=True)
    stderr = serializers.CharField(required=False, allow_blank=True)
    build_cmd = serializers.ListField(child=serializers.CharField(), required=False)
    request = serializers.DictField(required=False)
    request_hash = serializers.CharField(required=False)
    enqueued_at = serializers.DateTimeField(required=False, allow_null=True)


QUEUED = {
    "status": 202,
    "detail": "queued",
    "queue_position": 3,
    "request_hash": HASH,
    "enqueued_at": "2026-04-20T10:11:12.345678Z",
}
STARTED = {
    "status": 202,
    "detail": "started",
    "imagebuilder_status": "building_image",
    "request_hash": HASH,
    "enqueued_at": "2026-04-20T10:11:12.345678Z",
}
DONE = {
    "status": 200,
    "detail": "done",
    "imagebuilder_status": "done",
    "request_hash": HASH,
    "enqueued_at": "2026-04-20T10:11:12.345678Z",
    "id": "tplink_archer-c7-v5",
    "bin_dir": HASH,
    "build_at": "2026-04-20T10:12:40.000000Z",
    "target": "ath79/generic",
    "version_number": "24.10.1",
    "version_code": "r28427-6df0e3d02a",
    "arch_packages": "mips_24kc",
    "images": [
        {
            "name": "openwrt-24.10.1-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
            "type": "sysupgrade",
            "filesystem": "squashfs",
            "sha256": "4e47c644057f9e7b62d14c89cbb505549644819f307bd950d60cb773a7e2098a",
            "sha256_unsigned": "9b1f0c3f0a6cd2d1f3a9a8d2c0e5e7a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8",
        }
    ],
    "manifest": {"base-files": "1655-r1", "luci": "25.100-r1"},
    "build_cmd": ["make", "image", "PROFILE=tplink_archer-c7-v5", "PACKAGES=luci"],
    "stdout": "...",
    "stderr": "",
    "request": {**ARCHER, "profile": "tplink_archer-c7-v5", "packages": ["luci"]},
    "package_changes_applied": [],
}
FAILED = {
    "status": 500,
    "title": "Build failed",
    "detail": "Error: Impossible package selection: missing (luci-app-nothing)",
    "imagebuilder_status": "failed",
    "stdout": "...",
    "stderr": "...",
    "build_cmd": ["make", "image", "PROFILE=tplink_archer-c7-v5"],
    "request": {**ARCHER, "profile": "tplink_archer-c7-v5", "packages": ["luci-app-nothing"]},
    "request_hash": HASH,
    "enqueued_at": "2026-04-20T10:11:12.345678Z",
}


def _answer(name: str, value: dict, status: int) -> OpenApiExample:
    return OpenApiExample(name, value=value, response_only=True, status_codes=[str(status)])


STATUS_RESPONSES = {
    200: OpenApiResponse(
        BuildDoneSerializer,
        description="The image is built: download it from /store/{bin_dir}/{name}.",
        examples=[_answer("Done", DONE, 200)],
    ),
    202: OpenApiResponse(
        BuildRunningSerializer,
        description="Queued or building: ask again in a few seconds.",
        examples=[_answer("Queued", QUEUED, 202), _answer("Started", STARTED, 202)],
    ),
    500: OpenApiResponse(
        BuildFailedSerializer,
        description="The build failed (kept for ASU_FAILURE_TTL, then tried again), or the "
        "server failed.",
        examples=[
            _answer("Build failed", FAILED, 500),
            error_example(500, "internal server error", name="Server fault"),
        ],
    ),
    503: error_response(
        "A service the server needs (database, build queue, image store) is down, or the "
        "build is accepted but not yet handed to the build queue. Nothing is decided: "
        f"ask again after `Retry-After` ({RETRY_AFTER}) seconds.",
        error_example(
            503,
            "Temporarily unavailable: the database is unavailable. Please try again in a moment",
        ),
    ),
    405: METHOD_NOT_ALLOWED,
}

# Requests, as each client sends them ------------------------------------------------------

PACKAGES = ["base-files", "busybox", "dropbear", "firewall4", "luci", "luci-app-attendedsysupgrade"]
VERSIONS = {"base-files": "1655-r1", "busybox": "1.36.1-r2", "luci": "25.100-r1"}
CLIENT_REQUESTS = [
    OpenApiExample(
        "LuCI",
        summary="luci-app-attendedsysupgrade: board name with a comma, absolute list",
        value={
            "client": "luci/25.103.51521~2ac26e5",
            "packages": PACKAGES,
            "profile": "tplink,archer-c7-v5",
            **ARCHER,
            "diff_packages": True,
            "filesystem": "squashfs",
            "rootfs_size_mb": None,
        },
        request_only=True,
    ),
    OpenApiExample(
        "owut",
        summary="owut: expected revision and package versions",
        value={
            "client": "owut/2026.04.09",
            **ARCHER,
            "profile": "tplink,archer-c7-v5",
            "version_code": "r28427-6df0e3d02a",
            "filesystem": "squashfs",
            "diff_packages": True,
            "packages_versions": VERSIONS,
        },
        request_only=True,
    ),
    OpenApiExample(
        "auc",
        summary="auc: no `client` (its User-Agent names it), sent as text/json",
        value={
            **ARCHER,
            "version_code": "r28427-6df0e3d02a",
            "filesystem": "squashfs",
            "profile": "tplink,archer-c7-v5",
            "diff_packages": True,
            "packages_versions": VERSIONS,
        },
        request_only=True,
    ),
    OpenApiExample(
        "Firmware Selector",
        summary="OpenWrt Firmware Selector: extra packages, empty values for absent ones",
        value={
            "profile": "tplink_archer-c7-v5",
            "target": "ath79/generic",
            "packages": ["luci", "tcpdump"],
            "defaults": "",
            "version_code": "",
            "version": "24.10.1",
            "diff_packages": False,
            "client": "ofs/3f2c1a0",
            "repositories": {},
            "repository_keys": [],
        },
        request_only=True,
    ),
]

build_request = extend_schema(
    operation_id="build_request",
    summary="Request an image",
    description="Find or queue the build of an image for a router. The same request answers "
    "the same build (`request_hash`) as long as it is kept; poll "
    "`GET /api/v1/build/{request_hash}` while it is 202. The body is JSON whatever its "
    "Content-Type; unknown fields are ignored and empty values mean absent.",
    tags=[TAG],
    # Read as JSON whatever the Content-Type says (auc sends text/json).
    request={"application/json": BuildRequestSerializer},
    examples=CLIENT_REQUESTS,
    parameters=HEADERS,
    responses={
        **STATUS_RESPONSES,
        400: error_response(
            "The catalogue does not have what was asked for, or the server does not allow "
            "it. Unknown packages are also named in `X-Unknown-Package`.",
            error_example(400, "Unsupported version: 9.9.9", name="Unknown version"),
            error_example(
                400,
                "Unsupported profile: tplink_archer-c9. ath79/generic in 24.10.1 has no "
                "device of that name: it may have been renamed or dropped. Use the profile "
                "name or board name listed in the target's profiles.json.",
                name="Unknown profile",
            ),
            error_example(
                400,
                "Impossible package selection: missing (luci-app-nothing)",
                name="Unknown package",
            ),
            error_example(400, "Handling `defaults` not enabled on server", name="Defaults"),
        ),
        422: error_response(
            "The body is not a build request: not JSON, a wrong type, a name with characters "
            "no name has, a value out of range.",
            error_example(422, "profile: This field is required.", name="Missing field"),
            error_example(
                422,
                "Malformed request: the body is not valid JSON: Expecting value: line 1 "
                "column 1 (char 0)",
                name="Not JSON",
            ),
        ),
        529: error_response(
            "Too many builds are queued: try again in a few minutes.",
            error_example(
                529,
                "server overload, queue contains too many build requests: 200. Please try "
                "again in a few minutes.",
                title="Server overloaded",
            ),
        ),
    },
)

build_status = extend_schema(
    operation_id="build_status",
    summary="Poll a build",
    description="The state of the build `request_hash` names. HEAD answers the same status "
    "and headers without the body (owut polls with it). Query strings are ignored.",
    tags=[TAG],
    parameters=[
        OpenApiParameter(
            "request_hash", str, OpenApiParameter.PATH, description="From the build request."
        ),
        *HEADERS,
    ],
    responses={
        **STATUS_RESPONSES,
        404: error_response(
            "No build has this hash (never requested, or expired).",
            error_example(404, "could not find provided request hash"),
        ),
    },
    extensions={ALSO_HEAD: True},
)


class StatsSerializer(serializers.Serializer):
    queue_length = serializers.IntegerField(help_text="Builds waiting for a worker.")


stats = extend_schema(
    operation_id="stats",
    summary="Queue length",
    tags=["stats"],
    responses={
        200: OpenApiResponse(
            StatsSerializer,
            examples=[OpenApiExample("Queue", value={"queue_length": 2}, response_only=True)],
        ),
        405: METHOD_NOT_ALLOWED,
    },
)

build_errors = extend_schema(
    operation_id="build_errors",
    summary="Recent build failures",
    description="The latest failed builds as plain text, newest first, as openwrt/asu "
    "publishes them.",
    tags=[TAG],
    parameters=[
        OpenApiParameter(
            "n", int, description="How many failures, 1 to 1000 (default 100).", default=100
        )
    ],
    responses={
        (200, "text/plain"): OpenApiResponse(
            OpenApiTypes.STR,
            examples=[
                OpenApiExample("Log", value="No build errors recorded.\n", response_only=True)
            ],
        ),
        422: error_response(
            "`n` is not a whole number from 1 to 1000.",
            error_example(422, "n must be a whole number from 1 to 1000, not 'x'"),
        ),
        405: METHOD_NOT_ALLOWED,
    },
)

signing_key = extend_schema(
    operation_id="signing_key",
    summary="The public key the images are signed with",
    description="A usign public key file, to be saved on the router as "
    "/etc/opkg/keys/<fingerprint> (the `X-Key-Fingerprint` header).",
    tags=[TAG],
    responses={
        (200, "text/plain"): OpenApiResponse(
            OpenApiTypes.STR,
            examples=[
                OpenApiExample(
                    "Key",
                    value="untrusted comment: ASU signing key\nRWQ...\n",
                    response_only=True,
                )
            ],
        ),
        404: error_response(
            "This server signs no images.",
            error_example(404, "This server does not sign images: it has no signing key"),
        ),
        405: METHOD_NOT_ALLOWED,
    },
    extensions={ALSO_HEAD: True},
)
