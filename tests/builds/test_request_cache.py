"""The request cache: one Build per effective request, shared files for identical builds,
finished builds answered at once, failed ones tried again after their TTL, and one build
and one task for many concurrent identical requests."""

import os
import select
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from asuproject.celery import app
from builds.models import Build
from packages.models import Package, PackageChange
from targets import generation
from targets.models import ProfileName
from tests.builds.catalogue import add_packages, fail, finish, fresh_start, make_catalogue
from tests.conftest import ROOT, database_url_for_workers

ARCHER = {"version": "24.10.1", "target": "ath79/generic", "profile": "tplink_archer-c7-v5"}


@pytest.fixture
def catalogue(db, settings, tmp_path) -> dict:
    fresh_start(settings, tmp_path)
    return make_catalogue()


def post(client, body):
    return client.post("/api/v1/build", body, content_type="application/json")


def build_of(response) -> Build:
    return Build.objects.get(request_hash=response.json()["request_hash"])


# One build per effective request -----------------------------------------------------------


def test_the_same_request_twice_is_one_build(client, catalogue):
    first = post(client, {**ARCHER, "packages": ["luci"]})
    second = post(client, {**ARCHER, "packages": ["luci"]})

    assert first.json()["request_hash"] == second.json()["request_hash"]
    assert Build.objects.count() == 1


def test_packages_in_another_order_or_spelling_are_the_same_build(client, catalogue):
    one = post(client, {**ARCHER, "packages": ["luci", "tcpdump", "htop"]})
    other = post(client, {**ARCHER, "packages": ["+htop", "tcpdump", "luci", "luci", ""]})

    assert one.json()["request_hash"] == other.json()["request_hash"]


def test_a_board_name_and_its_profile_are_the_same_build(client, catalogue):
    by_profile = post(client, {**ARCHER, "packages": ["luci"]})
    by_board = post(client, {**ARCHER, "profile": "tplink,archer-c7-v5", "packages": ["luci"]})

    assert by_profile.json()["request_hash"] == by_board.json()["request_hash"]
    assert build_of(by_board).profile == "tplink_archer-c7-v5"


def test_an_alias_resolves_to_its_profile(client, catalogue):
    response = post(client, {**ARCHER, "profile": "carambola2"})

    assert build_of(response).profile == "8dev_carambola2"


def test_a_target_with_only_generic_builds_it_for_any_board_name(client, catalogue):
    response = post(
        client, {"version": "24.10.1", "target": "x86/64", "profile": "pc-engines-apu2"}
    )

    assert response.status_code == 202
    assert build_of(response).profile == "generic"


def test_different_requests_are_different_builds(client, catalogue, settings):
    settings.ASU_ALLOW_DEFAULTS = True
    variants = [
        {},
        {"packages": ["luci"]},
        {"rootfs_size_mb": 256},
        {"filesystem": "ext4"},
        {"defaults": "echo 1"},
        {"version_code": "r28427-6df0e3d02a"},
        {"profile": "8dev_carambola2"},
        {"diff_packages": True},
    ]
    hashes = {post(client, {**ARCHER, **change}).json()["request_hash"] for change in variants}

    assert len(hashes) == len(variants)
    assert Build.objects.values("bin_dir").distinct().count() == len(variants)


def test_the_manifest_check_changes_the_request_but_not_the_files(client, catalogue):
    plain = build_of(post(client, {**ARCHER, "packages": ["luci"]}))
    pinned = build_of(post(client, {**ARCHER, "packages_versions": {"luci": "25.100-r1"}}))

    assert plain.request_hash != pinned.request_hash
    assert plain.bin_dir == pinned.bin_dir
    assert pinned.packages == ["luci"]
    assert pinned.request["packages_versions"] == {"luci": "25.100-r1"}


def test_diff_packages_removes_the_defaults_the_request_leaves_out(client, catalogue):
    kept = ["base-files", "busybox", "dropbear", "libc", "uci", "firewall4", "kmod-ath10k-ct"]
    build = build_of(post(client, {**ARCHER, "packages": [*kept, "luci"], "diff_packages": True}))

    # ppp-mod-pppoe is already removed by the device's own "-ppp-mod-pppoe".
    removed = ["-ath10k-firmware-qca988x-ct", "-dnsmasq", "-kmod-ath9k", "-opkg", "-ppp"]
    assert build.packages == removed + sorted([*kept, "luci"])


