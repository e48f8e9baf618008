"""Fixtures of the catalogue tests: a synced catalogue, a private mirror to damage, a
served folder. tests/packages uses them too."""

import json
import os
import socket
from pathlib import Path

import pytest

from packages.models import Package, PackageIndex
from packages.sync import sync_upstream
from targets.models import Profile, ProfileName, Target
from targets.sync import SyncReport
from tests.fixtures.serve import serve_directory


@pytest.fixture
def synced(upstream: str, db) -> SyncReport:
    """The whole test mirror read into the catalogue."""
    report = sync_upstream()
    assert report.errors == []
    return report


@pytest.fixture
def own_mirror(settings, mirror_copy, db) -> tuple[Path, str]:
    """A private served copy of the mirror, already synced, for tests that change upstream."""
    path, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    report = sync_upstream()
    assert report.errors == []
    return path, url


@pytest.fixture
def served(tmp_path: Path):
    """An empty folder served over HTTP: (its path, its URL)."""
    url, stop = serve_directory(tmp_path)
    yield tmp_path, url
    stop()


@pytest.fixture
def refused_url() -> str:
    """A URL on a local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def rewrite(path: Path, content: str | bytes) -> None:
    """Change an upstream file, with a modification time the server will not mistake for
    the old one (HTTP dates have whole seconds)."""
    stat = path.stat()
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    os.utime(path, (stat.st_atime + 120, stat.st_mtime + 120))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    rewrite(path, json.dumps(data))


def catalogue() -> dict:
    """Everything the sync writes, to compare before and after."""
    return {
        "targets": sorted(
            Target.objects.values_list(
                "version__name", "name", "arch_packages", "version_code", "profiles_digest"
            )
        ),
        "profiles": sorted(
            Profile.objects.values_list(
                "target__version__name", "target__name", "name", "image_prefix"
            )
        ),
        "names": ProfileName.objects.count(),
        "indexes": sorted(PackageIndex.objects.values_list("url", "digest")),
        "packages": sorted(Package.objects.values_list("index__url", "name", "version")),
    }
