"""Every error of the API as the contract's JSON: integer `status` and a string `detail`.

DRF views (the package-changes API) get it through `exception_handler`; the plain build
views call `flatten_errors` on the serializer's errors."""

from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler


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
    response.data = {
        "status": response.status_code,
        "title": response.status_text,
        "detail": detail,
    }
    return response
