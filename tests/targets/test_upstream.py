"""Reading upstream files (targets/upstream.py) and package index folders
(packages/indexes.py read_index) over real HTTP and file:// URLs."""

import pytest

from packages.indexes import read_index
from packages.models import PackageIndex
from targets.models import Version
from targets.upstream import NotFound, UpstreamError, fetch, upstream_url
from tests.fixtures.serve import serve_directory


@pytest.fixture
def served(tmp_path):
    url, stop = serve_directory(tmp_path)
    yield tmp_path, url
    stop()


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


def packages_stanza(name: str, version: str) -> str:
    return (
        f"Package: {name}\nVersion: {version}\nFilename: {name}.ipk\nSize: 1\n"
        f"SHA256sum: {'0' * 64}\nDescription: x\n\n"
    )


def test_it_prefers_index_json_v2_to_packages(served):
    path, url = served
    (path / "index.json").write_text('{"version": 2, "packages": {"from-v2": "1"}}')
    (path / "Packages").write_text(packages_stanza("from-packages", "1"))
    read = read_index(url)
    assert read.packages == {"from-v2": "1"}
    assert read.url == f"{url}/index.json"


def test_it_prefers_packages_to_index_json_v1(served):
    path, url = served
    (path / "index.json").write_text('{"packages": {"from-v120240329": "1"}}')
    (path / "Packages").write_text(packages_stanza("from-packages", "1"))
    assert read_index(url).packages == {"from-packages": "1"}


def test_it_falls_back_to_index_json_v1(served):
    path, url = served
    (path / "index.json").write_text('{"packages": {"libubox20240329": "1"}}')
    read = read_index(url)
    assert read.packages == {"libubox20240329": "1"}
    assert read.url == f"{url}/index.json"


def test_it_reports_an_unchanged_index_without_reading_it_again(served, db):
    path, url = served
    (path / "index.json").write_text('{"version": 2, "packages": {"a": "1"}}')
    read = read_index(url)
    known = PackageIndex(
        version=Version(name="x"),
        url=read.url,
        digest=read.digest,
        etag=read.etag,
        last_modified=read.last_modified,
    )
    assert read_index(url, known).unchanged
    # Without HTTP validators the digest still tells.
    known.last_modified = ""
    assert read_index(url, known).unchanged


def test_a_folder_without_any_index_is_an_error(served):
    _, url = served
    with pytest.raises(UpstreamError) as error:
        read_index(f"{url}/empty")
    assert str(error.value) == (f"{url}/empty/: no package index (neither index.json nor Packages)")
