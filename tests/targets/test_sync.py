"""The catalogue sync against the test mirror, served over real HTTP."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from packages.models import Package, PackageIndex
from packages.sync import sync_upstream
from targets.models import Branch, Profile, ProfileName, Target, Version, newest_first
from targets.sync import branch_of
from tests.targets.conftest import catalogue, edit_json, rewrite

WRITES = ("INSERT", "UPDATE", "DELETE")


def writes(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().startswith(WRITES)]


def test_it_reads_every_version_of_the_enabled_branches(synced):
    versions = dict(Version.objects.values_list("name", "branch__name"))
    assert versions == {
        "23.05.5": "23.05",
        "24.10.1": "24.10",
        "25.12.0": "25.12",
        "SNAPSHOT": "SNAPSHOT",
    }
    assert synced.versions == 4
    assert synced.targets == 11


def test_a_branch_snapshot_missing_upstream_is_not_an_error(synced):
    # The mirror has no releases/24.10-SNAPSHOT: that branch simply has no snapshot.
    assert synced.errors == []
    assert not Version.objects.filter(name__endswith="-SNAPSHOT").exists()


def test_it_stores_every_key_of_profiles_json(synced, mirror_dir):
    upstream = json.loads(
        (mirror_dir / "releases/24.10.1/targets/ath79/generic/profiles.json").read_text()
    )
    target = Target.objects.get(version__name="24.10.1", name="ath79/generic")
    assert target.arch_packages == upstream["arch_packages"] == "mips_24kc"
    assert target.version_code == upstream["version_code"]
    assert target.version_number == "24.10.1"
    assert target.default_packages == upstream["default_packages"]
    assert target.linux_kernel == upstream["linux_kernel"]
    assert target.source_date_epoch == upstream["source_date_epoch"]
    assert target.metadata_version == 1
    assert target.kmods_dir.startswith("6.6.86-1-")

    profile = target.profiles.get(name="tplink_archer-c7-v5")
    assert profile.as_profiles_json() == upstream["profiles"]["tplink_archer-c7-v5"]


def test_it_has_no_linux_kernel_before_the_kmods_split(synced):
    target = Target.objects.get(version__name="23.05.5", name="x86/64")
    assert target.linux_kernel == {}
    assert not target.package_indexes.filter(kind=PackageIndex.Kind.KMODS).exists()
    # Kmods then live in the target's own packages.
    assert Package.objects.of_target(target).filter(name__startswith="kmod-").exists()


def test_it_resolves_board_names_through_profile_names(synced):
    target = Target.objects.get(version__name="25.12.0", name="ath79/generic")
    names = dict(ProfileName.objects.filter(target=target).values_list("name", "profile__name"))
    assert names["8dev_carambola2"] == "8dev_carambola2"
    assert names["carambola2"] == "8dev_carambola2"
    assert names["tplink_archer-c7-v5"] == "tplink_archer-c7-v5"
    assert names["archer-c7-v5"] == "tplink_archer-c7-v5"
    assert "tplink,archer-c7-v5" not in names  # stored as requests are normalised


def test_a_second_sync_writes_nothing(synced):
    before = catalogue()
    with CaptureQueriesContext(connection) as queries:
        report = sync_upstream()
    assert writes(queries) == []
    assert report.targets_updated == report.feeds_updated == report.removed == 0
    assert catalogue() == before
    with CaptureQueriesContext(connection) as queries:
        sync_upstream(thorough=True)
    assert writes(queries) == []
    assert catalogue() == before


def test_an_unchanged_release_is_not_read_again(own_mirror):
    path, _ = own_mirror
    (path / "releases/24.10.1/targets/x86/64/profiles.json").unlink()
    report = sync_upstream()
    # Only the snapshot's targets were read; the releases' .targets.json are unchanged.
    assert report.targets == 3
    assert report.errors == []
    # A thorough run, or one for that version, reads every file.
    assert len(sync_upstream(thorough=True).errors) == 1
    assert len(sync_upstream(version="24.10.1").errors) == 1


def test_an_unchanged_release_still_reads_what_it_lacks(own_mirror):
    Target.objects.filter(version__name="24.10.1", name="x86/64").delete()
    PackageIndex.objects.filter(version__name="24.10.1", arch_packages="mips_24kc").delete()
    report = sync_upstream()
    assert report.errors == []
    assert report.targets == 3 + 1
    assert report.feeds_updated == 5
    assert Target.objects.filter(version__name="24.10.1", name="x86/64").exists()


def test_an_unchanged_sync_costs_few_queries(synced, django_assert_max_num_queries):
    # A handful per version, none per target or feed.
    with django_assert_max_num_queries(4 * 4 + 2):
        sync_upstream()
    with django_assert_max_num_queries(4 * 4 + 2):
        sync_upstream(thorough=True)


def test_it_writes_only_the_target_that_changed(own_mirror):
    path, _ = own_mirror
    edit_json(
        path / "snapshots/targets/x86/64/profiles.json",
        lambda data: data.update(version_code="r33002-0123456789"),
    )
    old_synced_at = Version.objects.get(name="SNAPSHOT").synced_at
    with CaptureQueriesContext(connection) as queries:
        report = sync_upstream()
    assert report.targets_updated == 1
    assert report.feeds_updated == 0
    assert Target.objects.get(version__name="SNAPSHOT", name="x86/64").version_code == (
        "r33002-0123456789"
    )
    # The generation the JSON documents are cached under moved on.
    assert Version.objects.get(name="SNAPSHOT").synced_at > old_synced_at
    touched = {sql.split()[2].strip('"') for sql in writes(queries) if sql.startswith("INSERT")}
    assert touched <= {"targets_profile", "targets_profilename"}


def test_it_keeps_profile_rows_of_profiles_that_remain(own_mirror):
    path, _ = own_mirror
    before = dict(
        Profile.objects.filter(
            target__version__name="SNAPSHOT", target__name="ath79/generic"
        ).values_list("name", "pk")
    )
    edit_json(
        path / "snapshots/targets/ath79/generic/profiles.json",
        lambda data: data["profiles"].pop("8dev_carambola2"),
    )
    sync_upstream()
    after = dict(
        Profile.objects.filter(
            target__version__name="SNAPSHOT", target__name="ath79/generic"
        ).values_list("name", "pk")
    )
    assert after == {name: pk for name, pk in before.items() if name != "8dev_carambola2"}
    assert not ProfileName.objects.filter(
        target__version__name="SNAPSHOT", name="carambola2"
    ).exists()


def test_it_keeps_extra_keys_of_profiles_json(own_mirror):
    path, _ = own_mirror

    def add_keys(data):
        data["imagebuilder"] = {"x86_64": "openwrt-imagebuilder.tar.zst"}
        data["profiles"]["generic"]["file_size_limits"] = {"image": 1000, "kernel": 100}

    edit_json(path / "snapshots/targets/x86/64/profiles.json", add_keys)
    sync_upstream()
    target = Target.objects.get(version__name="SNAPSHOT", name="x86/64")
    assert target.extra == {"imagebuilder": {"x86_64": "openwrt-imagebuilder.tar.zst"}}
    profile = target.profiles.get(name="generic")
    assert profile.as_profiles_json()["file_size_limits"] == {"image": 1000, "kernel": 100}


def test_it_removes_a_target_upstream_no_longer_lists(own_mirror):
    path, _ = own_mirror
    edit_json(path / "releases/25.12.0/.targets.json", lambda data: data.pop("mediatek/filogic"))
    report = sync_upstream()
    assert report.removed == 1
    assert not Target.objects.filter(version__name="25.12.0", name="mediatek/filogic").exists()
    # No target of that architecture is left, so neither are its feeds.
    assert not PackageIndex.objects.filter(
        version__name="25.12.0", arch_packages="aarch64_cortex-a53"
    ).exists()
    assert Target.objects.filter(version__name="24.10.1", name="mediatek/filogic").exists()


def test_it_removes_a_version_upstream_no_longer_lists(own_mirror):
    path, _ = own_mirror
    edit_json(path / ".versions.json", lambda data: data["versions_list"].remove("23.05.5"))
    report = sync_upstream()
    assert report.removed == 1
    assert not Version.objects.filter(name="23.05.5").exists()
    assert not PackageIndex.objects.filter(version__name="23.05.5").exists()


def test_it_picks_up_a_branch_snapshot_once_published(own_mirror):
    path, _ = own_mirror
    (path / "releases/24.10.1").rename(path / "releases/24.10-SNAPSHOT")
    (path / "releases/24.10.1").symlink_to(path / "releases/24.10-SNAPSHOT")
    report = sync_upstream()
    assert report.errors == []
    version = Version.objects.get(name="24.10-SNAPSHOT")
    assert version.branch.name == "24.10"
    assert version.targets.count() == 3


def test_it_leaves_disabled_branches_alone(upstream, db):
    Branch.objects.filter(name="24.10").update(enabled=False)
    report = sync_upstream()
    assert report.errors == []
    assert not Version.objects.filter(name="24.10.1").exists()


def test_it_keeps_versions_of_a_branch_that_was_disabled(synced):
    Branch.objects.filter(name="23.05").update(enabled=False)
    sync_upstream()
    # Switching a branch back on must not need a full download.
    assert Version.objects.filter(name="23.05.5").exists()


def test_it_can_read_one_version(upstream, db):
    report = sync_upstream(version="24.10.1")
    assert report.errors == []
    assert list(Version.objects.values_list("name", flat=True)) == ["24.10.1"]
    assert Target.objects.count() == 3


def test_it_can_read_one_target(upstream, db):
    report = sync_upstream(target="x86/64")
    assert report.errors == []
    assert set(Target.objects.values_list("name", flat=True)) == {"x86/64"}
    assert Target.objects.count() == 4
    # Only the feeds of that target's architecture.
    assert set(PackageIndex.objects.values_list("arch_packages", flat=True)) == {"x86_64"}


def test_a_filtered_sync_removes_nothing(synced):
    sync_upstream(version="24.10.1", target="x86/64")
    assert Version.objects.count() == 4
    assert Target.objects.count() == 11


def test_it_reports_a_version_of_no_known_branch(upstream, db):
    report = sync_upstream(version="19.07.10")
    assert report.errors == ["19.07.10: belongs to no branch"]


def test_it_reports_a_version_of_a_disabled_branch(upstream, db):
    report = sync_upstream(version="22.03.7")
    assert report.errors == ["22.03.7: branch 22.03 is disabled"]


def test_it_reports_a_target_the_version_does_not_offer(upstream, db):
    report = sync_upstream(version="23.05.5", target="mediatek/filogic")
    assert report.errors == [
        f"{upstream}/releases/23.05.5/.targets.json: does not list target mediatek/filogic"
    ]


def test_it_reads_the_mirror_through_file_urls(settings, mirror_dir, db):
    settings.ASU_UPSTREAM_URL = mirror_dir.as_uri()
    report = sync_upstream()
    assert report.errors == []
    assert report.targets == 11
    index = PackageIndex.objects.get(
        version__name="24.10.1", kind="feed", arch_packages="x86_64", name="base"
    )
    assert index.url == f"{mirror_dir.as_uri()}/releases/24.10.1/packages/x86_64/base/index.json"
    with CaptureQueriesContext(connection) as queries:
        sync_upstream()
    assert writes(queries) == []


@pytest.mark.parametrize(
    ("version", "branch"),
    [
        ("24.10.1", "24.10"),
        ("24.10.0-rc7", "24.10"),
        ("24.10-SNAPSHOT", "24.10"),
        ("SNAPSHOT", "SNAPSHOT"),
        ("25.12.0", "25.12"),
        ("24.1", None),
        ("1.2.3", None),
        ("24.10.1/../../snapshots", None),
        ("24.10-../SNAPSHOT", None),
        ("", None),
    ],
)
def test_a_version_belongs_to_the_branch_that_prefixes_it(db, version, branch):
    found = branch_of(version, Branch.objects.all())
    assert (found.name if found else None) == branch


def test_versions_sort_newest_first():
    assert newest_first(
        ["24.10-SNAPSHOT", "24.10.0-rc2", "24.10.0", "24.10.10", "24.10.2", "24.10.0-rc10"]
    ) == ["24.10.10", "24.10.2", "24.10.0", "24.10.0-rc10", "24.10.0-rc2", "24.10-SNAPSHOT"]


def test_the_report_summarises_the_run(synced):
    assert synced.summary() == (
        "4 versions, 11 targets: 11 targets and 55 feed indexes updated, 0 removed, 0 errors"
    )
    assert synced.as_dict()["errors"] == []


def test_rewrite_moves_the_modification_time(tmp_path):
    # The helper the tests above rely on for HTTP validators.
    path = tmp_path / "file"
    path.write_text("a")
    before = path.stat().st_mtime
    rewrite(path, "b")
    assert path.stat().st_mtime > before
