"""The build API: POST /api/v1/build, GET and HEAD /api/v1/build/{hash}, GET /api/v1/stats.

Every answer is JSON with an integer `status` equal to the HTTP code and a string
`detail`; the build endpoints also carry `X-Imagebuilder-Status` and `X-Queue-Position`.

Plain Django views, not DRF's: these are the busiest requests of the server, and DRF's
request wrapping, content negotiation and rendering cost more than the work itself. The
serializer still checks the shape of new requests. A finished build's answer is rendered
once per process and served as bytes until the build expires (`services.keep_answer`).
"""

import json
import logging
import re
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, NamedTuple

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from asuproject.api_errors import flatten_errors
from builds.models import Build
from builds.serializers import BuildRequestSerializer
from builds.services import (
    RESULT_COLUMNS,
    BuildRejected,
    body_key,
    build_by_hash,
    drop_answer,
    finished_answer,
    imagebuilder_step,
    keep_answer,
    known_body,
    known_build,
    queue_position,
    remember_body,
    request_build,
    shortcut_key,
)

log = logging.getLogger(__name__)

# The detail of a build that failed on packages names them, for auc's header.
MISSING_PREFIX = "Impossible package selection: missing ("


class Answer(NamedTuple):
    """An answer of the build endpoints, ready to send."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    reason: str | None = None


class Malformed(Exception):
    """A body that is not JSON: 422."""


def _encode(data: dict) -> bytes:
    # As DRF's JSONRenderer wrote it: compact, UTF-8.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def error_answer(status: int, detail: str, title: str | None = None, headers: tuple = ()) -> Answer:
    """An error the contract's way; the build headers say `failed` and position 0."""
    body = {"status": status, "title": title or HTTPStatus(status).phrase, "detail": detail}
    return Answer(
        status,
        _encode(body),
        (("X-Imagebuilder-Status", "failed"), ("X-Queue-Position", "0"), *headers),
    )


NOT_FOUND = Answer(
    404,
    _encode(
        {"status": 404, "title": "Not Found", "detail": "could not find provided request hash"}
    ),
    (("X-Imagebuilder-Status", "failed"), ("X-Queue-Position", "0")),
)
INTERNAL_ERROR = error_answer(500, "internal server error")


def respond(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, content_type="application/json", status=answer.status)
    if answer.reason:
        response.reason_phrase = answer.reason
    for name, value in answer.headers:
        response.headers[name] = value
    return response


class JsonEndpoint(View):
    """JSON in and out, no CSRF (no cookies are involved), and JSON even for wrong
    methods and unexpected errors: clients parse every answer."""

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        return csrf_exempt(super().as_view(**initkwargs))

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().dispatch(request, *args, **kwargs)
        except Exception:
            log.exception("unexpected error in %s", self.__class__.__name__)
            return respond(INTERNAL_ERROR)

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        response = respond(error_answer(405, f'Method "{request.method}" not allowed.'))
        response["Allow"] = ", ".join(self._allowed_methods())
        return response

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Preflights are answered by the CORS middleware; a bare OPTIONS lists the methods.
        allowed = ", ".join(self._allowed_methods())
        response = respond(error_answer(200, f"allowed methods: {allowed}", title="OK"))
        response["Allow"] = allowed
        return response


class BuildView(JsonEndpoint):
    def post(self, request: HttpRequest) -> HttpResponse:
        """A request seen before takes the shortcut (one query); a new one is checked by
        the serializer and the catalogue, then found or queued."""
        try:
            body = request.body
        except RequestDataTooBig:
            return respond(error_answer(422, "Malformed request: the request body is too large"))
        key = body_key(body)
        shortcut = known_body(key)
        # The same bytes as a request answered before: no need to parse them again.
        found = known_build(None, shortcut) if shortcut else None
        if found is None:
            try:
                raw = json_body(body)
            except Malformed as exc:
                return respond(error_answer(422, f"Malformed request: {exc}"))
            shortcut = shortcut_key(raw)
            found = known_build(raw, shortcut)
        if found is None:
            serializer = BuildRequestSerializer(data=raw)
            if not serializer.is_valid():
                return respond(error_answer(422, "; ".join(flatten_errors(serializer.errors))))
            try:
                found, _queued = request_build(
                    serializer.validated_data,
                    user_agent=request.headers.get("User-Agent", ""),
                    shortcut=shortcut,
                )
            except BuildRejected as exc:
                return respond(rejected(exc))
        remember_body(key, shortcut)
        return respond(status_answer(found))


class BuildStatusView(JsonEndpoint):
    def get(self, request: HttpRequest, request_hash: str) -> HttpResponse:
        """GET and HEAD: no query for a finished build this process answered before,
        one for any other (two while queued, for the position)."""
        answer = finished_answer(request_hash)
        if answer is None:
            found = build_by_hash(request_hash)
            answer = NOT_FOUND if found is None else status_answer(found)
        return respond(answer)


class StatsView(JsonEndpoint):
    def get(self, request: HttpRequest) -> HttpResponse:
        count = Build.objects.queued().count()
        return HttpResponse(_encode({"queue_length": count}), content_type="application/json")


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other path under /api/: JSON, even with DEBUG on."""
    return JsonResponse(
        {"status": 404, "title": "Not Found", "detail": f"not found: {request.path}"}, status=404
    )


def json_body(body: bytes) -> Any:
    """The request body as JSON, whatever Content-Type it came with (auc sends text/json)."""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(f"the body is not valid JSON: {exc}") from None


def rejected(exc: BuildRejected) -> Answer:
    headers = (("X-Unknown-Package", ", ".join(exc.unknown_packages)),)
    answer = error_answer(
        exc.status, exc.detail, title=exc.title, headers=headers if exc.unknown_packages else ()
    )
    if exc.status == 529:
        return answer._replace(reason="Site is overloaded")
    return answer


def status_answer(build: Build) -> Answer:
    """The build status: 202 queued or started, 200 done, 500 failed. A finished build's
    answer is kept for the next polls; `build` may hold only the status columns when
    this process has kept it."""
    finished = build.status == Build.Status.DONE
    if finished:
        kept = finished_answer(build.request_hash)
        if kept is not None:
            return kept
    else:
        # A row deleted and requested anew: what this process kept for it is over.
        drop_answer(build.request_hash)
    if build.status in (Build.Status.DONE, Build.Status.FAILED):
        missing = build.get_deferred_fields().intersection(RESULT_COLUMNS)
        if missing:
            build.refresh_from_db(fields=missing)
    answer = _render(build)
    if finished:
        keep_answer(build, answer, len(answer.body))
    return answer


def _render(build: Build) -> Answer:
    common = {"request_hash": build.request_hash, "enqueued_at": _iso(build.enqueued_at)}
    position = 0
    headers: list[tuple[str, str]] = []

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
            headers.append(("X-Unknown-Package", missing))

    headers += [("X-Imagebuilder-Status", step), ("X-Queue-Position", str(position))]
    return Answer(body["status"], _encode(body), tuple(headers))


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
