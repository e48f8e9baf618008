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


# Branding and what maintainers see


def test_the_admin_carries_the_servers_name_and_none_of_celerys_tables(admin_client):
    html = admin_client.get("/admin/").content.decode()

    assert "OpenWrt Attended Sysupgrade" in html
    assert "Django administration" not in html
    assert "Periodic tasks" not in html and "Task results" not in html
    assert admin_client.get("/admin/django_celery_beat/periodictask/").status_code == 404
    assert admin_client.get("/admin/django_celery_results/taskresult/").status_code == 404


# Finding builds


def test_builds_are_found_by_hash_prefix_profile_or_package(admin_client):
    by_hash = make_build(profile="first_router")
    by_package = make_build(profile="second_router", manifest={"tcpdump": "4.99"})
    asked = make_build(
        profile="third_router", status=Build.Status.FAILED, packages=["surely-missing"]
    )

    def found(term: str) -> set[str]:
        response = admin_client.get("/admin/builds/build/", {"q": term})
        return {build.profile for build in response.context["cl"].result_list}

    assert found(by_hash.request_hash[:8]) == {by_hash.profile}
    assert found("second_rout") == {by_package.profile}
    assert found("tcpdump") == {by_package.profile}
    assert found("surely-missing") == {asked.profile}


def test_builds_filter_by_status_version_target_and_date(admin_client):
    make_build(profile="today")
    make_build(profile="last_year", enqueued_at=datetime(2025, 1, 1, tzinfo=UTC))

    response = admin_client.get("/admin/builds/build/", {"enqueued_at__year": "2025"})

    assert [b.profile for b in response.context["cl"].result_list] == ["last_year"]
    filters = {spec.title for spec in response.context["cl"].filter_specs}
    assert {"status", "version", "target", "enqueued at"} <= filters


# Actions


def run_action(client, action: str, *builds: Build):
    return client.post(
        "/admin/builds/build/",
        {"action": action, "_selected_action": [b.pk for b in builds]},
        follow=True,
    )


def test_build_again_queues_a_failed_build_afresh_at_once(
    admin_client, settings, django_capture_on_commit_callbacks
):
    settings.ASU_FAILURE_TTL = 3600
    failed = make_build(
        status=Build.Status.FAILED,
        finished_at=datetime.now(UTC),  # well within its failure TTL
        detail="Error: Selected packages exceed device storage",
        stderr="too big",
    )
    done = make_build(manifest={"luci": "1"}, images=[{"name": "x.bin"}])
    running = make_build(status=Build.Status.STARTED)

    with django_capture_on_commit_callbacks(execute=True) as sent:
        response = run_action(admin_client, "rebuild", failed, done, running)

    assert len(sent) == 2  # one task each, through the queue's own send
    for build in (failed, done):
        build.refresh_from_db()
        assert build.status == Build.Status.QUEUED
        assert build.sent_at is not None
        assert (build.detail, build.stderr, build.manifest, build.images) == ("", "", {}, [])
    running.refresh_from_db()
    assert running.status == Build.Status.STARTED
    html = response.content.decode()
    assert "2 build(s) queued again." in html
    assert "1 build(s) were queued or running already." in html


def test_expire_now_deletes_builds_and_only_folders_no_other_build_uses(
    admin_client, settings, tmp_path
):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(tmp_path)}},
    }
    for folder in ("shared", "own"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "image.bin").write_bytes(b"image")
    first = make_build(bin_dir="shared")
    second = make_build(bin_dir="shared")
    own = make_build(bin_dir="own")
    queued = make_build(status=Build.Status.QUEUED)

    response = run_action(admin_client, "expire_now", first, own, queued)

    assert set(Build.objects.values_list("pk", flat=True)) == {second.pk, queued.pk}
    assert (tmp_path / "shared" / "image.bin").exists()
    assert not (tmp_path / "own").exists()
    html = response.content.decode()
    assert "2 build(s) deleted, 1 store folder(s) with them." in html
    assert "1 build(s) queued or running were left alone." in html


def test_the_actions_need_the_change_and_delete_permissions(client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_build"))
    client.force_login(viewer)
    failed = make_build(status=Build.Status.FAILED, finished_at=datetime.now(UTC))

    page = client.get("/admin/builds/build/")
    assert page.status_code == 200
    assert "rebuild" not in page.content.decode()
    run_action(client, "rebuild", failed)
    run_action(client, "expire_now", failed)

    failed.refresh_from_db()
    assert failed.status == Build.Status.FAILED

    viewer.user_permissions.add(Permission.objects.get(codename="change_build"))
    viewer = django_user_model.objects.get(pk=viewer.pk)  # permissions are cached per object
    client.force_login(viewer)
    choices = client.get("/admin/builds/build/").content.decode()
    assert 'value="rebuild"' in choices
    assert 'value="expire_now"' not in choices
