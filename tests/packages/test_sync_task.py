"""The periodic sync task that celery beat runs."""

import pytest
from django.conf import settings

from asuproject.celery import app
from packages.tasks import sync_upstream
from targets.models import Target


def test_the_beat_schedule_names_the_task():
    entry = settings.CELERY_BEAT_SCHEDULE["sync-upstream"]
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
    assert app.tasks[entry["task"]].name == sync_upstream.name
    assert entry["schedule"].total_seconds() == settings.ASU_SYNC_INTERVAL * 60


def test_the_task_syncs_and_returns_the_report(upstream, db):
    result = sync_upstream.apply(kwargs={"version": "24.10.1"}).get()
    assert result["errors"] == []
    assert result["versions"] == 1
    assert result["targets"] == Target.objects.count() == 3


@pytest.mark.worker
def test_a_worker_runs_the_task(upstream, start_worker):
    start_worker(concurrency=1)
    result = sync_upstream.delay(target="x86/64").get(timeout=120)
    assert result["errors"] == []
    assert result["targets_updated"] == 4
    assert Target.objects.filter(name="x86/64").count() == 4
