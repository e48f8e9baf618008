"""Losing the broker loses no build: a POST while it is down answers 503 and leaves
nothing pretending to be queued, and once it is back the reconciliation sends every
build requested before or during the outage. The broker is a Redis of the test's own,
on a free port, stopped and started again without its data."""

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
import requests
from django.conf import settings as django_settings

from asuproject.celery import app as celery_app
from builds import reconcile
from builds.models import Build
from tests.builds.catalogue import fresh_start, seed_branches

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)

REQUEST = {
    "client": "owut/2026.04.09",
    "version": "24.10.1",
    "target": "ath79/generic",
    "profile": "tplink,archer-c7-v5",
}


class PrivateRedis:
    """A redis-server on a free port, without persistence: a restart empties it."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


@pytest.fixture
def broker(settings) -> Iterator[PrivateRedis]:
    """The private Redis, as the broker of this process and of the workers started."""
    server = PrivateRedis()
    server.start()
    names = ("broker_url", "broker_read_url", "broker_write_url")
    before = {name: celery_app.conf[name] for name in names}
    settings.CELERY_BROKER_URL = server.url
    use_broker(dict.fromkeys(names, server.url))
    yield server
    use_broker(before)
    server.stop()


def use_broker(urls: dict) -> None:
    """Send this process's tasks with `urls`: Celery keeps its connections and producers
    in pools made for the first broker, and has no public way to drop them. The pools
    stay open (kombu keeps them per broker): the old broker's are used again after."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    celery_app.conf.update(urls)


def post(base: str, packages: list[str]) -> requests.Response:
    return requests.post(f"{base}/api/v1/build", json={**REQUEST, "packages": packages}, timeout=60)


def queue_length(base: str) -> int:
    return requests.get(f"{base}/api/v1/stats", timeout=30).json()["queue_length"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_builds_requested_before_and_during_a_broker_outage_complete_after_it(
    upstream, live_server, broker, start_worker, settings
):
    fresh_start()
    seed_branches()
    start_worker(concurrency=1)
    base = live_server.url

    # One build runs, one waits in the broker.
    running = post(base, ["test-slow-build"])
    waiting = post(base, ["test-slow-build", "htop"])
    assert (running.status_code, waiting.status_code) == (202, 202), waiting.text

    broker.stop()
    during = post(base, ["test-slow-build", "tcpdump"])
    assert during.status_code == 503, during.text
    assert int(during.headers["Retry-After"]) > 0
    assert "X-Imagebuilder-Status" not in during.headers
    assert during.json()["detail"].startswith("Temporarily unavailable: the build queue")
    unsent = Build.objects.get(status="queued", sent_at__isnull=True)
    # It waits for no worker: not counted as queued work.
    assert queue_length(base) == 1
    answer = requests.get(f"{base}/api/v1/build/{unsent.request_hash}", timeout=30)
    assert answer.status_code == 503 and "X-Imagebuilder-Status" not in answer.headers

    broker.start()  # empty: the waiting build's message is gone
    # What the beat does every minute, until everything ran (bounded).
    deadline = time.monotonic() + 150
    while Build.objects.exclude(status__in=["done", "failed"]).exists():
        assert time.monotonic() < deadline, list(Build.objects.values("status", "sent_at"))
        reconcile.reconcile(resend_after=timedelta(0))
        time.sleep(3)

    builds = Build.objects.all()
    assert len(builds) == 3
    assert {(b.status, b.detail) for b in builds} == {("done", "")}
    assert queue_length(base) == 0
    again = post(base, ["test-slow-build", "tcpdump"])
    assert again.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_post_while_the_broker_is_down_sends_when_asked_again(
    upstream, live_server, broker, settings
):
    fresh_start()
    seed_branches()
    base = live_server.url
    broker.stop()

    refused = post(base, ["luci"])

    assert refused.status_code == 503
    assert queue_length(base) == 0
    broker.start()
    accepted = post(base, ["luci"])
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["detail"] == "queued"
    assert queue_length(base) == 1
    assert redis.Redis(port=broker.port).llen(django_settings.CELERY_TASK_DEFAULT_QUEUE) == 1
