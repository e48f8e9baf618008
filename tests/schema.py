"""Every answer of the API checked against its OpenAPI description.

`documented_api` (a fixture in tests/conftest.py) makes the test client check each answer
to a path the schema describes: the status code must be documented for that operation,
the documented required headers present, and a JSON body valid against the documented
schema. A test module opts in with `pytest.mark.usefixtures("documented_api")`.
"""

import functools
import json
import re

from drf_spectacular.generators import SchemaGenerator
from openapi_schema_validator import OAS30Validator, oas30_format_checker


@functools.cache
def openapi_document() -> dict:
    """The schema as /api/v1/openapi.json serves it, generated once per test run."""
    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))


@functools.cache
def _templates() -> list[tuple[re.Pattern, str]]:
    """A regex for each documented path: `/api/v1/build/{request_hash}` and the same with
    the optional trailing slash."""
    patterns = []
    for template in openapi_document()["paths"]:
        regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        patterns.append((re.compile(f"{regex}/?"), template))
    return patterns


def documented_operation(path: str, method: str) -> tuple[str, dict | None] | None:
    """(path template, operation) for a request path, the operation None when the path is
    documented but the method is not; None for paths the schema does not describe."""
    for regex, template in _templates():
        if regex.fullmatch(path):
            return template, openapi_document()["paths"][template].get(method.lower())
    return None


def assert_documented(response) -> None:
    """Fail unless `response` (Django's test client) is an answer its operation documents."""
    path, method = response.request["PATH_INFO"], response.request["REQUEST_METHOD"]
    found = documented_operation(path, method)
    if found is None:
        return
    template, operation = found
    where = f"{method} {template} answered {response.status_code}"
    if method == "OPTIONS":
        return  # CORS preflights, answered by the middleware; not an operation of the API
    if operation is None:
        # Not a method of this path: the contract's 405.
        assert response.status_code == 405, where
        _validate(response.json(), {"$ref": "#/components/schemas/Error"}, where)
        return
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{where}, which the schema does not document"
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert response.has_header(name), f"{where} without the header {name}"
    content = documented.get("content")
    if method == "HEAD" or not content:
        assert not response.content, f"{where} with a body"
        return
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in content, f"{where} as {media_type}, documented {list(content)}"
    if media_type == "application/json":
        _validate(response.json(), content[media_type]["schema"], where)


def _validate(body: object, schema: dict, where: str) -> None:
    document = {**schema, "components": openapi_document()["components"]}
    errors = list(OAS30Validator(document, format_checker=oas30_format_checker).iter_errors(body))
    assert not errors, f"{where} with a body the schema refuses: {errors[0].message}"
