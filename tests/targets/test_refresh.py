"""refresh_version: what the build API calls when a request names a version the catalogue
lacks."""

from targets.models import Version
from targets.sync import refresh_version


def test_it_adds_a_version_upstream_offers_without_its_targets(upstream, db):
    version = refresh_version("25.12.0")
    assert version == Version.objects.get(name="25.12.0")
    assert version.branch.name == "25.12"
    assert not version.targets.exists()


def test_it_adds_the_snapshot(upstream, db):
    assert refresh_version("SNAPSHOT").path == "snapshots"


def test_it_refuses_a_version_upstream_does_not_list(upstream, db):
    assert refresh_version("25.12.9") is None
    assert refresh_version("24.10-SNAPSHOT") is None  # not published on the mirror
    assert not Version.objects.exists()


def test_it_refuses_a_version_of_a_disabled_or_unknown_branch(upstream, db):
    assert refresh_version("22.03.7") is None
    assert refresh_version("19.07.10") is None
