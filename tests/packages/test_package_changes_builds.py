"""Package changes in real builds: POST /api/v1/build against the test mirror, built by a
real Celery worker with the stand-in ImageBuilder."""

import time

import pytest
from django.contrib.auth.models import Group, User

from packages.models import PackageChange

pytestmark = pytest.mark.worker

AUC = {
    "version": "24.10.1",
    "target": "ath79/generic",
    "profile": "tplink_archer-c7-v5",
    "packages": ["auc"],
}


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


def test_a_2410_build_that_asks_for_auc_installs_owut(client, upstream, start_worker):
    start_worker(concurrency=1)
    answer = build(client, AUC)
    assert "owut" in answer["manifest"]
    assert "auc" not in answer["manifest"]
    assert [(r["kind"], r["source"], r["target"]) for r in answer["package_changes_applied"]] == [
        ("rename", "auc", "owut")
    ]


def test_an_edit_in_the_admin_changes_the_next_builds_manifest(client, upstream, start_worker):
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
