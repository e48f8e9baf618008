"""Builds in the admin: read-only, with the failures a filter away."""

from datetime import UTC, datetime

import pytest

from builds.models import Build
from tests.builds.catalogue import make_build

pytestmark = pytest.mark.django_db


def test_it_lists_failed_builds_with_their_error(admin_client):
    make_build(
        status=Build.Status.FAILED,
        finished_at=datetime(2026, 3, 1, tzinfo=UTC),
        detail="Error: Selected packages exceed device storage",
        profile="tiny_router",
    )
    make_build(profile="big_router")

    response = admin_client.get("/admin/builds/build/?status__exact=failed")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Error: Selected packages exceed device storage" in html
    assert "tiny_router" in html
    assert "big_router" not in html


def test_a_build_cannot_be_edited_or_added(admin_client):
    build = make_build()

    assert admin_client.get("/admin/builds/build/add/").status_code == 403
    page = admin_client.get(f"/admin/builds/build/{build.pk}/change/")
    assert page.status_code == 200
    assert 'type="submit" value="Save"' not in page.content.decode()


def test_people_without_staff_status_are_sent_to_log_in(client):
    response = client.get("/admin/builds/build/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
