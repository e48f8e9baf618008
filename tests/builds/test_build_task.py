"""The build task, end to end against the test mirror's stand-in ImageBuilder: in this
process for the many outcomes, and in a real Celery worker for claiming, signatures,
timeouts and concurrency."""

import os
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from builds import make
from builds.imagebuilder import working_copy
from builds.models import Build
from builds.tasks import build, expire_builds
from tests.fixtures.mirror import build_mirror

REVISION_24_10 = "r28597-0425664679"


def queue_build(**request) -> Build:
    """A queued build as the API leaves it, for 24.10.1 ath79/generic unless told."""
    packages = request.pop("effective_packages", None)
    bin_dir = request.pop("bin_dir", uuid.uuid4().hex)
    request = {
        "distro": "openwrt",
        "version": "24.10.1",
        "version_code": "",
        "target": "ath79/generic",
        "profile": "tplink_archer-c7-v5",
        "packages": [],
        "packages_versions": {},
        "diff_packages": False,
        "defaults": None,
        "rootfs_size_mb": None,
        "filesystem": None,
        "repositories": {},
        "repositories_mode": "append",
        "repository_keys": [],
        "client": "test/1.0",
        **request,
    }
    return Build.objects.create(
        request_hash=uuid.uuid4().hex,
        request=request,
        version=request["version"],
        target=request["target"],
        profile=request["profile"],
        packages=request["packages"] if packages is None else packages,
        bin_dir=bin_dir,
    )


def run(row: Build) -> Build:
    """Run the task in this process and return the updated row."""
    build.apply(args=[row.pk])
    row.refresh_from_db()
    return row


def test_it_builds_an_image_and_records_the_result(upstream, settings, db):
    row = run(queue_build(packages=["luci"], filesystem="squashfs"))

    assert (row.status, row.imagebuilder_status, row.detail) == ("done", "done", "")
    result = row.result
    assert result["id"] == "tplink_archer-c7-v5"
    assert result["bin_dir"] == row.bin_dir
    assert result["version_code"] == REVISION_24_10
    assert result["target"] == "ath79/generic"
    assert result["titles"] == [{"model": "Archer C7", "variant": "v5", "vendor": "TP-Link"}]
    assert "profiles" not in result
    assert result["request"] == row.request
    assert result["build_at"].endswith("Z")
    assert result["manifest"] == row.manifest
    assert row.manifest["luci"]
    assert row.manifest["dropbear"] == "2024.86-r1"
    assert row.build_cmd[:3] == ["make", "image", "PROFILE=tplink_archer-c7-v5"]
    assert "ROOTFS_FILESYSTEM=squashfs" in row.build_cmd
    assert result["images"] == row.images
    sysupgrade = next(i for i in row.images if i["type"] == "sysupgrade")
    assert sysupgrade["filesystem"] == "squashfs"
    assert default_storage.exists(f"{row.bin_dir}/{sysupgrade['name']}")
    assert sysupgrade["size"] == default_storage.size(f"{row.bin_dir}/{sysupgrade['name']}")
    assert default_storage.exists(f"{row.bin_dir}/profiles.json")
    assert row.started_at <= row.finished_at
    ttl = (row.expires_at - row.finished_at).total_seconds()
    assert ttl == pytest.approx(settings.ASU_BUILD_TTL, abs=1)


@pytest.mark.parametrize(
    ("version", "target", "profile"),
    [
        ("23.05.5", "ath79/generic", "8dev_carambola2"),  # opkg, .tar.xz
        ("24.10.1", "mediatek/filogic", "glinet_gl-mt6000"),  # opkg, .tar.zst
        ("25.12.0", "ath79/generic", "tplink_archer-c7-v5"),  # apk
        ("SNAPSHOT", "x86/64", "generic"),  # apk, no version in file names
    ],
)
def test_it_builds_every_era_of_imagebuilder(upstream, db, version, target, profile):
    row = run(queue_build(version=version, target=target, profile=profile, packages=["luci"]))
    assert row.status == "done", row.detail
    assert row.result["version_number"] == version
    assert any(
        i["type"] in {"sysupgrade", "combined", "combined-efi", "sdcard"} for i in row.images
    )
    assert "luci" in row.manifest


def test_it_builds_without_bubblewrap_too(upstream, db, monkeypatch):
    monkeypatch.setattr(make, "sandbox", lambda: None)
    row = run(queue_build(packages=["htop"], defaults="echo hello\n"))
    assert row.status == "done", row.detail
    assert "htop" in row.manifest


