"""Builds survive the faults of their workers: a pool process killed mid-build, a task
known dead, a worker gone for good. Failures of the server are not kept as failures."""

import os
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from celery import states
from django.conf import settings as django_settings
from django.utils import timezone
from django_celery_results.models import TaskResult

from asuproject.celery import app as celery_app
from builds import reconcile
from builds.director import BuildDirector
from builds.models import Build, Step
from builds.queue import get_or_queue, send
from builds.tasks import build, reconcile_builds
from tests.builds.test_broker_outage import broker  # noqa: F401 (a fixture)
from tests.builds.test_build_task import queue_build


def queue_sent(**request) -> Build:
    """A build queued and sent as the API does it: under the task id stored on the row."""
    row = queue_build(**request)
    row.task_id = str(uuid.uuid4())
    row.save(update_fields=["task_id"])
    send(row)
    return row


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not {what} after {timeout} s")


def pool_processes(worker_pid: int) -> list[int]:
    """The prefork pool processes of a Celery worker: its child processes."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    return [int(pid) for pid in children]


@pytest.mark.worker
@pytest.mark.usefixtures("broker")
def test_a_build_whose_pool_process_is_killed_is_taken_over_by_its_redelivered_task(
    upstream, settings, start_worker
):
    # Redis, as in production: the embedded SQLite broker does not mark a message it
    # hands out again as redelivered (there the reconciliation fails the build instead).
    worker = start_worker(concurrency=1)
    row = queue_sent(packages=["test-slow-build"])

    # `make image` sleeps 3 s in the stand-in: kill the pool process while it runs.
    wait_until(
        lambda: Build.objects.get(pk=row.pk).imagebuilder_status == Step.BUILDING_IMAGE,
        timeout=90,
        what="building the image",
    )
    killed_at = time.monotonic()
    for pid in pool_processes(worker.pid):
        os.kill(pid, signal.SIGKILL)

    wait_until(
        lambda: Build.objects.get(pk=row.pk).status in ("done", "failed"),
        timeout=120,
        what="finished after the kill",
    )
    row.refresh_from_db()
    assert (row.status, row.detail) == ("done", ""), row.detail
    assert time.monotonic() - killed_at < 120
    log = (Path(settings.ASU_CACHE_DIR).parent / "worker-0.log").read_text()
    assert f"Build {row.pk} taken over by its redelivered task {row.task_id}" in log


@pytest.mark.django_db
def test_a_fresh_duplicate_message_does_not_take_a_started_build_over():
    """Only a redelivery takes over: a second message of a running build is skipped."""
    row = queue_build()
    Build.objects.filter(pk=row.pk).update(status="started", task_id="task-1")

    assert BuildDirector.claim(row.pk, "task-1") is None
    assert BuildDirector.claim(row.pk, "task-2", redelivered=True) is None
    assert BuildDirector.claim(row.pk, "task-1", redelivered=True) is not None


@pytest.mark.django_db
def test_reconciliation_fails_builds_whose_worker_is_gone_and_asking_again_builds_again(
    settings,
):
    now = timezone.now()
    too_long = timedelta(seconds=django_settings.CELERY_TASK_TIME_LIMIT + 120)
    lost = queue_build()
    dead = queue_build()
    running = queue_build()
    Build.objects.filter(pk=lost.pk).update(
        status="started", task_id="lost", started_at=now - too_long
    )
    Build.objects.filter(pk__in=[dead.pk, running.pk]).update(
        status="started", started_at=now - timedelta(seconds=30)
    )
    Build.objects.filter(pk=dead.pk).update(task_id="dead")
    Build.objects.filter(pk=running.pk).update(task_id="running")
    # The hard time limit killed this one: Celery recorded its failure.
    TaskResult.objects.create(task_id="dead", status=states.FAILURE, date_done=now)

    counts = reconcile_builds.apply().get()

    assert counts["failed"] == 2
    for row in (lost, dead):
        row.refresh_from_db()
        assert (row.status, row.imagebuilder_status, row.server_fault) == ("failed", "failed", True)
        assert row.detail == reconcile.LOST_DETAIL
    running.refresh_from_db()
    assert running.status == "started"

    # Asking again builds again at once, though the failure TTL has not passed.
    again, queued = get_or_queue(lost.request_hash, {})
    assert queued and again.status == "queued" and not again.server_fault


@pytest.mark.django_db
def test_a_failure_of_the_request_is_still_kept_for_the_failure_ttl(settings):
    settings.ASU_FAILURE_TTL = 3600
    row = queue_build()
    now = timezone.now()
    Build.objects.filter(pk=row.pk).update(status="failed", finished_at=now, detail="Error: x")

    again, queued = get_or_queue(row.request_hash, {})

    assert not queued and again.status == "failed"


@pytest.mark.django_db
def test_a_build_that_fails_on_a_server_error_is_built_again_when_asked(upstream, monkeypatch):
    row = queue_build()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("builds.director.BuildDirector.build", broken)
    build.apply(args=[row.pk])
    row.refresh_from_db()
    assert (row.status, row.server_fault) == ("failed", True)
    _, queued = get_or_queue(row.request_hash, {})
    assert queued


def test_the_reconciliation_runs_every_minute():
    entry = django_settings.CELERY_BEAT_SCHEDULE["reconcile-builds"]
    assert entry["schedule"] == timedelta(minutes=1)
    assert entry["task"] in celery_app.tasks
