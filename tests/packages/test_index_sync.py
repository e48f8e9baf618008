"""The package-index sync (packages/sync.py) against the test mirror, served over real
HTTP: target packages, kmods and feeds."""

import json

from django.db import connection
from django.test.utils import CaptureQueriesContext

from packages.models import Package, PackageIndex
from packages.sync import sync_upstream
from targets.models import Target, Version
from tests.targets.conftest import edit_json
from tests.targets.test_sync import writes


def test_it_reads_target_packages_kmods_and_feeds(synced, mirror_dir):
    target = Target.objects.get(version__name="24.10.1", name="x86/64")
    kinds = sorted(target.package_indexes.values_list("kind", flat=True))
    assert kinds == ["kmods", "target"]
    kmods = json.loads(
        (
            mirror_dir / f"releases/24.10.1/targets/x86/64/kmods/{target.kmods_dir}/index.json"
        ).read_text()
    )["packages"]
    ours = dict(Package.objects.of_target(target).values_list("name", "version"))
    assert kmods.items() <= ours.items()

    feeds = PackageIndex.objects.filter(
        version=target.version, kind=PackageIndex.Kind.FEED, arch_packages="x86_64"
    )
    assert sorted(feeds.values_list("name", flat=True)) == [
        "base",
        "luci",
        "packages",
        "routing",
        "telephony",
    ]


def test_it_reads_index_json_v2_first(synced):
    urls = PackageIndex.objects.filter(version__name="24.10.1").values_list("url", flat=True)
    assert all(url.endswith("/index.json") for url in urls)


def test_it_reads_packages_when_index_json_is_v1_and_strips_abi_versions(synced):
    urls = PackageIndex.objects.filter(version__name="23.05.5").values_list("url", flat=True)
    assert all(url.endswith("/Packages") for url in urls)
    names = set(
        Package.objects.filter(index__version__name="23.05.5").values_list("name", flat=True)
    )
    assert "libubox" in names
    assert "libubox20230523" not in names


def test_it_writes_a_changed_feed_in_bulk(own_mirror):
    path, _ = own_mirror
    index = path / "snapshots/packages/x86_64/packages/index.json"
    edit_json(index, lambda data: data["packages"].update({"new-package": "1.0-r1"}))
    with CaptureQueriesContext(connection) as queries:
        report = sync_upstream()
    assert report.feeds_updated == 1
    assert report.targets_updated == 0
    inserts = [sql for sql in writes(queries) if sql.startswith('INSERT INTO "packages_package"')]
    assert len(inserts) == 1  # one bulk insert
    assert (
        Package.objects.of_arch_feeds(Version.objects.get(name="SNAPSHOT"), "x86_64")
        .filter(name="new-package", version="1.0-r1")
        .exists()
    )


def test_it_follows_a_new_kernel_to_its_kmods_folder(own_mirror):
    path, _ = own_mirror
    target_dir = path / "releases/24.10.1/targets/x86/64"
    old = Target.objects.get(version__name="24.10.1", name="x86/64").kmods_dir
    new = old.replace("6.6.86-1", "6.6.87-1")
    (target_dir / "kmods" / old).rename(target_dir / "kmods" / new)
    edit_json(
        target_dir / "profiles.json",
        lambda data: data["linux_kernel"].update(version="6.6.87"),
    )
    report = sync_upstream(thorough=True)
    assert report.errors == []
    target = Target.objects.get(version__name="24.10.1", name="x86/64")
    assert target.kmods_dir == new
    kmods = target.package_indexes.get(kind=PackageIndex.Kind.KMODS)
    assert kmods.name == new
    assert f"/kmods/{new}/" in kmods.url