def test_a_new_upstream_revision_is_a_new_build(client, catalogue):
    before = post(client, ARCHER).json()["request_hash"]
    catalogue["ath79"].version_code = "r28500-0123456789"
    catalogue["ath79"].save()

    after = post(client, ARCHER).json()["request_hash"]

    assert before != after


def test_package_change_rules_are_part_of_the_build(client, catalogue):
    add_packages(catalogue["version"], "mips_24kc", ["old-tool", "new-tool"])
    before = build_of(post(client, {**ARCHER, "packages": ["old-tool"]}))

    PackageChange.objects.create(
        kind=PackageChange.Kind.RENAME,
        source="old-tool",
        target="new-tool",
        branch=catalogue["version"].branch,
    )
    after = build_of(post(client, {**ARCHER, "packages": ["old-tool"]}))

    assert before.packages == ["old-tool"]
    assert after.packages == ["new-tool"]
    assert after.request_hash != before.request_hash
    assert after.package_changes_applied[0]["target"] == "new-tool"
    assert after.request["packages"] == ["old-tool"]


def test_rules_apply_before_the_package_check(client, catalogue):
    # The old name is in no index of this version, its replacement is.
    add_packages(catalogue["version"], "mips_24kc", ["new-tool"])
    PackageChange.objects.create(
        kind=PackageChange.Kind.RENAME, source="old-tool", target="new-tool"
    )

    response = post(client, {**ARCHER, "packages": ["old-tool"]})

    assert response.status_code == 202


# The shortcut for repeated requests notices every change --------------------------------


def test_a_repeated_request_sees_new_device_packages(client, catalogue):
    body = {**ARCHER, "packages": ["luci"], "diff_packages": True}
    before = post(client, body).json()["request_hash"]
    catalogue["archer"].device_packages = ["kmod-ath10k-ct"]
    catalogue["archer"].save()

    after = build_of(post(client, body))

    assert after.request_hash != before
    assert "-ath10k-firmware-qca988x-ct" not in after.packages


def test_a_repeated_request_sees_new_default_packages(client, catalogue):
    body = {**ARCHER, "packages": ["luci"], "diff_packages": True}
    before = post(client, body).json()["request_hash"]
    catalogue["ath79"].default_packages = [*catalogue["ath79"].default_packages, "htop"]
    catalogue["ath79"].save()

    assert post(client, body).json()["request_hash"] != before


def test_a_repeated_request_sees_its_branch_switched_off(client, catalogue):
    assert post(client, ARCHER).status_code == 202
    catalogue["version"].branch.enabled = False
    catalogue["version"].branch.save()

    response = post(client, ARCHER)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Unsupported branch")


def test_a_repeated_request_sees_a_board_name_move_to_another_profile(client, catalogue):
    body = {**ARCHER, "profile": "tplink,archer-c7-v5"}
    assert build_of(post(client, body)).profile == "tplink_archer-c7-v5"
    ProfileName.objects.filter(name="tplink_archer-c7-v5").update(profile=catalogue["carambola"])
    ProfileName.objects.filter(name="8dev_carambola2").delete()

    assert build_of(post(client, body)).profile == "8dev_carambola2"


def test_a_repeated_request_sees_the_settings_change(client, catalogue, settings):
    settings.ASU_ALLOW_DEFAULTS = True
    body = {**ARCHER, "defaults": "echo hi"}
    assert post(client, body).status_code == 202
    settings.ASU_ALLOW_DEFAULTS = False

    assert post(client, body).status_code == 400


def test_a_repeated_request_sees_an_edited_rule(client, catalogue):
    add_packages(catalogue["version"], "mips_24kc", ["old-tool", "new-tool", "newer-tool"])
    rule = PackageChange.objects.create(
        kind=PackageChange.Kind.RENAME, source="old-tool", target="new-tool"
    )
    body = {**ARCHER, "packages": ["old-tool"]}
    assert build_of(post(client, body)).packages == ["new-tool"]
    rule.target = "newer-tool"
    rule.save()

    assert build_of(post(client, body)).packages == ["newer-tool"]


def test_a_repeated_request_still_answers_malformed_fields_422(client, catalogue):
    assert post(client, ARCHER).status_code == 202

    assert post(client, {**ARCHER, "client": "x" * 500}).status_code == 422


