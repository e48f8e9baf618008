"""Reading upstream files (targets/upstream.py) over real HTTP and file:// URLs."""

import pytest

from targets.upstream import NotFound, UpstreamError, fetch, upstream_url


def test_it_reads_a_file_over_http(mirror_url, mirror_dir):
    fetched = fetch(f"{mirror_url}/.versions.json")
    assert fetched.content == (mirror_dir / ".versions.json").read_bytes()
    assert len(fetched.digest) == 64
    assert fetched.last_modified
    assert fetched.json()["versions_list"] == ["23.05.5", "24.10.1", "25.12.0"]


def test_it_answers_not_modified_to_its_own_validators(mirror_url):
    first = fetch(f"{mirror_url}/.versions.json")
    again = fetch(first.url, etag=first.etag, last_modified=first.last_modified)
    assert again.not_modified
    assert again.content == b""


def test_it_reads_a_file_url(mirror_dir):
    fetched = fetch(f"{mirror_dir.as_uri()}/snapshots/.targets.json")
    assert fetched.json()["x86/64"] == "x86_64"


def test_it_names_the_url_of_a_missing_file(mirror_url, mirror_dir):
    with pytest.raises(NotFound) as error:
        fetch(f"{mirror_url}/nothing.json")
    assert str(error.value) == f"{mirror_url}/nothing.json: not found (HTTP 404)"
    with pytest.raises(NotFound):
        fetch(f"{mirror_dir.as_uri()}/nothing.json")


def test_it_names_the_url_and_the_reason_of_a_refused_connection(refused_url):
    with pytest.raises(UpstreamError) as error:
        fetch(f"{refused_url}/.versions.json")
    assert error.value.url == f"{refused_url}/.versions.json"
    assert error.value.reason == "connection failed: [Errno 111] Connection refused"


def test_it_names_the_url_of_malformed_json(served):
    path, url = served
    (path / "bad.json").write_text('{"a": ')
    with pytest.raises(UpstreamError) as error:
        fetch(f"{url}/bad.json").json()
    assert error.value.url == f"{url}/bad.json"
    assert error.value.reason.startswith("malformed JSON: ")


def test_upstream_url_joins_the_configured_server(settings):
    settings.ASU_UPSTREAM_URL = "https://downloads.example/"
    assert upstream_url("/snapshots/.targets.json") == (
        "https://downloads.example/snapshots/.targets.json"
    )
