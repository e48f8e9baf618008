"""Retention: which builds, store folders and cached ImageBuilders go, and when."""

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import filelock
import pytest
from celery.schedules import crontab
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command

from builds import retention
from builds.imagebuilder import cache_entries, working_copy
from builds.models import Build

# Five seconds past midnight UTC: yesterday's snapshot builds are due, today's are not.
NOW = datetime(2026, 3, 10, 0, 0, 5, tzinfo=UTC)
DONE, FAILED = Build.Status.DONE, Build.Status.FAILED


def finished_build(
    ago: timedelta,
    version: str = "24.10.1",
    status: str = DONE,
    defaults: str | None = None,
    bin_dir: str = "",
    now: datetime = NOW,
) -> Build:
    """A build that finished `ago` before `now`, with its expiry recorded as the rules say."""
    finished = now - ago
    request = {"version": version, "target": "ath79/generic", "defaults": defaults}
    return Build.objects.create(
        request_hash=uuid.uuid4().hex,
        request=request,
        version=version,
        target="ath79/generic",
        profile="tplink_archer-c7-v5",
        status=status,
        enqueued_at=finished - timedelta(minutes=1),
        started_at=finished - timedelta(minutes=1),
        finished_at=finished,
        expires_at=retention.expires_at(version, request, status == FAILED, finished),
        bin_dir=bin_dir or uuid.uuid4().hex,
    )


def due_at(moment: datetime) -> set[int]:
    return set(retention.builds_due(moment).values_list("pk", flat=True))


def test_snapshot_builds_go_at_the_first_midnight_after_they_finished(db, settings):
    settings.ASU_BUILD_TTL = 2 * 86400
    yesterday = finished_build(timedelta(seconds=10), version="SNAPSHOT")
    branch = finished_build(timedelta(seconds=10), version="24.10-SNAPSHOT")
    today = finished_build(timedelta(seconds=1), version="SNAPSHOT")
    release = finished_build(timedelta(seconds=10))
    assert due_at(NOW) == {yesterday.pk, branch.pk}
    assert today.pk not in due_at(NOW + timedelta(hours=23, minutes=59))
    assert today.pk in due_at(NOW + timedelta(hours=24))
    assert release.pk not in due_at(NOW + timedelta(hours=24))


def test_release_builds_go_after_the_build_ttl(db, settings):
    settings.ASU_BUILD_TTL = 3600
    old = finished_build(timedelta(minutes=61))
    young = finished_build(timedelta(minutes=59))
    assert due_at(NOW) == {old.pk}
    assert young.pk in due_at(NOW + timedelta(minutes=2))


def test_failed_builds_go_after_the_failure_ttl(db, settings):
    settings.ASU_FAILURE_TTL = 600
    settings.ASU_BUILD_TTL = 86400
    old = finished_build(timedelta(minutes=11), status=FAILED)
    young = finished_build(timedelta(minutes=9), status=FAILED)
    done = finished_build(timedelta(minutes=11))
    assert due_at(NOW) == {old.pk}
    assert young.pk in due_at(NOW + timedelta(minutes=2))
    assert done.pk not in due_at(NOW + timedelta(minutes=2))


def test_builds_with_defaults_go_half_an_hour_after_they_finished(db, settings):
    assert settings.ASU_DEFAULTS_TTL == 1800
    script = "uci set system.@system[0].hostname=router\n"
    old = finished_build(timedelta(minutes=31), defaults=script)
    young = finished_build(timedelta(minutes=29), defaults=script)
    without = finished_build(timedelta(minutes=31), defaults=None)
    empty = finished_build(timedelta(minutes=31), defaults="")
    assert due_at(NOW) == {old.pk}
    assert due_at(NOW + timedelta(minutes=2)) == {old.pk, young.pk}
    assert {without.pk, empty.pk}.isdisjoint(due_at(NOW + timedelta(hours=12)))


def test_a_build_in_progress_never_goes(db):
    long_ago = timedelta(days=30)
    for status in (Build.Status.QUEUED, Build.Status.STARTED):
        finished_build(long_ago, version="SNAPSHOT", status=status, defaults="echo")
    assert due_at(NOW) == set()


@pytest.mark.parametrize(
    "version,status,defaults",
    [
        ("24.10.1", DONE, None),
        ("24.10.1", FAILED, None),
        ("24.10.1", DONE, "echo hi"),
        ("SNAPSHOT", DONE, None),
        ("25.12-SNAPSHOT", FAILED, "echo hi"),
    ],
)
def test_the_recorded_expiry_is_when_the_sweep_deletes_the_build(db, version, status, defaults):
    build = finished_build(timedelta(hours=2), version=version, status=status, defaults=defaults)
    # Not the recorded expiry alone: the rules on the row's fields agree with it.
    Build.objects.filter(pk=build.pk).update(expires_at=None)
    assert build.pk not in due_at(build.expires_at - timedelta(seconds=1))
    assert build.pk in due_at(build.expires_at + timedelta(seconds=1))


