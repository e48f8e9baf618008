"""The build API: POST /api/v1/build, GET and HEAD /api/v1/build/{hash}, GET /api/v1/stats,
GET /api/v1/build-errors.

Every answer is JSON with an integer `status` equal to the HTTP code and a string
`detail`; the build endpoints also carry `X-Imagebuilder-Status` and `X-Queue-Position`.

Plain Django views, not DRF's: these are the busiest requests of the server, and DRF's
request wrapping, content negotiation and rendering cost more than the work itself. The
serializer still checks the shape of new requests. A finished build's answer is rendered
once per process and served as bytes until the build expires (`builds.memory`).
"""

import logging
from typing import Any

import django.db
import kombu.exceptions
import redis
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from asuproject.api_errors import error_response, flatten_errors
from asuproject.input import MalformedJSON, parse_json
from builds.answers import (
    INTERNAL_ERROR,
    NOT_FOUND,
    encode,
    error_answer,
    rejected,
    respond,
    status_answer,
    unavailable,
)
from builds.errors import BuildRejected
from builds.memory import body_key, known_build, memory, shortcut_key
from builds.models import Build
from builds.queue import QueueUnavailable, build_by_hash, send
from builds.serializers import BuildRequestSerializer
from builds.services import request_build

log = logging.getLogger(__name__)


# A service the server needs is down: 503, and the request can simply be repeated.
# OSError covers the store, and sockets the broker client did not wrap.
DATABASE_ERRORS = (django.db.OperationalError, django.db.InterfaceError)
BROKER_ERRORS = (QueueUnavailable, kombu.exceptions.OperationalError, redis.ConnectionError)
INFRASTRUCTURE_ERRORS = (*DATABASE_ERRORS, *BROKER_ERRORS, OSError)


def unavailable_detail(exc: Exception) -> str:
    """Which service is down, in words; the exception itself goes to the log only."""
    if isinstance(exc, DATABASE_ERRORS):
        service = "the database is unavailable"
    elif isinstance(exc, BROKER_ERRORS):
        service = "the build queue is unavailable"
    else:
        service = "the image store is unavailable"
    return f"Temporarily unavailable: {service}. Please try again in a moment"


class Malformed(Exception):
    """A body that is not JSON: 422."""


class JsonEndpoint(View):
    """JSON in and out, no CSRF (no cookies are involved), and JSON even for wrong
    methods and unexpected errors: clients parse every answer."""

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        return csrf_exempt(super().as_view(**initkwargs))

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().dispatch(request, *args, **kwargs)
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("%s: service unavailable: %r", self.__class__.__name__, exc)
            return respond(unavailable(unavailable_detail(exc)))
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
        shortcut = memory.shortcut_of_body(key)
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
        if found.is_unsent():
            send(found)  # the broker was down when it was queued: try again now
        memory.remember_body(key, shortcut)
        return respond(status_answer(found))


class BuildStatusView(JsonEndpoint):
    def get(self, request: HttpRequest, request_hash: str) -> HttpResponse:
        """GET and HEAD: no query for a finished build this process answered before,
        one for any other (two while queued, for the position)."""
        answer = memory.finished_answer(request_hash)
        if answer is None:
            found = build_by_hash(request_hash)
            answer = NOT_FOUND if found is None else status_answer(found)
        return respond(answer)


class StatsView(JsonEndpoint):
    def get(self, request: HttpRequest) -> HttpResponse:
        count = Build.objects.queued().count()
        return HttpResponse(encode({"queue_length": count}), content_type="application/json")


ERROR_LOG_DEFAULT = 100
ERROR_LOG_MAX = 1000


class BuildErrorsView(JsonEndpoint):
    def get(self, request: HttpRequest) -> HttpResponse:
        """GET /api/v1/build-errors?n=100: the latest failures as plain text."""
        count = request.GET.get("n", str(ERROR_LOG_DEFAULT))
        if not count.isdigit() or not 1 <= int(count) <= ERROR_LOG_MAX:
            return error_response(
                422, f"n must be a whole number from 1 to {ERROR_LOG_MAX}, not {count!r}"
            )
        text = Build.objects.error_log(int(count))
        return HttpResponse(text + "\n", content_type="text/plain; charset=utf-8")


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Any other path under /api/: JSON, even with DEBUG on."""
    return error_response(404, f"not found: {request.path}")


def json_body(body: bytes) -> Any:
    """The request body as JSON, whatever Content-Type it came with (auc sends text/json),
    within `parse_json`'s limits on depth, numbers and strings."""
    if not body.strip():
        return {}
    try:
        return parse_json(body)
    except MalformedJSON as exc:
        raise Malformed(str(exc)) from None
