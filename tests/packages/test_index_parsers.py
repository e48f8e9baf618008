"""Parsers of the downloads server's package indexes (packages/indexes.py)."""

import pytest

from packages.indexes import parse_feeds_conf, parse_index_json, parse_packages
from targets.upstream import UpstreamError

URL = "https://downloads.example/releases/24.10.1/packages/x86_64/base/Packages"


def stanza(package: str, version: str, abi: str = "") -> str:
    lines = [f"Package: {package}{abi}"]
    if abi:
        lines.append(f"ABIVersion: {abi}")
    lines += [
        f"Version: {version}",
        "Depends: libc",
        "Architecture: x86_64",
        f"Filename: {package}{abi}_{version}_x86_64.ipk",
        "Size: 4821",
        f"SHA256sum: {'0' * 64}",
        "Description:  a package",
        " over two lines",
    ]
    return "\n".join(lines) + "\n\n"


def test_it_strips_the_abi_version_from_package_names():
    text = stanza("libjson-script", "2024.03.29~eb9bcb64-r1", abi="20240329") + stanza(
        "dropbear", "2024.86-r1"
    )
    assert parse_packages(text, URL) == {
        "libjson-script": "2024.03.29~eb9bcb64-r1",
        "dropbear": "2024.86-r1",
    }


def test_it_keeps_a_name_that_does_not_end_with_its_abi_version():
    text = stanza("libfoo", "1.0-r1").replace("Version:", "ABIVersion: 7\nVersion:", 1)
    assert parse_packages(text, URL) == {"libfoo": "1.0-r1"}


def test_it_reads_an_empty_packages_file_as_no_packages():
    assert parse_packages("", URL) == {}


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.77, 0.95])
def test_it_rejects_a_packages_file_cut_in_the_middle(cut):
    text = stanza("libubox", "2024.03.29-r1", abi="20240329") + stanza("dropbear", "2024.86-r1")
    with pytest.raises(UpstreamError) as error:
        parse_packages(text[: int(len(text) * cut)], URL)
    assert error.value.url == URL
    assert "truncated" in error.value.reason


def test_it_reads_index_json_v2_and_v1():
    assert parse_index_json(
        {"version": 2, "architecture": "x86_64", "packages": {"a": "1"}}, URL
    ) == (
        2,
        {"a": "1"},
    )
    assert parse_index_json({"architecture": "x86_64", "packages": {"liba1": "1"}}, URL) == (
        1,
        {"liba1": "1"},
    )


@pytest.mark.parametrize("document", [[], {"architecture": "x86_64"}, {"packages": {"a": 1}}])
def test_it_rejects_an_index_json_without_a_package_map(document):
    with pytest.raises(UpstreamError, match="not a package index"):
        parse_index_json(document, URL)


def test_it_reads_feed_names_from_field_two_of_feeds_conf():
    text = (
        "src-git base https://git.openwrt.org/openwrt/openwrt.git;v24.10.1\n"
        "src-git packages https://git.openwrt.org/feed/packages.git^0123abcd\n"
        "# src-git old https://example/old.git\n"
        "\n"
        "src-link luci /feeds/luci\n"
    )
    assert parse_feeds_conf(text) == ["base", "packages", "luci"]
