"""Error pages: JSON on the machine paths, where clients parse every answer."""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.defaults import page_not_found
from django.views.defaults import server_error as html_server_error

from asuproject.api_errors import error_response

MACHINE_PREFIXES = ("/api/", "/json/", "/store/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(MACHINE_PREFIXES):
        return error_response(404, f"not found: {request.path}")
    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(MACHINE_PREFIXES):
        return error_response(500, "internal server error")
    return html_server_error(request)


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Any other path under /api/: JSON, even with DEBUG on."""
    return error_response(404, f"not found: {request.path}")
