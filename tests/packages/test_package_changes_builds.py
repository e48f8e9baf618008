"""Package changes in real builds: POST /api/v1/build against the test mirror, built by a
real Celery worker with the stand-in ImageBuilder."""

import os
import time
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.core.cache import cache

from packages.models import PackageChange
from targets.models import Branch

pytestmark = pytest.mark.worker

AUC = {
    "version": "24.10.1",
    "target": "ath79/generic",
    "profile": "tplink_archer-c7-v5",
    "packages": ["auc"],
}


@pytest.fixture(autouse=True)
def session_queue(settings):
    """Send tasks to this session's queue, the one start_worker's workers listen on.

    tests/conftest.py names it in the environment, but when pytest-django loads the
    settings first they keep the default queue, and the tasks go where no worker is.
    """
    from asuproject.celery import app

    queue = os.environ["ASU_CELERY_QUEUE"]
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    before = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    yield
    app.conf.task_default_queue = before


@pytest.fixture
def seeded(transactional_db):
    """The branches and rules the migrations seed: a transactional test before this one
    may have flushed them. The cache goes too: it throttles reading the catalogue."""
    cache.clear()
    if not Branch.objects.exists():
        import_module("targets.migrations.0002_seed_branches").seed(apps, None)
    if not PackageChange.objects.exists():
        import_module("packages.migrations.0003_seed_package_changes").seed(apps, None)
    if not Group.objects.filter(name="Package change maintainers").exists():
        import_module("packages.migrations.0004_package_change_groups").create_groups(apps, None)


def build(client, body: dict, timeout: float = 120) -> dict:
    """Ask for a build and poll it as a client does until it is done or failed."""
    response = client.post("/api/v1/build", body, content_type="application/json")
    assert response.status_code in (200, 202), response.json()
    request_hash = response.json()["request_hash"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/api/v1/build/{request_hash}").json()
        if answer["status"] != 202:
            assert answer["status"] == 200, answer.get("detail")
            return answer
        time.sleep(0.5)
    raise AssertionError(f"build {request_hash} not finished after {timeout} s")


def test_a_2410_build_that_asks_for_auc_installs_owut(client, upstream, seeded, start_worker):
    start_worker(concurrency=1)
    answer = build(client, AUC)
    assert "owut" in answer["manifest"]
    assert "auc" not in answer["manifest"]
    assert [(r["kind"], r["source"], r["target"]) for r in answer["package_changes_applied"]] == [
        ("rename", "auc", "owut")
    ]


def test_an_edit_in_the_admin_changes_the_next_builds_manifest(
    client, upstream, seeded, start_worker
):
    start_worker(concurrency=1)
    first = build(client, AUC)
    assert "owut" in first["manifest"]

    # A maintainer switches the rule off through the admin's own change form.
    maintainer = User.objects.create_user("maintainer", is_staff=True)
    maintainer.groups.add(Group.objects.get(name="Package change maintainers"))
    client.force_login(maintainer)
    change = PackageChange.objects.get(source="auc", target="owut")
    form = {
        "kind": change.kind,
        "source": change.source,
        "target": change.target,
        "revision": str(change.revision),
        "order": str(change.order),
        "note": change.note,
        "apply_on_build": "on",
        "publish": "on",
        # "enabled" left out: the box is unticked
    }
    response = client.post(f"/admin/packages/packagechange/{change.pk}/change/", form)
    assert response.status_code == 302
    client.logout()

    second = build(client, AUC)
    assert second["request_hash"] != first["request_hash"]
    assert "auc" in second["manifest"]
    assert "owut" not in second["manifest"]
    assert second["package_changes_applied"] == []