def test_files_shared_by_several_builds_stay_until_the_last_one_goes(db, upstream, settings):
    settings.ASU_BUILD_TTL = 3600
    first = finished_build(timedelta(hours=2), bin_dir="shared")
    second = finished_build(timedelta(minutes=30), bin_dir="shared")
    default_storage.save("shared/image.bin", ContentFile(b"image"))

    expiry = retention.expire(NOW)
    assert [b.pk for b in expiry.builds] == [first.pk]
    assert expiry.bin_dirs == []
    assert default_storage.exists("shared/image.bin")

    expiry = retention.expire(NOW + timedelta(hours=1))
    assert [b.pk for b in expiry.builds] == [second.pk]
    assert expiry.bin_dirs == ["shared"]
    assert not default_storage.exists("shared/image.bin")


def test_the_dry_run_prints_what_would_go_and_deletes_nothing(db, upstream, settings):
    settings.ASU_BUILD_TTL = 3600
    now = datetime.now(UTC)
    old = finished_build(timedelta(days=2), bin_dir="old-folder", now=now)
    kept = finished_build(timedelta(minutes=1), now=now)
    default_storage.save("old-folder/image.bin", ContentFile(b"image"))

    out = StringIO()
    call_command("expire_builds", "--dry-run", stdout=out)
    assert f"would delete build {old.pk} (24.10.1 ath79/generic" in out.getvalue()
    assert "would delete store folder old-folder" in out.getvalue()
    assert "Would delete: 1 builds, 1 store folders, 0 ImageBuilders" in out.getvalue()
    assert Build.objects.filter(pk=old.pk).exists()
    assert default_storage.exists("old-folder/image.bin")

    out = StringIO()
    call_command("expire_builds", stdout=out)
    assert f"delete build {old.pk} (" in out.getvalue()
    assert "Deleted: 1 builds, 1 store folders, 0 ImageBuilders" in out.getvalue()
    assert list(Build.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not default_storage.exists("old-folder/image.bin")


def _warm(version: str, version_path: str) -> Path:
    with working_copy(
        version, version_path, "ath79/generic", time.monotonic() + 60, lambda step: None
    ):
        pass
    [entry] = [e for e in cache_entries() if e.parts[-4] == version]
    return entry


def _age(path: Path, days: float) -> None:
    moment = time.time() - days * 86400
    os.utime(path, (moment, moment))


def test_imagebuilders_unused_for_a_week_are_removed(db, upstream, settings):
    assert settings.ASU_CACHE_MAX_AGE_DAYS == 7
    unused = _warm("24.10.1", "releases/24.10.1")
    used = _warm("23.05.5", "releases/23.05.5")
    _age(unused, 8)
    _age(used, 8)
    _warm("23.05.5", "releases/23.05.5")  # a build uses it again: its mark is renewed

    out = StringIO()
    call_command("expire_builds", "--dry-run", stdout=out)
    assert f"would remove unused ImageBuilder {unused}" in out.getvalue()
    assert unused.is_dir()

    expiry = retention.expire(datetime.now(UTC))
    assert expiry.cache_entries == [unused]
    assert not unused.exists()
    assert used.is_dir()
    # The next build of the removed one fetches it afresh.
    assert _warm("24.10.1", "releases/24.10.1").is_dir()


def test_each_worker_trims_its_own_cache_once_an_hour(db, upstream):
    unused = _warm("24.10.1", "releases/24.10.1")
    _age(unused, 8)
    assert retention.trim_local_cache(time.time()) == [unused]
    assert not unused.exists()

    again = _warm("24.10.1", "releases/24.10.1")
    _age(again, 8)
    assert retention.trim_local_cache(time.time() + 60) == []  # trimmed a minute ago
    assert retention.trim_local_cache(time.time() + 3601) == [again]


def test_an_imagebuilder_being_copied_is_left_for_the_next_sweep(db, upstream):
    entry = _warm("24.10.1", "releases/24.10.1")
    _age(entry, 30)
    with filelock.FileLock(str(entry.parent / ".lock")):
        assert retention.expire(datetime.now(UTC)).cache_entries == []
    assert entry.is_dir()


def test_beat_expires_builds_hourly_and_at_midnight_utc(settings):
    schedules = [
        entry["schedule"]
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "builds.tasks.expire_builds"
    ]
    assert timedelta(hours=1) in schedules
    assert crontab(minute=0, hour=0) in schedules
    assert settings.CELERY_TIMEZONE == "UTC"
