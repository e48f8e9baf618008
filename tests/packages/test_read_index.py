"""Reading package index folders (packages/indexes.py read_index) over real HTTP."""

import pytest

from packages.indexes import read_index
from packages.models import PackageIndex
from targets.models import Version
from targets.upstream import UpstreamError


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
