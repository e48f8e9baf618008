"""Every error of the API as the contract's JSON: integer `status` and a string `detail`.

`error_body` is the one place that shape is written. DRF views get it through
`exception_handler`; plain views answer with `error_response` or encode `error_body`
themselves, and call `flatten_errors` on a serializer's errors."""

from http import HTTPStatus
from typing import Any

from django.http import JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler


def error_body(status: int, detail: str, title: str | None = None) -> dict:
    """The contract's error document: the HTTP code again as `status`, its phrase as
    `title` unless given, and `detail` in words a router owner can act on."""
    return {"status": status, "title": title or HTTPStatus(status).phrase, "detail": detail}


def error_response(status: int, detail: str, title: str | None = None) -> JsonResponse:
    """`error_body` as a Django response, for views that are not DRF's."""
    return JsonResponse(error_body(status, detail, title), status=status)


def flatten_errors(detail: Any, prefix: str = "") -> list[str]:
    """Turn DRF's nested errors into sentences: "profile: This field is required.",
    "packages[3]: 'a b' is not a valid package name."."""
    if isinstance(detail, dict):
        messages = []
        for key, value in detail.items():
            if key == api_settings.NON_FIELD_ERRORS_KEY:
                label = prefix
            elif isinstance(key, int):
                label = f"{prefix.removesuffix(': ')}[{key}]: "
            else:
                label = f"{prefix}{key}: "
            messages.extend(flatten_errors(value, label))
        return messages
    if isinstance(detail, list):
        return [msg for item in detail for msg in flatten_errors(item, prefix)]
    return [f"{prefix}{detail}"]


def exception_handler(exc: Exception, context: dict) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.status_code = 422
        detail = "; ".join(flatten_errors(exc.detail))
    elif isinstance(exc, exceptions.ParseError):
        response.status_code = 422
        detail = f"Malformed request: {exc.detail}"
    else:
        detail = "; ".join(flatten_errors(getattr(exc, "detail", str(exc))))
    response.data = error_body(response.status_code, detail, response.status_text)
    return response
