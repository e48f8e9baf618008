"""A whole build in the sandbox: a package's install step cannot reach the worker host's
services on 127.0.0.1 nor private addresses, and writes its files as an unprivileged host
user, while the build still downloads its feeds through its own network."""

import gzip
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from builds import make
from builds.models import Build
from tests.builds.test_build_task import queue_build, run
from tests.builds.test_make import answers_on_loopback, sandbox_host_uid
from tests.builds.test_worker_faults import queue_sent, wait_until
from tests.fixtures.serve import serve_directory

pytestmark = pytest.mark.skipif(
    not (make.sandbox() and make.sandbox().pasta),
    reason="bubblewrap or pasta is not installed or cannot run here (no user namespaces?)",
)


def _probed(stdout: str) -> dict[str, str]:
    """HOST:PORT -> "connected" or "failed (why)", from test-network-probe's lines."""
    lines = [line.split(maxsplit=2) for line in stdout.splitlines()]
    return {words[1]: words[2] for words in lines if words[:1] == ["network-probe:"]}


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
    refused = "failed ([Errno 111] Connection refused)"
    assert _probed(row.stdout) == {
        "127.0.0.1:6379": refused,
        "127.0.0.1:5432": refused,
        f"127.0.0.1:{port}": refused,
        mirror: "connected",  # each stock feed lives on the mirror
    }
    assert "test-network-probe" in row.manifest


@pytest.mark.worker
def test_in_a_real_worker_a_package_reaches_no_private_address_and_is_no_host_root(
    upstream, settings, start_worker
):
    start_worker(concurrency=1)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        targets = ["10.255.255.1:80", "169.254.169.254:80", f"127.0.0.1:{port}"]
        probes = "".join(f"# network-probe: {target}\n" for target in targets)
        # test-slow-build: `make image` waits 3 s after writing the manifest, time to look.
        row = queue_sent(packages=["test-network-probe", "test-slow-build"], defaults=probes)
        written = Path(settings.ASU_CACHE_DIR) / "work"
        wait_until(lambda: list(written.glob("*/asu-bin/*.manifest")), 90, "writing the image")
        (manifest,) = written.glob("*/asu-bin/*.manifest")
        owner = manifest.stat().st_uid
        wait_until(lambda: Build.objects.get(pk=row.pk).status in ("done", "failed"), 90, "done")
    row.refresh_from_db()
    assert row.status == "done", row.detail
    # The worker runs as root here: make's files are ASU_SANDBOX_USER's (nobody's).
    assert owner == sandbox_host_uid() != 0
    refused = "failed ([Errno 111] Connection refused)"
    prohibited = "failed ([Errno 13] Permission denied)"  # at once, by the sandbox
    assert _probed(row.stdout) == {
        "10.255.255.1:80": prohibited,
        "169.254.169.254:80": prohibited,
        "127.0.0.1:6379": refused,  # Redis and PostgreSQL: the probe always tries them
        "127.0.0.1:5432": refused,
        f"127.0.0.1:{port}": refused,
        urlsplit(upstream).netloc: "connected",  # the feeds download
    }


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
