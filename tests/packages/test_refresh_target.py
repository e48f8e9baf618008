"""refresh_target: what the build API calls when a request names a target the catalogue
lacks."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from packages.models import Package, PackageIndex
from packages.sync import refresh_target
from targets.models import Target
from targets.sync import refresh_version


def test_it_reads_one_target_with_its_packages_and_feeds(upstream, db):
    version = refresh_version("24.10.1")
    target = refresh_target(version, "ath79/generic")
    assert target == Target.objects.get(version=version, name="ath79/generic")
    assert target.profiles.count() == 3
    assert Target.objects.count() == 1
    names = set(Package.objects.for_target(target).values_list("name", flat=True))
    assert {"base-files", "kmod-ath9k", "dropbear", "luci"} <= names
    # Only the feeds of that target's architecture.
    assert set(PackageIndex.objects.values_list("arch_packages", flat=True)) == {"mips_24kc"}


def test_a_second_target_of_the_same_architecture_reuses_its_feeds(upstream, db):
    version = refresh_version("24.10.1")
    refresh_target(version, "ath79/generic")
    feeds = set(PackageIndex.objects.filter(kind="feed").values_list("pk", "digest"))
    with CaptureQueriesContext(connection) as queries:
        refresh_target(version, "ath79/generic")
    assert not [q for q in queries.captured_queries if q["sql"].startswith(("INSERT", "UPDATE"))]
    assert set(PackageIndex.objects.filter(kind="feed").values_list("pk", "digest")) == feeds


def test_it_refuses_a_target_the_version_does_not_offer(upstream, db):
    version = refresh_version("23.05.5")
    assert refresh_target(version, "mediatek/filogic") is None
    assert refresh_target(version, "foo/bar") is None
    assert not Target.objects.exists()
