"""A whole build in the sandbox: a package's install step cannot reach the worker host's
services on 127.0.0.1, while the build still downloads its feeds through its own network."""

import gzip
import socket
from urllib.parse import urlsplit

import pytest

from builds import make
from tests.builds.test_build_task import queue_build, run
from tests.builds.test_make import answers_on_loopback
from tests.fixtures.serve import serve_directory

pytestmark = pytest.mark.skipif(
    not (make.sandbox() and make.sandbox().pasta),
    reason="bubblewrap or pasta is not installed or cannot run here (no user namespaces?)",
)


def _probed(stdout: str) -> dict[str, str]:
    """HOST:PORT -> "connected" or "failed", from test-network-probe's lines."""
    lines = [line.split() for line in stdout.splitlines() if line.startswith("network-probe: ")]
    return {words[1]: words[2] for words in lines}


def test_a_package_install_step_cannot_reach_the_worker_hosts_services(upstream, db):
    with socket.create_server(("127.0.0.1", 0)) as server:  # connections wait in its backlog
        port = server.getsockname()[1]
        # Redis, PostgreSQL and the test's port all answer on the host itself.
        assert all(answers_on_loopback(p) for p in (6379, 5432, port))
        row = run(
            queue_build(
                packages=["test-network-probe"], defaults=f"# network-probe: 127.0.0.1:{port}\n"
            )
        )
    assert row.status == "done", row.detail
    mirror = urlsplit(upstream).netloc
    assert _probed(row.stdout) == {
        "127.0.0.1:6379": "failed",
        "127.0.0.1:5432": "failed",
        f"127.0.0.1:{port}": "failed",
        mirror: "connected",  # each stock feed lives on the mirror
    }
    assert "test-network-probe" in row.manifest


def test_a_build_downloads_a_feed_through_its_own_network(upstream, db, tmp_path):
    feed_dir = tmp_path / "feed"
    feed_dir.mkdir()
    stanza = (
        "Package: test-extra-feed-only\nVersion: 2.0-r1\nDepends: libc\nArchitecture: mips_24kc\n"
        "Installed-Size: 4096\nSize: 1024\nFilename: test-extra-feed-only_2.0-r1.ipk\n"
        "Description: only in the test's extra feed\n"
    )
    (feed_dir / "Packages.gz").write_bytes(gzip.compress(stanza.encode()))
    feed, stop = serve_directory(feed_dir)  # its own port: not the mirror's
    try:
        row = run(queue_build(packages=["test-extra-feed-only"], repositories={"extra": feed}))
    finally:
        stop()
    assert row.status == "done", row.detail
    assert row.manifest["test-extra-feed-only"] == "2.0-r1"
