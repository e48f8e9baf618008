"""The OpenAPI description: valid, complete for each client and error, served as JSON and
YAML, its readers loading nothing from elsewhere; and the checker the contract tests use
(tests/schema.py) refusing an answer the description does not cover."""

import re

import pytest
import yaml
from django.core.management import call_command
from openapi_spec_validator import validate

from tests.schema import assert_documented, openapi_document

STATS_CHARTS = """builds-per-day builds-by-version cache-hit-rate build-durations versions
    targets profiles packages clients failure-reasons""".split()
API_PATHS = {
    "/api/v1/build": {"post"},
    "/api/v1/build/{request_hash}": {"get", "head"},
    "/api/v1/stats": {"get"},
    "/api/v1/build-errors": {"get"},
    "/api/v1/revision/{version}/{target}/{subtarget}": {"get"},
    "/api/v1/package-changes": {"get"},
    "/api/v1/package-changes/apply": {"post"},
    "/api/v1/upgrade-check": {"post"},
    "/api/v1/signing-key": {"get", "head"},
    # openwrt/asu's statistics, and one for each chart of /stats/.
    "/api/v1/stats/summary": {"get", "head"},
    "/api/v1/builds-per-day": {"get", "head"},
    "/api/v1/builds-by-version": {"get", "head"},
    "/api/v1/top-packages": {"get", "head"},
    **{f"/api/v1/stats/{chart}": {"get", "head"} for chart in STATS_CHARTS},
}


def operations():
    for path, methods in openapi_document()["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_the_schema_is_valid_openapi_without_warnings(tmp_path):
    validate(openapi_document())
    # drf-spectacular's own check fails on any warning of the generation too.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s"))


def test_every_api_operation_is_described():
    paths = openapi_document()["paths"]
    assert {path: set(methods) for path, methods in paths.items()} == API_PATHS


def test_operations_have_readable_ids_tags_and_summaries():
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))
    for path, method, operation in operations():
        assert re.fullmatch(r"[a-z_]+", operation["operationId"]), (path, method)
        assert operation["tags"] and operation["summary"], (path, method)


def test_every_error_answer_documents_its_detail():
    for path, method, operation in operations():
        for code, answer in operation["responses"].items():
            if int(code) < 400 or method == "head":
                continue
            assert list(answer["content"]) == ["application/json"], (path, method, code)
            schema = answer["content"]["application/json"]["schema"]
            component = schema["$ref"].rsplit("/", 1)[-1]
            properties = openapi_document()["components"]["schemas"][component]["properties"]
            assert properties["detail"]["type"] == "string", (path, method, code)
            assert answer["content"]["application/json"].get("examples"), (path, method, code)


def test_the_build_request_has_an_example_from_each_client():
    build = openapi_document()["paths"]["/api/v1/build"]["post"]
    examples = build["requestBody"]["content"]["application/json"]["examples"]
    assert {"LuCI", "Owut", "Auc", "FirmwareSelector"} <= set(examples)
    assert examples["Owut"]["value"]["packages_versions"]
    assert examples["LuCI"]["value"]["profile"] == "tplink,archer-c7-v5"
    for code in ("200", "202", "500"):
        assert build["responses"][code]["content"]["application/json"]["examples"], code


def test_the_build_answers_document_their_headers():
    status = openapi_document()["paths"]["/api/v1/build/{request_hash}"]
    for method in ("get", "head"):
        headers = status[method]["responses"]["202"]["headers"]
        assert headers["X-Imagebuilder-Status"]["required"]
        assert headers["X-Queue-Position"]["required"]
        assert "content" not in status["head"]["responses"]["200"]
    build = openapi_document()["paths"]["/api/v1/build"]["post"]["responses"]
    assert "X-Unknown-Package" in build["400"]["headers"]
    assert build["503"]["headers"]["Retry-After"]["required"]


def test_the_schema_is_served_as_json_and_yaml(client):
    as_json = client.get("/api/v1/openapi.json")
    as_yaml = client.get("/api/v1/openapi.yaml")

    assert as_json.status_code == as_yaml.status_code == 200
    assert as_json.json()["paths"].keys() == API_PATHS.keys()
    assert yaml.safe_load(as_yaml.content)["info"]["title"] == as_json.json()["info"]["title"]


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_readers_load_only_files_of_this_server(client, path):
    page = client.get(path).content.decode()
    assert "/api/v1/openapi.json" in page
    sources = re.findall(r"""(?:src|href)=["']([^"']+)""", page)
    assert sources and all(source.startswith("/") for source in sources), sources


@pytest.mark.django_db
def test_the_checker_refuses_what_the_schema_does_not_cover(client, monkeypatch):
    # A 404 the poll documents, then the same status with a body the schema refuses.
    answer = client.get("/api/v1/build/unknown")
    assert_documented(answer)
    monkeypatch.setattr(answer, "json", lambda: {"status": "404"})
    with pytest.raises(AssertionError, match="refuses"):
        assert_documented(answer)
    # A status the operation does not document at all.
    answer.status_code = 418
    with pytest.raises(AssertionError, match="does not document"):
        assert_documented(answer)