def test_the_same_bytes_again_still_see_an_edited_rule(client, catalogue):
    add_packages(catalogue["version"], "mips_24kc", ["old-tool", "new-tool"])
    body = '{"version": "24.10.1", "target": "ath79/generic", "profile": "tplink_archer-c7-v5", '
    body += '"packages": ["old-tool"]}'
    first = client.post("/api/v1/build", body, content_type="application/json")
    PackageChange.objects.create(
        kind=PackageChange.Kind.RENAME, source="old-tool", target="new-tool"
    )

    again = client.post("/api/v1/build", body, content_type="application/json")

    assert build_of(first).packages == ["old-tool"]
    assert build_of(again).packages == ["new-tool"]


@pytest.mark.django_db(transaction=True)
def test_a_repeated_request_survives_a_pooler_that_forgets_prepared_statements(
    client, settings, tmp_path, monkeypatch, caplog
):
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are a PostgreSQL matter")
    monkeypatch.setattr("asuproject.lib.prepared._can_prepare", True)
    fresh_start(settings, tmp_path)
    make_catalogue()
    first = post(client, ARCHER)  # remembers the request, prepares the state query
    assert post(client, ARCHER).status_code == 202
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a new server session looks like

    again = post(client, ARCHER)

    assert again.status_code == 202
    assert again.json()["request_hash"] == first.json()["request_hash"]
    assert "prepared statements do not last" in caplog.text


# Package names of a synced catalogue -------------------------------------------------------


def _synced(version) -> None:
    """Mark the version as the sync leaves it: with a generation."""
    version.synced_at = timezone.now()
    version.save()


def test_a_synced_catalogue_reads_a_targets_package_names_once(client, catalogue):
    _synced(catalogue["version"])
    assert post(client, {**ARCHER, "packages": ["luci"]}).status_code == 202

    with CaptureQueriesContext(connection) as queries:
        missing = post(client, {**ARCHER, "packages": ["htop", "nope"]})
        found = post(client, {**ARCHER, "packages": ["tcpdump", "kmod-ath10k-ct"]})

    assert missing.status_code == 400
    assert missing.json()["detail"] == "Impossible package selection: missing (nope)"
    assert found.status_code == 202
    assert not [q for q in queries if f'"{Package._meta.db_table}"' in q["sql"]]


def test_a_sync_that_adds_a_package_makes_it_known_at_once(client, catalogue):
    _synced(catalogue["version"])
    assert post(client, {**ARCHER, "packages": ["brand-new"]}).status_code == 400

    add_packages(catalogue["version"], "mips_24kc", ["brand-new"])
    _synced(catalogue["version"])  # as every sync write does

    assert post(client, {**ARCHER, "packages": ["brand-new"]}).status_code == 202


# Finished and failed builds ---------------------------------------------------------------


def test_a_finished_build_answers_200_at_once_and_queues_nothing(
    client, catalogue, django_capture_on_commit_callbacks
):
    finish(build_of(post(client, ARCHER)))

    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client, ARCHER)

    assert response.status_code == 200
    assert callbacks == []


