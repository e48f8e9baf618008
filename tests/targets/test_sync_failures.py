"""A broken or unreachable upstream leaves the last good catalogue in place, and the
report names the URL and the reason. The mirror is a private served copy."""

from packages.sync import refresh_target, sync_upstream
from targets.models import Target, Version
from targets.sync import refresh_version
from tests.targets.conftest import catalogue, rewrite


def test_a_missing_profiles_json_keeps_the_target(own_mirror):
    path, url = own_mirror
    before = catalogue()
    (path / "snapshots/targets/ath79/generic/profiles.json").unlink()
    report = sync_upstream()
    assert report.errors == [
        f"{url}/snapshots/targets/ath79/generic/profiles.json: not found (HTTP 404)"
    ]
    assert catalogue() == before


def test_malformed_json_keeps_the_target(own_mirror):
    path, url = own_mirror
    before = catalogue()
    profiles = path / "snapshots/targets/x86/64/profiles.json"
    rewrite(profiles, profiles.read_text()[:-40] + "}}")
    report = sync_upstream()
    assert len(report.errors) == 1
    assert report.errors[0].startswith(
        f"{url}/snapshots/targets/x86/64/profiles.json: malformed JSON: "
    )
    assert catalogue() == before


def test_malformed_targets_json_keeps_the_version(own_mirror):
    path, url = own_mirror
    before = catalogue()
    rewrite(path / "snapshots/.targets.json", '{"x86/64": ')
    report = sync_upstream()
    assert len(report.errors) == 1
    assert report.errors[0].startswith(f"{url}/snapshots/.targets.json: malformed JSON")
    assert catalogue() == before


def test_a_refused_connection_keeps_the_whole_catalogue(own_mirror, settings, refused_url):
    before = catalogue()
    settings.ASU_UPSTREAM_URL = refused_url
    report = sync_upstream()
    assert report.errors
    assert report.errors[0] == (
        f"{refused_url}/.versions.json: connection failed: [Errno 111] Connection refused"
    )
    assert all("Connection refused" in error for error in report.errors)
    # Nothing upstream said a version is gone: none is removed.
    assert report.removed == 0
    assert catalogue() == before


def test_the_next_sync_after_a_repair_writes_the_new_data(own_mirror):
    path, _ = own_mirror
    profiles = path / "snapshots/targets/x86/64/profiles.json"
    good = profiles.read_text()
    rewrite(profiles, "{")
    assert sync_upstream().errors
    rewrite(profiles, good.replace('"r33001-0123456789"', '"r33002-0123456789"'))
    assert sync_upstream().errors == []
    assert Target.objects.get(version__name="SNAPSHOT", name="x86/64").version_code == (
        "r33002-0123456789"
    )


def test_refresh_version_answers_none_when_upstream_is_unreachable(settings, db, refused_url):
    settings.ASU_UPSTREAM_URL = refused_url
    assert refresh_version("24.10.1") is None
    assert not Version.objects.exists()


def test_refresh_target_keeps_the_known_target_when_upstream_is_unreachable(
    own_mirror, settings, refused_url
):
    settings.ASU_UPSTREAM_URL = refused_url
    version = Version.objects.get(name="24.10.1")
    target = refresh_target(version, "x86/64")
    assert target == Target.objects.get(version=version, name="x86/64")