@pytest.mark.parametrize("version", ["24.10.1", "25.12.0"])  # opkg and apk
def test_it_names_missing_packages_in_the_contract_words(upstream, db, version):
    row = run(queue_build(version=version, packages=["luci", "no-such-package"]))
    assert row.status == "failed"
    assert row.imagebuilder_status == "failed"
    assert row.detail == "Error: Impossible package selection: missing (no-such-package)"
    assert "no-such-package" in row.stderr
    assert row.expires_at is not None


@pytest.mark.parametrize("version", ["24.10.1", "25.12.0"])
def test_it_names_conflicting_packages_in_the_contract_words(upstream, db, version):
    row = run(queue_build(version=version, packages=["dnsmasq-full"]))
    assert row.detail == "Error: Impossible package selection: conflicts (dnsmasq, dnsmasq-full)"


def test_it_refuses_a_revision_other_than_the_requested_one(upstream, db):
    row = run(queue_build(version_code="r1-0000000000"))
    assert row.detail == (
        f"Error: Received incorrect version {REVISION_24_10} (requested r1-0000000000)"
    )


def test_it_accepts_the_requested_revision(upstream, db):
    assert run(queue_build(version_code=REVISION_24_10)).status == "done"


def test_it_fetches_the_requested_revision_when_upstream_just_got_it(
    upstream, settings, mirror_copy, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    _warm_cache("SNAPSHOT", "snapshots", "x86/64")
    build_mirror(copy, snapshot_revision="r33333-abcdef0123")
    row = run(
        queue_build(
            version="SNAPSHOT", target="x86/64", profile="generic", version_code="r33333-abcdef0123"
        )
    )
    assert row.status == "done", row.detail
    assert row.result["version_code"] == "r33333-abcdef0123"


def test_it_lists_profiles_once_per_imagebuilder_not_once_per_build(upstream, settings, db):
    _warm_cache("24.10.1", "releases/24.10.1", "ath79/generic")
    (cached,) = Path(settings.ASU_CACHE_DIR).glob("24.10.1/ath79/generic/r*/Makefile")
    cached.write_text(cached.read_text().replace("$(STANDIN) info", "exit 1"))
    row = run(queue_build(packages=["luci"]))
    assert row.status == "done", row.detail


def test_it_logs_how_long_each_step_took(upstream, db, caplog):
    caplog.set_level("INFO", logger="builds.tasks")
    row = run(queue_build(packages=["luci"]))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Build ")]
    assert line.startswith(f"Build {row.pk} done in ")
    for step in ("download_imagebuilder", "validate_manifest", "building_image", "finish"):
        assert re.search(rf"[(,]\s?{step} \d+\.\d{{3}} s[,)]", line), line


def test_it_reports_packages_that_exceed_the_device_storage(upstream, db):
    row = run(queue_build(profile="tplink_tl-wr841-v9", packages=["python3"]))
    assert row.detail == "Error: Selected packages exceed device storage"
    assert "is too big" in row.stderr


def test_it_reports_a_root_partition_that_is_too_small(upstream, db):
    row = run(
        queue_build(
            version="25.12.0",
            target="x86/64",
            profile="generic",
            packages=["python3"],
            filesystem="ext4",
            rootfs_size_mb=4,
        )
    )
    assert row.detail == "Error: Selected packages exceed device storage"
    assert "out of space?" in row.stderr


def test_it_passes_the_root_partition_size_and_file_system(upstream, db):
    row = run(
        queue_build(
            version="25.12.0",
            target="x86/64",
            profile="generic",
            filesystem="ext4",
            rootfs_size_mb=256,
        )
    )
    assert row.status == "done", row.detail
    assert "ROOTFS_PARTSIZE=256" in row.build_cmd
    assert {i["filesystem"] for i in row.images} == {"ext4"}
    assert any(i["type"] == "combined-efi" for i in row.images)


def test_it_checks_the_versions_a_client_expects(upstream, db):
    row = run(queue_build(packages=["luci"], packages_versions={"dropbear": "1999.1-r1"}))
    assert row.detail == (
        "Error: Impossible package selection: other versions available: "
        "dropbear 2024.86-r1 (requested 1999.1-r1)"
    )


def test_it_builds_when_the_expected_versions_match(upstream, db):
    row = run(queue_build(packages=["dropbear"], packages_versions={"dropbear": "2024.86-r1"}))
    assert row.status == "done", row.detail


def test_it_leaves_out_default_packages_an_absolute_list_lacks(upstream, db):
    row = run(queue_build(version="25.12.0", diff_packages=True, packages=["base-files", "luci"]))
    assert row.status == "done", row.detail
    packages = next(a for a in row.build_cmd if a.startswith("PACKAGES=")).split("=", 1)[1]
    assert "-ppp" in packages.split()
    assert "ppp" not in row.manifest
    assert "luci" in row.manifest


def test_it_puts_the_first_boot_script_into_uci_defaults(upstream, db):
    row = run(queue_build(defaults="uci set system.@system[0].hostname=asu\n"))
    assert row.status == "done", row.detail
    files = next(a for a in row.build_cmd if a.startswith("FILES="))
    assert files.startswith("FILES=/")
    sysupgrade = next(i for i in row.images if i["type"] == "sysupgrade")
    image = default_storage.open(f"{row.bin_dir}/{sysupgrade['name']}").read()
    assert b"/etc/uci-defaults/99-asu-defaults" in image


def test_it_fails_a_profile_the_imagebuilder_does_not_know(upstream, db):
    row = run(queue_build(profile="tplink_archer-c7-v99"))
    assert row.status == "failed"
    assert "tplink_archer-c7-v99" in row.detail


def test_it_builds_with_an_extra_repository(upstream, db):
    feed = f"{upstream}/releases/24.10.1/packages/mips_24kc/packages"
    row = run(queue_build(packages=["htop"], repositories={"extra": feed}))
    assert row.status == "done", row.detail
    assert f"{feed}/Packages.gz" in row.stderr


def test_an_extra_repository_replaces_the_stock_feeds(upstream, db):
    feed = f"{upstream}/releases/24.10.1/packages/mips_24kc/packages"
    # Only the extra feed is read: the stock feeds (base, luci, the target's core
    # packages) are gone, so even libc cannot be found.
    row = run(
        queue_build(
            packages=["htop", "luci"], repositories={"extra": feed}, repositories_mode="replace"
        )
    )
    assert row.status == "failed", row.stderr
    assert row.detail.startswith("Error: Impossible package selection: missing (")
    assert "libc" in row.detail
    assert f"{feed}/Packages.gz" in row.stderr
    assert "/luci/Packages.gz" not in row.stderr
    assert "/base/Packages.gz" not in row.stderr


def test_an_appended_repository_keeps_the_stock_feeds(upstream, db):
    feed = f"{upstream}/releases/24.10.1/packages/mips_24kc/packages"
    row = run(
        queue_build(
            packages=["htop", "luci"], repositories={"extra": feed}, repositories_mode="append"
        )
    )
    assert row.status == "done", row.detail
    assert "luci" in row.manifest
    assert "/luci/Packages.gz" in row.stderr


def test_it_reuses_the_files_of_an_identical_build(upstream, settings, db):
    first = run(queue_build(packages=["htop"]))
    assert first.status == "done", first.detail
    # With upstream gone and no ImageBuilder in the cache, only reuse can succeed.
    settings.ASU_UPSTREAM_URL = "http://127.0.0.1:9"
    settings.ASU_CACHE_DIR = Path(settings.ASU_CACHE_DIR).parent / "empty-cache"
    second = run(queue_build(packages=["htop"], bin_dir=first.bin_dir, client="other/2"))
    assert second.status == "done", second.detail
    assert second.images == first.images
    assert second.manifest == first.manifest
    assert second.result["request"]["client"] == "other/2"


def test_it_leaves_a_build_alone_that_is_not_queued(upstream, db):
    row = queue_build()
    Build.objects.filter(pk=row.pk).update(status=Build.Status.STARTED, imagebuilder_status="x")
    assert build.apply(args=[row.pk]).get() == "skipped"
    row.refresh_from_db()
    assert (row.status, row.imagebuilder_status) == ("started", "x")


def test_it_does_nothing_for_a_build_that_is_gone(db):
    assert build.apply(args=[123456789]).get() == "skipped"


def test_it_stops_a_build_that_takes_too_long(upstream, settings, db):
    settings.ASU_BUILD_TIMEOUT = 2
    _warm_cache("24.10.1", "releases/24.10.1", "ath79/generic")
    row = run(queue_build(packages=["test-slow-build"]))
    assert row.status == "failed"
    assert row.detail == (
        "Error: The build took longer than the server's limit of 2 seconds and was stopped. "
        "Try again later or with fewer packages."
    )


def test_expiring_deletes_old_builds_and_files_no_one_else_uses(upstream, db):
    now = timezone.now()
    old = queue_build(bin_dir="shared")
    twin = queue_build(bin_dir="shared")
    alone = queue_build(bin_dir="alone")
    Build.objects.filter(pk__in=[old.pk, alone.pk]).update(
        status=Build.Status.DONE, expires_at=now - timedelta(minutes=1)
    )
    Build.objects.filter(pk=twin.pk).update(
        status=Build.Status.DONE, expires_at=now + timedelta(hours=1)
    )
    for folder in ("shared", "alone"):
        default_storage.save(f"{folder}/image.bin", ContentFile(b"image"))

    assert expire_builds() == 2

    assert list(Build.objects.values_list("pk", flat=True)) == [twin.pk]
    assert default_storage.exists("shared/image.bin")
    assert not default_storage.exists("alone/image.bin")


def test_expiring_fails_builds_a_lost_worker_left_running(upstream, settings, db):
    row = queue_build()
    long_ago = timezone.now() - timedelta(seconds=settings.ASU_BUILD_TIMEOUT + 3600)
    Build.objects.filter(pk=row.pk).update(status=Build.Status.STARTED, started_at=long_ago)
    expire_builds()
    row.refresh_from_db()
    assert row.status == "failed"
    assert "interrupted" in row.detail
    assert row.expires_at > timezone.now()


def test_expiring_removes_working_copies_a_dead_worker_left(upstream, settings, db):
    work = Path(settings.ASU_CACHE_DIR) / "work"
    (work / "old").mkdir(parents=True)
    (work / "running").mkdir()
    long_ago = time.time() - settings.ASU_BUILD_TIMEOUT - 3600
    os.utime(work / "old", (long_ago, long_ago))
    expire_builds()
    assert [p.name for p in work.iterdir()] == ["running"]


# In a real Celery worker, against PostgreSQL (or SQLite) and the configured broker.


def enqueue(row: Build):
    """Send the task as the API does; it goes to the session's queue, where the test
    workers listen."""
    return build.delay(row.pk)


def wait_for(*rows: Build, timeout: float = 90) -> list[Build]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [Build.objects.get(pk=row.pk) for row in rows]
        if all(row.status in ("done", "failed") for row in fresh):
            return fresh
        time.sleep(0.2)
    raise AssertionError(f"builds not finished after {timeout} s: {fresh}")


@pytest.mark.worker
def test_a_worker_builds_two_images_of_one_target_side_by_side(upstream, settings, start_worker):
    start_worker(concurrency=2)
    first = queue_build(packages=["test-slow-build"])
    second = queue_build(packages=["test-slow-build", "htop"])
    enqueue(first)
    enqueue(second)
    first, second = wait_for(first, second)

    assert (first.status, second.status) == ("done", "done"), (first.detail, second.detail)
    # Each make image sleeps 3 s: one after the other, they would finish 3 s apart.
    assert abs((first.finished_at - second.finished_at).total_seconds()) < 2.5
    # Both started with an empty cache: the ImageBuilder was unpacked once.
    log = (Path(settings.ASU_CACHE_DIR).parent / "worker-0.log").read_text()
    assert log.count("Unpacked ImageBuilder") == 1
    assert first.task_id and first.task_id != second.task_id
    assert "htop" in second.manifest and "htop" not in first.manifest


@pytest.mark.worker
def test_a_task_delivered_twice_builds_once(upstream, start_worker):
    start_worker(concurrency=2)
    row = queue_build(packages=["test-slow-build"])
    results = [enqueue(row), enqueue(row)]
    outcomes = sorted(result.get(timeout=90) for result in results)
    assert outcomes == ["done", "skipped"]
    (row,) = wait_for(row)
    assert row.status == "done"


@pytest.mark.worker
def test_a_worker_refuses_an_imagebuilder_with_a_bad_signature(
    upstream, settings, mirror_copy, start_worker
):
    copy, url = mirror_copy
    sums = copy / "releases/24.10.1/targets/ath79/generic/sha256sums"
    sums.write_text(sums.read_text().replace("0", "1", 1))
    settings.ASU_UPSTREAM_URL = url
    start_worker(concurrency=1)
    row = queue_build()
    enqueue(row)
    (row,) = wait_for(row)
    assert row.status == "failed"
    assert row.detail.startswith("Error: The ImageBuilder's checksums failed the signature check")
    assert not list(Path(settings.ASU_CACHE_DIR).glob("24.10.1/ath79/generic/r*"))


@pytest.mark.worker
def test_a_worker_stops_a_build_that_takes_too_long(upstream, settings, start_worker):
    settings.ASU_BUILD_TIMEOUT = 2
    _warm_cache("24.10.1", "releases/24.10.1", "ath79/generic")  # so that the 2 s go to make
    start_worker(concurrency=1)
    row = queue_build(packages=["test-slow-build"])
    started = time.monotonic()
    enqueue(row)
    (row,) = wait_for(row)
    assert row.status == "failed"
    assert "longer than the server's limit of 2 seconds" in row.detail
    assert time.monotonic() - started < 10


def _warm_cache(version: str, version_path: str, target: str) -> None:
    """Fetch and unpack an ImageBuilder into the cache ahead of a build."""
    with working_copy(version, version_path, target, time.monotonic() + 60, lambda step: None):
        pass
