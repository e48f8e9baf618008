"""What every part of the OpenAPI description shares: the error document, its examples,
paths without the optional trailing slash, and HEAD operations (drf-spectacular
leaves HEAD out; owut polls with it).

The schema is generated from the views (`manage.py spectacular`) and served at
/api/v1/openapi.json and .yaml; each app describes its own views in its `schema` module.
"""

from http import HTTPStatus
from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

# `extensions` key of a GET operation that is also answered to HEAD (see `add_head_operations`).
ALSO_HEAD = "x-also-head"


class ErrorSerializer(serializers.Serializer):
    """Every error of the API: the HTTP code again, its phrase, and what was wrong."""

    status = serializers.IntegerField(help_text="The HTTP status code again.")
    title = serializers.CharField(help_text="The status code's phrase, or a short heading.")
    detail = serializers.CharField(help_text="What was wrong, in words a router owner can act on.")


def error_example(status: int, detail: str, title: str | None = None, name: str = "") -> Any:
    """An example error document, shown under its status code."""
    return OpenApiExample(
        name or f"{status} {title or HTTPStatus(status).phrase}",
        value={"status": status, "title": title or HTTPStatus(status).phrase, "detail": detail},
        response_only=True,
        status_codes=[str(status)],
    )


def error_response(description: str, *examples: Any) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description, examples=list(examples))


METHOD_NOT_ALLOWED = error_response(
    "The path does not take this method; `Allow` lists the ones it takes.",
    error_example(405, 'Method "PUT" not allowed.'),
)


# asuproject.middleware.RefuseControlCharactersMiddleware answers this before any view.
CONTROL_CHARACTER_DETAIL = (
    "The address holds a control character (such as %00 or %0A); "
    "no path or query of this server has one."
)


def finish_schema(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: the paths as clients spell them, the 400 of
    an address with a control character, and HEAD."""
    paths = {}
    for path, operations in result["paths"].items():
        for operation in operations.values():
            _add_address_error(operation)
        paths[path.rstrip("/")] = _with_head(operations)
    result["paths"] = paths
    return result


def _add_address_error(operation: dict) -> None:
    """Every path and query may be refused with 400 for a control character in it."""
    answer = operation["responses"].setdefault(
        "400",
        {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            "description": "",
        },
    )
    answer["description"] = (
        answer["description"] + " Also: the address holds a control character."
    ).strip()
    # An operation may describe its 400 in words only; the control-character answer is
    # the project's error body all the same.
    body = answer.setdefault("content", {}).setdefault(
        "application/json", {"schema": {"$ref": "#/components/schemas/Error"}}
    )
    examples = body.setdefault("examples", {})
    examples["ControlCharacter"] = {
        "value": {"status": 400, "title": "Bad Request", "detail": CONTROL_CHARACTER_DETAIL},
        "summary": "A control character in the address",
    }


def _with_head(operations: dict) -> dict:
    """A HEAD operation beside a GET marked with ALSO_HEAD, answering the same status
    codes and headers without a body."""
    get = operations.get("get")
    if not get or not get.pop(ALSO_HEAD, False):
        return operations
    head = {
        **get,
        "operationId": get["operationId"] + "_head",
        "summary": get.get("summary", "") + " (headers only)",
        "responses": {
            code: {key: value for key, value in answer.items() if key != "content"}
            for code, answer in get["responses"].items()
        },
    }
    return {**operations, "head": head}
