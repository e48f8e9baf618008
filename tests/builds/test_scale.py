"""Workers anywhere: two worker processes, each with a cache folder of its own and no
folder shared with the web process (this test process), build into an S3 bucket served by
moto on loopback; clients download through /store/, which sends them to the object.

The broker is the session's (Redis or RabbitMQ in CI), or a private Redis on the embedded
defaults: the SQLite broker does not hand out again the task of a stopped worker."""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import TaskResult

from asuproject.celery import app as celery_app
from asuproject.storage import store_storage
from builds import retention
from builds.models import Build, Step
from builds.queue import build_queue, routed_queue
from builds.store import store_files
from builds.tasks import build
from targets.models import Branch, Target, Version
from tests.builds.catalogue import fresh_start, make_catalogue
from tests.builds.test_broker_outage import broker  # noqa: F401 (a fixture)
from tests.builds.test_build_task import queue_build
from tests.builds.test_worker_faults import queue_sent, wait_until

PREFIX = "images"


class S3Server:
    """moto's S3 server as a process of its own on a free loopback port."""

    def __init__(self, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url, timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"moto server did not start:\n{log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def s3_store(settings, upstream, s3_server: S3Server, monkeypatch) -> dict[str, str]:
    """A fresh bucket as the store of this process; returns the environment a worker
    needs for it (the deploy guide's variables)."""
    bucket = f"asu-{uuid.uuid4().hex[:12]}"
    env = {
        "ASU_STORE_URL": f"s3://{bucket}/{PREFIX}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket_client().create_bucket(Bucket=bucket)
    settings.STORAGES = {**settings.STORAGES, "default": store_storage(env["ASU_STORE_URL"], "")}
    env["bucket"] = bucket
    return env


def bucket_client():
    return boto3.client("s3")  # configured by the AWS_* variables of s3_store


def bucket_names(bucket: str, prefix: str) -> set[str]:
    listing = bucket_client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for item in listing.get("Contents", [])}


@pytest.fixture
def network_broker(request, settings) -> None:
    """The session's broker, unless it is the SQLite one: then a private Redis."""
    if settings.CELERY_BROKER_URL.startswith("sqla+"):
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        request.getfixturevalue("broker")


def worker_env(tmp_path: Path, name: str, s3_store: dict[str, str], **more: str) -> dict:
    """The environment of worker `name`: folders of its own, the bucket as the store."""
    home = tmp_path / name
    return {
        **{key: value for key, value in s3_store.items() if key != "bucket"},
        "ASU_VAR_DIR": str(home / "var"),
        "ASU_CACHE_DIR": str(home / "cache"),
        # Set but never used: with ASU_STORE_URL nothing is written there.
        "ASU_STORE_DIR": str(home / "store"),
        **more,
    }


def download(client, build: Build) -> dict[str, bytes]:
    """Every image of `build` as a client gets it: /store/ answers 302 to the object."""
    files = {}
    for image in build.images:
        answer = client.get(f"/store/{build.bin_dir}/{image['name']}", HTTP_ORIGIN="https://x")
        assert answer.status_code == 302, answer.content
        assert answer["Access-Control-Allow-Origin"] == "*"
        got = requests.get(answer["Location"], timeout=30)
        assert got.status_code == 200
        assert got.headers["Content-Type"] == "application/octet-stream"
        assert got.headers["Content-Disposition"].startswith("attachment")
        assert hashlib.sha256(got.content).hexdigest() == image["sha256"]
        files[image["name"]] = got.content
        # auc resumes with a range, which the object answers too.
        part = requests.get(answer["Location"], headers={"Range": "bytes=1-4"}, timeout=30)
        assert (part.status_code, part.content) == (206, got.content[1:5])
        head = client.head(f"/store/{build.bin_dir}/{image['name']}")
        assert head.status_code == 302
        followed = requests.head(head["Location"], timeout=30)
        assert followed.status_code == 200
        assert followed.headers["Content-Length"] == str(len(got.content))
    return files


def log_of(tmp_path: Path, worker: int) -> str:
    return (tmp_path / f"worker-{worker}.log").read_text()


@pytest.mark.worker
@pytest.mark.usefixtures("network_broker")
def test_two_workers_build_into_the_bucket_while_clients_download(
    settings, tmp_path, s3_store, start_worker, client
):
    # A queue per target: worker A serves ath79/generic, worker B x86/64.
    settings.ASU_WORKER_QUEUES = ["ath79/generic", "x86/64"]
    env_a = worker_env(tmp_path, "a", s3_store, ASU_WORKER_QUEUES="ath79/generic")
    env_b = worker_env(tmp_path, "b", s3_store, ASU_WORKER_QUEUES="x86/64")
    start_worker(concurrency=1, **env_a)
    start_worker(concurrency=1, **env_b)

    first = queue_sent(packages=["htop"])
    wait_until(lambda: Build.objects.get(pk=first.pk).status != "queued", 30, "taken")
    wait_until(lambda: Build.objects.get(pk=first.pk).status != "started", 90, "built")
    first.refresh_from_db()
    assert first.status == "done", first.detail
    # Every file the answer names was in the bucket when it was reported done.
    stored = bucket_names(s3_store["bucket"], f"{PREFIX}/{first.bin_dir}/")
    assert {f"{PREFIX}/{first.bin_dir}/{image['name']}" for image in first.images} <= stored

    # A client downloads A's build while B builds another (make image sleeps 3 s).
    second = queue_sent(target="x86/64", profile="generic", packages=["test-slow-build"])
    wait_until(
        lambda: Build.objects.get(pk=second.pk).imagebuilder_status == Step.BUILDING_IMAGE,
        90,
        "building on B",
    )
    assert download(client, first)
    assert Build.objects.get(pk=second.pk).status == "started"
    wait_until(lambda: Build.objects.get(pk=second.pk).status != "started", 90, "built")
    second.refresh_from_db()
    assert second.status == "done", second.detail
    assert download(client, second)

    # The result backend's one row per build (the README's count of writes).
    for row in (first, second):
        assert TaskResult.objects.filter(task_id=row.task_id, status="SUCCESS").count() == 1
    # Each worker built its own target, with its own ImageBuilder cache ...
    assert f"Build {first.pk} done" in log_of(tmp_path, 0)
    assert f"Build {second.pk} done" in log_of(tmp_path, 1)
    assert (tmp_path / "a" / "cache" / "24.10.1" / "ath79" / "generic").is_dir()
    assert not (tmp_path / "a" / "cache" / "24.10.1" / "x86").exists()
    assert (tmp_path / "b" / "cache" / "24.10.1" / "x86" / "64").is_dir()
    assert not (tmp_path / "b" / "cache" / "24.10.1" / "ath79").exists()
    # ... and nothing went to a folder.
    assert not (tmp_path / "a" / "store").exists() and not (tmp_path / "b" / "store").exists()
    assert not Path(settings.ASU_STORE_DIR).exists()


@pytest.mark.worker
@pytest.mark.usefixtures("network_broker")
def test_a_worker_stopped_mid_build_is_recovered_by_the_other(
    settings, tmp_path, s3_store, start_worker, client
):
    workers = [start_worker(concurrency=1, **worker_env(tmp_path, name, s3_store)) for name in "ab"]
    row = queue_sent(packages=["test-slow-build"])
    wait_until(
        lambda: Build.objects.get(pk=row.pk).imagebuilder_status == Step.BUILDING_IMAGE,
        90,
        "building the image",
    )
    took = 0 if f"[{row.task_id}] received" in log_of(tmp_path, 0) else 1
    # A cold shutdown (SIGQUIT): the running build is cut short and its task handed back.
    os.kill(workers[took].pid, signal.SIGQUIT)
    workers[took].wait(timeout=30)

    wait_until(lambda: Build.objects.get(pk=row.pk).status in ("done", "failed"), 90, "finished")
    row.refresh_from_db()
    assert (row.status, row.detail) == ("done", ""), row.detail
    other = log_of(tmp_path, 1 - took)
    assert f"Build {row.pk} taken over by its redelivered task {row.task_id}" in other
    assert download(client, row)


def test_store_answers_stream_or_redirect_to_a_public_base_when_asked(
    settings, s3_store, client, tmp_path, db
):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "image.img.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 40)
    assert store_files(tmp_path / "bin", "abc123") == ["image.img.gz"]
    head = bucket_client().head_object(
        Bucket=s3_store["bucket"], Key=f"{PREFIX}/abc123/image.img.gz"
    )
    # Opaque bytes: nothing on the way may unpack it.
    assert head["ContentType"] == "application/octet-stream"
    assert "ContentEncoding" not in head

    settings.ASU_STORE_SERVE = "stream"
    whole = client.get("/store/abc123/image.img.gz")
    assert whole.status_code == 200
    assert b"".join(whole.streaming_content) == b"\x1f\x8b" + bytes(range(256)) * 40
    part = client.get("/store/abc123/image.img.gz", HTTP_RANGE="bytes=2-3")
    assert (part.status_code, b"".join(part.streaming_content)) == (206, b"\x00\x01")

    settings.ASU_STORE_PUBLIC_URL = "https://cdn.example.org/asu"
    moved = client.head("/store/abc123/image.img.gz")
    assert moved.status_code == 302
    assert moved["Location"] == "https://cdn.example.org/asu/abc123/image.img.gz"
    assert client.get("/store/abc123/missing.bin").status_code == 404


def test_store_answers_503_while_the_bucket_is_unreachable(settings, s3_store, client, db):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    unreachable = store_storage(s3_store["ASU_STORE_URL"], "")
    unreachable["OPTIONS"] |= {
        "endpoint_url": f"http://127.0.0.1:{closed}",
        "client_config": Config(retries={"max_attempts": 1}, connect_timeout=2),
    }
    settings.STORAGES = {**settings.STORAGES, "default": unreachable}

    answer = client.get("/store/abc123/image.img.gz")

    assert answer.status_code == 503
    assert answer["Retry-After"] == "30"
    assert "image store is unavailable" in answer.json()["detail"]


def test_retention_deletes_the_objects_of_expired_builds(settings, s3_store, db):
    gone = queue_build(bin_dir="old1")
    kept = queue_build(bin_dir="new1")
    for row in (gone, kept):
        default_storage.save(f"{row.bin_dir}/image.bin", ContentFile(b"image"))
    long_ago = timezone.now() - timedelta(seconds=settings.ASU_BUILD_TTL + 60)
    Build.objects.filter(pk=gone.pk).update(status="done", finished_at=long_ago)
    Build.objects.filter(pk=kept.pk).update(status="done", finished_at=timezone.now())

    expiry = retention.expire(timezone.now())

    assert expiry.bin_dirs == ["old1"]
    assert bucket_names(s3_store["bucket"], PREFIX) == {f"{PREFIX}/new1/image.bin"}


@pytest.mark.django_db
def test_builds_go_to_the_queue_of_their_target_or_architecture(settings):
    version = Version.objects.create(
        branch=Branch.objects.get_or_create(name="24.10", defaults={"path": "releases/{version}"})[
            0
        ],
        name="24.10.1",
    )
    Target.objects.create(version=version, name="ath79/generic", arch_packages="mips_24kc")
    Target.objects.create(version=version, name="x86/64", arch_packages="x86_64")
    base = settings.CELERY_TASK_DEFAULT_QUEUE

    assert build_queue("24.10.1", "ath79/generic") == base  # no routing: one queue
    settings.ASU_WORKER_QUEUES = ["x86/64", "mips_24kc"]
    assert build_queue("24.10.1", "x86/64") == routed_queue("x86/64") == f"{base}.x86-64"
    assert build_queue("24.10.1", "ath79/generic") == f"{base}.mips_24kc"
    assert build_queue("24.10.1", "mediatek/filogic") == base  # not listed


def writes(queries: CaptureQueriesContext) -> list[str]:
    """The INSERT, UPDATE and DELETE statements, as "UPDATE builds_build"."""
    found = []
    for query in queries.captured_queries:
        words = query["sql"].replace('"', "").split()
        if words[0] in ("INSERT", "UPDATE", "DELETE"):
            found.append(f"{words[0]} {words[2] if words[0] != 'UPDATE' else words[1]}")
    return found


def test_a_build_costs_the_writes_and_messages_the_readme_counts(upstream, db, client, monkeypatch):
    """The numbers of the README's "Scaling" section: database writes and broker
    messages of a new build, in the web process and in the worker."""
    fresh_start()
    make_catalogue()
    messages = []
    monkeypatch.setattr(celery_app, "send_task", lambda *a, **kw: messages.append(kw["queue"]))
    with CaptureQueriesContext(connection) as web:
        answer = client.post(
            "/api/v1/build",
            {"version": "24.10.1", "target": "ath79/generic", "profile": "tplink_archer-c7-v5"},
            content_type="application/json",
        )
    assert answer.status_code == 202, answer.content
    # The row, and its "sent" mark; one task message.
    assert writes(web) == ["INSERT builds_build", "UPDATE builds_build"]
    assert messages == [celery_app.conf.task_default_queue]

    row = Build.objects.get(request_hash=answer.json()["request_hash"])
    with CaptureQueriesContext(connection) as cold:
        build.apply(args=[row.pk], task_id=row.task_id)
    warm_row = queue_build(packages=["htop"])
    with CaptureQueriesContext(connection) as warm:
        build.apply(args=[warm_row.pk])
    for done in (row, warm_row):
        done.refresh_from_db()
        assert done.status == "done", done.detail
    # The claim, one per step clients see (download and unpack only when cold), the result
    # and, in its transaction, the statistics: one statement per table. Cold, the download
    # is counted too.
    counts = ["INSERT tally_dailycount", "INSERT tally_total"]
    assert writes(cold) == [
        *["UPDATE builds_build"] * 2,
        "INSERT tally_total",
        *["UPDATE builds_build"] * 7,
        *counts,
    ]
    assert writes(warm) == ["UPDATE builds_build"] * 7 + counts
