"""The build API: POST /api/v1/build, GET and HEAD /api/v1/build/{hash}, GET /api/v1/stats,
GET /api/v1/build-errors.

Every answer is JSON with an integer `status` equal to the HTTP code and a string
`detail`; the build endpoints also carry `X-Imagebuilder-Status` and `X-Queue-Position`.

DRF views without DRF's per-request work (`asuproject.api_views.JsonAPIView`): these are
the busiest requests of the server. The bytes of a request answered before skip parsing
and the serializer; a finished build's answer is rendered once per process and served as
bytes until the build expires (`builds.memory`). The OpenAPI description of each view is
in `builds.schema`.
"""

import logging

import django.db
import kombu.exceptions
import redis
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from rest_framework.exceptions import ParseError
from rest_framework.request import Request

from asuproject.api_errors import error_response, flatten_errors
from asuproject.api_views import AnyTypeJSONParser, JsonAPIView
from builds import schema, signing
from builds.answers import (
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


class BuildEndpoint(JsonAPIView):
    """Errors with the build headers, and 503 when a service the server needs is down."""

    def error(self, status: int, detail: str, title: str | None = None) -> HttpResponse:
        return respond(error_answer(status, detail, title))

    def handle_exception(self, exc: Exception) -> HttpResponse:
        if isinstance(exc, INFRASTRUCTURE_ERRORS):
            log.warning("%s: service unavailable: %r", self.__class__.__name__, exc)
            return respond(unavailable(unavailable_detail(exc)))
        return super().handle_exception(exc)


class BuildView(BuildEndpoint):
    parser_classes = [AnyTypeJSONParser]

    @schema.build_request
    def post(self, request: Request) -> HttpResponse:
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
                raw = request.data
            except ParseError as exc:
                return respond(error_answer(422, f"Malformed request: {exc.detail}"))
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


class BuildStatusView(BuildEndpoint):
    @schema.build_status
    def get(self, request: Request, request_hash: str) -> HttpResponse:
        """GET and HEAD: no query for a finished build this process answered before,
        one for any other (two while queued, for the position)."""
        answer = memory.finished_answer(request_hash)
        if answer is None:
            found = build_by_hash(request_hash)
            answer = NOT_FOUND if found is None else status_answer(found)
        return respond(answer)


class StatsView(BuildEndpoint):
    @schema.stats
    def get(self, request: Request) -> HttpResponse:
        count = Build.objects.queued().count()
        return HttpResponse(encode({"queue_length": count}), content_type="application/json")


ERROR_LOG_DEFAULT = 100
ERROR_LOG_MAX = 1000


class BuildErrorsView(BuildEndpoint):
    @schema.build_errors
    def get(self, request: Request) -> HttpResponse:
        """GET /api/v1/build-errors?n=100: the latest failures as plain text."""
        count = request.GET.get("n", str(ERROR_LOG_DEFAULT))
        if not count.isdigit() or not 1 <= int(count) <= ERROR_LOG_MAX:
            return error_response(
                422, f"n must be a whole number from 1 to {ERROR_LOG_MAX}, not {count!r}"
            )
        text = Build.objects.error_log(int(count))
        return HttpResponse(text + "\n", content_type="text/plain; charset=utf-8")


class SigningKeyView(JsonAPIView):
    @schema.signing_key
    def get(self, request: Request) -> HttpResponse:
        return signing.public_key_response()
