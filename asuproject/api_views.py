"""The base of every API view: DRF, trimmed to what a JSON API without accounts needs.

No authentication, permissions, throttling or content negotiation run before the handler:
the API has no users, always answers JSON, and its busiest requests (a repeated build
request, a poll) cost less than that work. A view may return pre-encoded bytes in an
`HttpResponse`; a DRF `Response` is rendered as JSON. Wrong methods, a bare OPTIONS and
unexpected errors answer the contract's JSON (`api_errors.error_body`).

`safe_methods_only` is the same 405 for the plain Django views of the json/v1 documents.
"""

import functools
import io
import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView

from asuproject.api_errors import error_response
from asuproject.input import LimitedJSONParser

log = logging.getLogger(__name__)

# Stateless: one for every request.
NEGOTIATOR = DefaultContentNegotiation()


class AnyTypeJSONParser(LimitedJSONParser):
    """`LimitedJSONParser` for a body sent with any Content-Type (auc sends `text/json`,
    curl users forget the header); a blank body reads as an empty object."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        body = stream.read() if stream is not None else b""
        if not body.strip():
            return {}
        return super().parse(io.BytesIO(body), media_type, parser_context)


class JsonAPIView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        # DRF's, without asking for authenticators and a negotiator on every request.
        return Request(
            request,
            parsers=[parser() for parser in self.parser_classes],
            negotiator=NEGOTIATOR,
            parser_context={"view": self, "args": args, "kwargs": kwargs},
        )

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Nothing to negotiate, authenticate or throttle; a `Response` returned by the
        # handler is negotiated (JSON, the only renderer) in `finalize_response`.
        self.format_kwarg = None

    @property
    def default_response_headers(self) -> dict:
        # DRF adds `Allow` to every answer; the API's answers carry it only on a 405 and
        # a bare OPTIONS, as the build answers always have.
        return {}

    def allowed(self) -> str:
        return ", ".join(self._allowed_methods())

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        response = self.error(405, f'Method "{request.method}" not allowed.')
        response["Allow"] = self.allowed()
        return response

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Preflights are answered by the CORS middleware; a bare OPTIONS lists the methods."""
        response = self.error(200, f"allowed methods: {self.allowed()}", title="OK")
        response["Allow"] = self.allowed()
        return response

    def error(self, status: int, detail: str, title: str | None = None) -> HttpResponse:
        """An answer of the contract's error shape; the build views add their headers."""
        return error_response(status, detail, title)

    def handle_exception(self, exc: Exception) -> HttpResponse:
        """DRF's exceptions through `api_errors.exception_handler`; anything else is a
        fault of the server: logged, and answered as JSON rather than Django's page."""
        if isinstance(exc, exceptions.APIException | Http404 | PermissionDenied):
            return super().handle_exception(exc)
        log.exception("unexpected error in %s", self.__class__.__name__)
        return self.error(500, "internal server error")


def safe_methods_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Django's `require_safe` (GET and HEAD only), answering a 405 in JSON."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            response = error_response(405, f'Method "{request.method}" not allowed.')
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return wrapped
