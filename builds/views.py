"""The build API: POST /api/v1/build, GET and HEAD /api/v1/build/{hash}, GET /api/v1/stats.

Every answer is JSON with an integer `status` equal to the HTTP code and a string
`detail`; the build endpoints also carry `X-Imagebuilder-Status` and `X-Queue-Position`.
"""

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from builds.models import Build
from builds.serializers import BuildRequestSerializer
from builds.services import (
    BuildRejected,
    build_by_hash,
    imagebuilder_step,
    known_build,
    queue_position,
    request_build,
    shortcut_key,
)

log = logging.getLogger(__name__)

NOT_FOUND = {"status": 404, "title": "Not Found", "detail": "could not find provided request hash"}
# The detail of a build that failed on packages names them, for auc's header.
MISSING_PREFIX = "Impossible package selection: missing ("


class JsonApiView(APIView):
    """JSON in and out, no authentication, and JSON even for unexpected errors."""

    renderer_classes = [JSONRenderer]
    parser_classes: list = []  # the body is read by `json_body`, whatever its Content-Type
    authentication_classes: list = []
    permission_classes: list = []

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, exceptions.APIException | Http404):
            return super().handle_exception(exc)
        # Clients parse every answer: never let Django's HTML error page through.
        log.exception("unexpected error in %s", self.__class__.__name__)
        return Response(
            {"status": 500, "title": "Internal Server Error", "detail": "internal server error"},
            status=500,
        )


class BuildEndpoint(JsonApiView):
    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        # Errors raised before a build exists (422, 405 ...) still carry both headers.
        if "X-Imagebuilder-Status" not in response:
            response["X-Imagebuilder-Status"] = "failed"
        if "X-Queue-Position" not in response:
            response["X-Queue-Position"] = "0"
        return response


class BuildView(BuildEndpoint):
    def post(self, request: Request) -> Response:
        raw = json_body(request)
        shortcut = shortcut_key(raw)
        build = known_build(raw, shortcut)
        if build is None:
            serializer = BuildRequestSerializer(data=raw)
            serializer.is_valid(raise_exception=True)
            try:
                build, _queued = request_build(
                    serializer.validated_data,
                    user_agent=request.headers.get("User-Agent", ""),
                    shortcut=shortcut,
                )
            except BuildRejected as exc:
                return rejected(exc)
        return build_answer(build)


class BuildStatusView(BuildEndpoint):
    def get(self, request: Request, request_hash: str) -> Response:
        build = build_by_hash(request_hash)
        if build is None:
            return Response(NOT_FOUND, status=404)
        return build_answer(build)


class StatsView(JsonApiView):
    def get(self, request: Request) -> Response:
        return Response({"queue_length": Build.objects.queued().count()})


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other path under /api/: JSON, even with DEBUG on."""
    return JsonResponse(
        {"status": 404, "title": "Not Found", "detail": f"not found: {request.path}"}, status=404
    )


def json_body(request: Request) -> Any:
    """The request body as JSON, whatever Content-Type it came with (auc sends text/json)."""
    try:
        body = request.body
    except RequestDataTooBig:
        raise exceptions.ParseError("the request body is too large") from None
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise exceptions.ParseError(f"the body is not valid JSON: {exc}") from None


def rejected(exc: BuildRejected) -> Response:
    response = Response(
        {"status": exc.status, "title": exc.title, "detail": exc.detail}, status=exc.status
    )
    if exc.status == 529:
        response.reason_phrase = "Site is overloaded"
    if exc.unknown_packages:
        response["X-Unknown-Package"] = ", ".join(exc.unknown_packages)
    return response


def build_answer(build: Build) -> Response:
    """The build status: 202 queued or started, 200 done, 500 failed."""
    common = {"request_hash": build.request_hash, "enqueued_at": _iso(build.enqueued_at)}
    position = 0
    headers: dict[str, str] = {}

    if build.status == Build.Status.QUEUED:
        position = queue_position(build)
        step = "queued"
        body = {"status": 202, "detail": "queued", "queue_position": position, **common}
    elif build.status == Build.Status.STARTED:
        step = imagebuilder_step(build)
        body = {"status": 202, "detail": "started", "imagebuilder_status": step, **common}
    elif build.status == Build.Status.DONE:
        step = "done"
        body = {
            **(build.result or {}),
            "id": build.profile,
            "bin_dir": build.bin_dir,
            "build_at": (build.result or {}).get("build_at") or _iso(build.finished_at),
            "manifest": build.manifest,
            "build_cmd": build.build_cmd,
            "stdout": build.stdout,
            "stderr": build.stderr,
            "request": build.request,
            "images": build.images or (build.result or {}).get("images", []),
            "package_changes_applied": build.package_changes_applied,
            "status": 200,
            "detail": "done",
            "imagebuilder_status": "done",
            **common,
        }
    else:
        step = "failed"
        detail = build.detail or "Error: the build failed"
        body = {
            "status": 500,
            "title": "Build failed",
            "detail": detail,
            "imagebuilder_status": "failed",
            "stdout": build.stdout,
            "stderr": build.stderr,
            "build_cmd": build.build_cmd,
            "request": build.request,
            **common,
        }
        missing = _missing_packages(detail)
        if missing:
            headers["X-Unknown-Package"] = missing

    headers["X-Imagebuilder-Status"] = step
    headers["X-Queue-Position"] = str(position)
    return Response(body, status=body["status"], headers=headers)


def _missing_packages(detail: str) -> str:
    start = detail.find(MISSING_PREFIX)
    if start < 0:
        return ""
    names = detail[start + len(MISSING_PREFIX) :].split(")", 1)[0]
    # Only name characters: the detail comes from build output, a header must not break.
    return ", ".join(re.findall(r"[\w.+-]+", names))


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
