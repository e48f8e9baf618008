"""A broken package index leaves the last good catalogue in place, and the report names
the URL and the reason. The mirror is a private served copy."""

import json

from packages.sync import sync_upstream
from targets.models import Target
from tests.targets.conftest import catalogue, edit_json, rewrite


def test_a_packages_file_cut_in_the_middle_keeps_the_whole_target(own_mirror):
    path, url = own_mirror
    before = catalogue()
    target_dir = path / "releases/23.05.5/targets/ath79/generic"
    # A new revision whose package index arrives cut short: neither may be written,
    # or the catalogue would pair new profiles with old packages.
    edit_json(target_dir / "profiles.json", lambda data: data.update(version_code="r24200-0abc"))
    packages = target_dir / "packages/Packages"
    text = packages.read_text()
    rewrite(packages, text.replace("Version: ", "Version: 9", 1)[: len(text) // 2])
    # Only 23.05 has opkg indexes without index.json v2; releases are re-read when asked.
    report = sync_upstream(thorough=True)
    assert len(report.errors) == 1
    assert report.errors[0].startswith(
        f"{url}/releases/23.05.5/targets/ath79/generic/packages/Packages: truncated"
    )
    assert catalogue() == before
    assert Target.objects.get(version__name="23.05.5", name="ath79/generic").version_code == (
        "r24106-10cc5fcd00"
    )


def test_a_broken_feed_keeps_all_feeds_of_its_architecture(own_mirror):
    path, url = own_mirror
    before = catalogue()
    feeds = path / "releases/24.10.1/packages/mips_24kc"
    edit_json(feeds / "base/index.json", lambda data: data["packages"].update(new="1"))
    (feeds / "luci/index.json").unlink()
    (feeds / "luci/Packages").unlink()
    report = sync_upstream(thorough=True)
    assert report.errors == [
        f"{url}/releases/24.10.1/packages/mips_24kc/luci/: no package index "
        "(neither index.json nor Packages)"
    ]
    assert catalogue() == before


def test_an_index_that_is_not_a_package_map_is_an_error(own_mirror):
    path, url = own_mirror
    index = path / "snapshots/packages/x86_64/routing/index.json"
    rewrite(index, json.dumps({"version": 2, "architecture": "x86_64"}))
    report = sync_upstream()
    assert report.errors == [
        f"{url}/snapshots/packages/x86_64/routing/index.json: not a package index: "
        "no `packages` object"
    ]
