"""Configuring a working copy: extra feeds, their keys, feed files written anew."""

import os
from pathlib import Path

import pytest

from builds import configure
from builds.errors import BuildError


def test_it_adds_extra_opkg_feeds_and_their_keys(tmp_path):
    (tmp_path / "repositories.conf").write_text(
        "src/gz openwrt_core https://downloads.openwrt.org/releases/24.10.0/targets/x86/64/packages\n"
        "src imagebuilder file:packages\n"
        "option check_signature\n"
    )
    key = "RWR//HUXxMwMVnx7fESOKO7x8XoW4/dRidJPjt91hAAU2L59mYvHy0Fa"
    configure.add_repositories(
        tmp_path, {"extra": "https://feed.example.org/x86_64"}, "append", [key]
    )
    lines = (tmp_path / "repositories.conf").read_text().splitlines()
    assert lines[0].startswith("src/gz openwrt_core ")
    assert lines[1] == "src/gz extra https://feed.example.org/x86_64"
    assert "src imagebuilder file:packages" in lines
    assert (tmp_path / "keys" / "7ffc7517c4cc0c56").read_text().endswith(key + "\n")


def test_it_replaces_opkg_feeds_but_keeps_the_local_packages(tmp_path):
    (tmp_path / "repositories.conf").write_text(
        "src/gz openwrt_core https://downloads.openwrt.org/x\nsrc imagebuilder file:packages\n"
    )
    configure.add_repositories(tmp_path, {"mine": "https://feed.example.org/y"}, "replace", [])
    assert (tmp_path / "repositories.conf").read_text() == (
        "src/gz mine https://feed.example.org/y\nsrc imagebuilder file:packages\n"
    )


def test_it_adds_extra_apk_feeds_and_pem_keys(tmp_path):
    (tmp_path / "repositories").write_text(
        "https://downloads.openwrt.org/snapshots/targets/x86/64/packages/packages.adb\n"
    )
    pem = (Path(__file__).parent.parent / "fixtures" / "keys" / "apk-test-key.pem").read_text()
    configure.add_repositories(tmp_path, {"extra": "https://feed.example.org/apk"}, "append", [pem])
    assert (tmp_path / "repositories").read_text().splitlines()[-1] == (
        "https://feed.example.org/apk/packages.adb"
    )
    assert [p.suffix for p in (tmp_path / "keys").iterdir()] == [".pem"]


def test_it_writes_feed_files_as_new_files(tmp_path):
    """A working copy may share the file's inode with the cache: never edit it in place."""
    conf = tmp_path / "repositories.conf"
    conf.write_text("src imagebuilder file:packages\n")
    shared = tmp_path / "shared"
    os.link(conf, shared)
    configure.add_repositories(tmp_path, {"extra": "https://feed.example.org/x"}, "append", [])
    assert shared.read_text() == "src imagebuilder file:packages\n"


def test_it_refuses_a_repository_key_it_cannot_read(tmp_path):
    (tmp_path / "repositories.conf").write_text("")
    with pytest.raises(BuildError, match="Repository key 1"):
        configure.add_repositories(
            tmp_path, {"x": "https://feed.example.org"}, "append", ["nonsense"]
        )