def test_repeated_posts_queue_one_task(client, catalogue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        for _ in range(5):
            post(client, ARCHER)

    assert len(callbacks) == 1
    assert Build.objects.count() == 1


def test_a_failed_build_answers_500_until_its_failure_ttl_passes(client, catalogue, settings):
    settings.ASU_FAILURE_TTL = 3600
    build = fail(build_of(post(client, ARCHER)), "Error: boom", minutes_ago=59)

    response = post(client, ARCHER)

    assert response.status_code == 500
    build.refresh_from_db()
    assert build.status == Build.Status.FAILED


def test_a_failed_build_is_tried_again_after_its_failure_ttl(
    client, catalogue, settings, django_capture_on_commit_callbacks
):
    settings.ASU_FAILURE_TTL = 3600
    build = fail(build_of(post(client, ARCHER)), "Error: boom", minutes_ago=61)
    old_task = build.task_id

    with django_capture_on_commit_callbacks() as callbacks:
        first = post(client, ARCHER)
        second = post(client, ARCHER)

    assert first.status_code == 202
    assert first.json()["detail"] == "queued"
    assert second.status_code == 202
    assert len(callbacks) == 1
    build.refresh_from_db()
    assert build.status == Build.Status.QUEUED
    assert build.task_id != old_task
    assert build.detail == build.stderr == ""
    assert build.enqueued_at > timezone.now() - timedelta(minutes=1)


def test_polling_a_failed_build_never_queues_it_again(client, catalogue, settings):
    settings.ASU_FAILURE_TTL = 0
    build = fail(build_of(post(client, ARCHER)), "Error: boom", minutes_ago=5)

    assert client.get(f"/api/v1/build/{build.request_hash}").status_code == 500
    build.refresh_from_db()
    assert build.status == Build.Status.FAILED


# Concurrency, over real HTTP and a real database -------------------------------------------


def _queued_messages() -> int:
    queue = django_settings.CELERY_TASK_DEFAULT_QUEUE
    with app.connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue=queue).message_count


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_identical_posts_make_one_build_and_one_task(
    live_server, settings, tmp_path
):
    fresh_start(settings, tmp_path)
    make_catalogue()
    before = _queued_messages()
    body = {**ARCHER, "packages": ["luci", "tcpdump"]}

    def send(_):
        return requests.post(f"{live_server.url}/api/v1/build", json=body, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(send, range(50)))

    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["request_hash"] for r in responses}) == 1
    assert Build.objects.count() == 1
    assert _queued_messages() - before == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_a_failed_build_queue_it_once(live_server, settings, tmp_path):
    fresh_start(settings, tmp_path)
    make_catalogue()
    settings.ASU_FAILURE_TTL = 60
    body = {**ARCHER, "packages": ["htop"], "packages_versions": {}}
    first = requests.post(f"{live_server.url}/api/v1/build", json=body, timeout=60)
    fail(Build.objects.get(request_hash=first.json()["request_hash"]), "Error: x", minutes_ago=2)
    before = _queued_messages()

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(
            pool.map(
                lambda _: requests.post(f"{live_server.url}/api/v1/build", json=body, timeout=60),
                range(20),
            )
        )

    assert {r.status_code for r in responses} == {202}
    assert _queued_messages() - before == 1


# Across processes: another process's writes change this process's answers at once ---------

OTHER_PROCESS = """
import sys
import django
django.setup()
from builds.models import Build
from builds.queue import build_again
from builds.retention import delete_builds
from packages.models import PackageChange
action, request_hash = sys.argv[1:]
build = Build.objects.get(request_hash=request_hash)
if action == "again":
    assert build_again(build)
elif action == "expire":
    assert delete_builds([build])[0]
else:
    assert PackageChange.objects.filter(source="old-tool").update(target="newer-tool")
"""


def in_other_process(tmp_path, action: str, request_hash: str) -> None:
    """What the admin does ("build again", "expire now", editing rules), in a process
    of its own: nothing of it reaches this process's memory but the database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "asuproject.settings",
        "DATABASE_URL": database_url_for_workers(),
        "ASU_STORE_DIR": str(tmp_path / "other-store"),
    }
    done = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, action, request_hash],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def committed_catalogue(transactional_db, settings, tmp_path, seeded_data) -> dict:
    fresh_start(settings, tmp_path)
    return make_catalogue()


def test_another_process_requeueing_expiring_or_editing_rules_changes_the_answer_at_once(
    client, committed_catalogue, tmp_path
):
    body = {**ARCHER, "packages": ["luci"]}
    request_hash = post(client, body).json()["request_hash"]
    finish(Build.objects.get(request_hash=request_hash))
    poll = f"/api/v1/build/{request_hash}"
    assert post(client, body).status_code == client.get(poll).status_code == 200  # kept

    in_other_process(tmp_path, "again", request_hash)
    assert client.get(poll).json()["detail"] == "queued"
    assert post(client, body).json()["detail"] == "queued"

    finish(Build.objects.get(request_hash=request_hash))
    assert post(client, body).status_code == client.get(poll).status_code == 200
    in_other_process(tmp_path, "expire", request_hash)
    assert client.get(poll).status_code == 404
    assert post(client, body).json()["detail"] == "queued"  # a new row under the same hash

    add_packages(
        committed_catalogue["version"], "mips_24kc", ["old-tool", "new-tool", "newer-tool"]
    )
    PackageChange.objects.create(
        kind=PackageChange.Kind.RENAME, source="old-tool", target="new-tool"
    )
    renamed = {**ARCHER, "packages": ["old-tool"]}
    assert build_of(post(client, renamed)).packages == ["new-tool"]
    in_other_process(tmp_path, "rules", request_hash)
    assert build_of(post(client, renamed)).packages == ["newer-tool"]


# The generations' listener (targets.generation) --------------------------------------------

postgresql_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="PostgreSQL's notifications"
)


def kept_build(client) -> tuple[dict, str]:
    """A finished build whose answer this process keeps, and the path polling it."""
    body = {**ARCHER, "packages": ["luci"]}
    request_hash = post(client, body).json()["request_hash"]
    finish(Build.objects.get(request_hash=request_hash))
    poll = f"/api/v1/build/{request_hash}"
    assert post(client, body).status_code == client.get(poll).status_code == 200
    return body, poll


def queries_of(client, body: dict, poll: str) -> int:
    """How many statements a repeated POST and a poll of its build send together."""
    with CaptureQueriesContext(connection) as queries:
        assert post(client, body).status_code == client.get(poll).status_code == 200
    return len(queries)


def another_session(sql: str, params: tuple = ()) -> None:
    """`sql` run and committed on a connection of its own, as another host would."""
    raw = connection.get_new_connection(connection.get_connection_params())
    try:
        raw.autocommit = True
        with raw.cursor() as cursor:
            cursor.execute(sql, params)
    finally:
        raw.close()


def notification_delivered() -> bool:
    """Wait (at most a second) until PostgreSQL has handed a notification to this
    process's listening connection."""
    readable, _, _ = select.select([generation.listener.raw], [], [], 1.0)
    return bool(readable)


