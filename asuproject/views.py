"""Error pages: JSON on the machine paths, where clients parse every answer."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as html_server_error

MACHINE_PREFIXES = ("/api/", "/json/", "/store/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(MACHINE_PREFIXES):
        return JsonResponse(
            {"status": 404, "title": "Not Found", "detail": f"not found: {request.path}"},
            status=404,
        )
    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(MACHINE_PREFIXES):
        return JsonResponse(
            {"status": 500, "title": "Internal Server Error", "detail": "internal server error"},
            status=500,
        )
    return html_server_error(request)