@pytest.fixture
def no_revalidation(monkeypatch) -> None:
    """The listener's values are trusted for a second: a slow machine must not make a
    request read them again where a test counts statements."""
    monkeypatch.setattr(generation, "REVALIDATE_SECONDS", 600.0)


@postgresql_only
def test_with_the_listener_a_repeat_sends_no_statement(
    client, committed_catalogue, no_revalidation
):
    body, poll = kept_build(client)
    queries_of(client, body, poll)  # the listener connects and vouches from here on

    assert queries_of(client, body, poll) == 0
    assert generation.listener.raw is not None


@postgresql_only
def test_a_write_committed_elsewhere_reaches_the_next_request(client, committed_catalogue):
    body, poll = kept_build(client)
    queries_of(client, body, poll)
    request_hash = poll.rsplit("/", 1)[1]

    another_session(
        "UPDATE builds_build SET status = 'queued' WHERE request_hash = %s", (request_hash,)
    )

    assert notification_delivered()
    assert client.get(poll).json()["detail"] == "queued"
    assert post(client, body).json()["detail"] == "queued"


@postgresql_only
def test_a_lost_listening_connection_means_reading_the_generations(
    client, committed_catalogue, monkeypatch, caplog, no_revalidation
):
    body, poll = kept_build(client)
    queries_of(client, body, poll)
    another_session("SELECT pg_terminate_backend(%s)", (generation.listener.raw.info.backend_pid,))
    select.select([generation.listener.raw], [], [], 1.0)  # the session's end is on its way

    assert queries_of(client, body, poll) == 2  # each request reads the generations
    assert "no listening connection" in caplog.text
    assert queries_of(client, body, poll) == 2  # not yet tried again

    monkeypatch.setattr(generation, "RECONNECT_SECONDS", 0.0)
    generation.listener.retry_at = 0.0
    queries_of(client, body, poll)  # connects again, reads once
    assert queries_of(client, body, poll) == 0


@postgresql_only
def test_the_generations_are_read_again_once_a_second_in_any_case(
    client, committed_catalogue, monkeypatch
):
    body, poll = kept_build(client)
    monkeypatch.setattr(generation, "REVALIDATE_SECONDS", 0.0)

    assert queries_of(client, body, poll) == 2


@postgresql_only
def test_without_notifications_each_request_reads_the_generations(
    client, committed_catalogue, settings
):
    body, poll = kept_build(client)
    settings.ASU_GENERATION_NOTIFICATIONS = False

    assert queries_of(client, body, poll) == 2


def test_inside_a_transaction_each_request_reads_the_generations(client, catalogue):
    """A test's own transaction (or any) holds writes that no notification announces."""
    body, poll = kept_build(client)

    assert queries_of(client, body, poll) == 2
