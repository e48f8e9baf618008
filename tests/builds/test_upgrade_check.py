"""POST /api/v1/upgrade-check on the synced test mirror: what an upgrade would change."""

import pytest

from builds.upgrade import UpgradeCheckRejected, base_packages, parse_board, parse_installed
from packages.models import Package, PackageChange
from targets.models import Profile
from tests.targets.conftest import synced

__all__ = ["synced"]
# Every answer is checked against the OpenAPI description (the fuzz rarely builds a
# request the catalogue can answer with a 200).
pytestmark = pytest.mark.usefixtures("documented_api")

URL = "/api/v1/upgrade-check"
ARCHER = "tplink,archer-c7-v5"


def check(client, **fields) -> dict:
    response = client.post(URL, fields, content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def check_archer(client, version: str, revision: str, installed: dict, **extra) -> dict:
    """The check of an Archer C7 v5 on `version` at `revision` with `installed`."""
    return check(
        client,
        version=version,
        version_code=revision,
        target="ath79/generic",
        profile=ARCHER,
        installed=installed,
        **extra,
    )


def image_of(
    version: str,
    extra: tuple[str, ...] = (),
    target: str = "ath79/generic",
    profile: str = "tplink_archer-c7-v5",
) -> tuple[dict[str, str], str]:
    """The installed list of a router freshly flashed with `version` (its defaults, device
    packages and `extra`, in the catalogue's versions), and its revision."""
    row = Profile.objects.select_related("target").get(
        target__version__name=version, target__name=target, name=profile
    )
    names = base_packages(row.target, row) | set(extra)
    rows = Package.objects.for_target(row.target).filter(name__in=names)
    return dict(rows.values_list("name", "version")), row.target.version_code


def upgrade_to(answer: dict, version: str) -> dict:
    return next(upgrade for upgrade in answer["upgrades"] if upgrade["version"] == version)


def by_name(entries: list[dict]) -> dict[str, dict]:
    return {entry["name"]: entry for entry in entries}


@pytest.mark.django_db
def test_up_to_date(client, synced) -> None:
    installed, revision = image_of("25.12.0", ("owut", "luci-app-package-manager"))
    answer = check_archer(client, "25.12.0", revision, installed)
    assert answer["up_to_date"] is True
    # A release is offered its own branch's newest release, never a snapshot unasked.
    assert [upgrade["version"] for upgrade in answer["upgrades"]] == ["25.12.0"]
    same = answer["upgrades"][0]
    assert same["up_to_date"] and same["buildable"]
    assert same["changed"] == same["added"] == same["removed"] == same["unavailable"] == []
    assert not same["version_changed"] and not same["revision_changed"]
    assert set(same["packages"]) == set(installed)
    assert same["build_request"]["packages"] == same["packages"]


@pytest.mark.django_db
def test_point_release_with_bumped_packages(client, synced) -> None:
    installed, _ = image_of("24.10.1", ("libubox",))
    # A router still on 24.10.0 (no longer listed upstream, so not in the catalogue), with
    # older builds of a few packages, one named with its ABI suffix as opkg shows it.
    installed["dnsmasq"] = "2.90-r3"
    del installed["libubox"]
    installed["libubox20240329"] = "2024.03.29~eb9bcb64-r0"
    installed["ca-bundle"] = "20250101-r1"  # newer than 24.10.1's: a downgrade
    answer = check_archer(client, "24.10.0", "r28427-6df0e3d02a", installed)
    assert answer["up_to_date"] is False
    assert [upgrade["version"] for upgrade in answer["upgrades"]] == ["24.10.1", "25.12.0"]
    point = upgrade_to(answer, "24.10.1")
    assert point["version_changed"] and point["buildable"], point["unavailable"]
    changed = by_name(point["changed"])
    assert changed["dnsmasq"] == {
        "name": "dnsmasq",
        "from": "2.90-r3",
        "to": "2.90-r4",
        "change": "upgrade",
    }
    assert changed["libubox"]["from"] == "2024.03.29~eb9bcb64-r0"
    assert changed["libubox"]["to"] == "2024.03.29~eb9bcb64-r1"
    assert changed["ca-bundle"]["change"] == "downgrade"
    assert set(changed) == {"dnsmasq", "libubox", "ca-bundle"}
    assert point["added"] == point["removed"] == point["unavailable"] == []
    assert "libubox" in point["packages"] and "libubox20240329" not in point["packages"]


@pytest.mark.django_db
def test_branch_upgrade_with_renames(client, synced) -> None:
    installed, revision = image_of("24.10.1", ("auc", "luci-app-opkg", "luci-i18n-opkg-de"))
    answer = check_archer(client, "24.10.1", revision, installed)
    upgrade = upgrade_to(answer, "25.12.0")
    assert upgrade["version_changed"] and upgrade["buildable"] and not upgrade["up_to_date"]
    renames = {
        "auc": "owut",
        "opkg": "apk-mbedtls",
        "luci-app-opkg": "luci-app-package-manager",
        "luci-i18n-opkg-de": "luci-i18n-package-manager-de",
    }
    removed, added = by_name(upgrade["removed"]), by_name(upgrade["added"])
    for old, new in renames.items():
        assert removed[old]["reason"] == "rule" and removed[old]["replaced_by"] == new
        assert removed[old]["version"] == installed[old]
        assert added[new]["reason"] == "rule" and added[new]["replaces"] == old
        assert added[new]["version"]  # the 25.12.0 catalogue has it
        assert new in upgrade["packages"] and old not in upgrade["packages"]
    fired = {(rule["source"], rule["target"]) for rule in upgrade["package_changes_applied"]}
    assert set(renames.items()) <= fired
    # Versions move with the branch: 25.12.0's dnsmasq is newer.
    assert by_name(upgrade["changed"])["dnsmasq"]["to"] == "2.91-r1"
    assert upgrade["unavailable"] == []


@pytest.mark.django_db
def test_package_gone_without_replacement(client, synced) -> None:
    # Without the auc -> owut rule, nothing replaces auc in 25.12: a build would fail.
    PackageChange.objects.filter(source="auc").update(enabled=False)
    installed, revision = image_of("24.10.1", ("auc",))
    answer = check_archer(client, "24.10.1", revision, installed, target_version="25.12.0")
    [upgrade] = answer["upgrades"]
    assert upgrade["unavailable"] == ["auc"]
    assert upgrade["buildable"] is False
    assert "auc" in upgrade["detail"] and "fail" in upgrade["detail"]
    assert "owut" not in upgrade["packages"]


@pytest.mark.django_db
def test_snapshot_revision_change(client, synced) -> None:
    installed, revision = image_of("SNAPSHOT")
    assert revision == "r33001-0123456789"
    fields = {
        "version": "SNAPSHOT",
        "target": "ath79/generic",
        "profile": ARCHER,
        "installed": installed,
    }
    older = check(client, **fields, version_code="r32990-fedcba9876")
    [upgrade] = older["upgrades"]  # a snapshot is offered its snapshot
    assert upgrade["version"] == "SNAPSHOT" and upgrade["revision_changed"] is True
    assert upgrade["version_code"] == revision
    assert not upgrade["version_changed"] and older["up_to_date"] is False
    same = check(client, **fields, version_code=revision)
    assert same["up_to_date"] is True and same["upgrades"][0]["revision_changed"] is False


@pytest.mark.django_db
def test_refusals(client, synced) -> None:
    base = {
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": ARCHER,
        "installed": {"dnsmasq": "2.90-r4"},
    }
    unknown = client.post(URL, {**base, "version": "19.07.10"}, content_type="application/json")
    assert unknown.status_code == 400 and "19.07.10" in unknown.json()["detail"]
    not_offered = client.post(
        URL, {**base, "target_version": "99.01.0"}, content_type="application/json"
    )
    assert not_offered.status_code == 400 and "99.01.0" in not_offered.json()["detail"]
    bad = client.post(URL, {**base, "installed": {"a b": "1"}}, content_type="application/json")
    assert bad.status_code == 422 and "installed" in bad.json()["detail"]
    # A device the candidate does not build is said so, not a failure.
    answer = check(client, **{**base, "profile": "glinet,gl-mt6000", "target": "ath79/generic"})
    assert all(not upgrade["supported"] for upgrade in answer["upgrades"])
    assert answer["up_to_date"] is False
    assert "gl-mt6000" in answer["upgrades"][0]["detail"]


def test_pasted_board_and_installed_lists_are_read() -> None:
    board = parse_board(
        '{"board_name": "tplink,archer-c7-v5", "release": {"version": "24.10.1",'
        ' "revision": "r28597-0425664679", "target": "ath79/generic"}}'
    )
    assert board == {
        "version": "24.10.1",
        "version_code": "r28597-0425664679",
        "target": "ath79/generic",
        "profile": "tplink,archer-c7-v5",
    }
    opkg = "base-files - 1647~0425664679\nlibubox20240329 - 2024.03.29~eb9bcb64-r1\n"
    assert parse_installed(opkg) == {
        "base-files": "1647~0425664679",
        "libubox20240329": "2024.03.29~eb9bcb64-r1",
    }
    apk = (
        "busybox-1.37.0-r5 aarch64_cortex-a53 {busybox} (GPL-2.0-only) [installed]\n"
        "kmod-nf-nat6-6.12.71-r1 aarch64_cortex-a53 {linux} (GPL-2.0-only) [installed]\n"
        "luci-app-package-manager-26.014.71207~0bcd6b2-r1 noarch {luci} (Apache-2.0) "
        "[installed]\n"
        "apk-mbedtls-3.0.0_pre20250606-r1 aarch64_cortex-a53 {apk} (GPL-2.0-only) [installed]\n"
    )
    assert parse_installed(apk) == {
        "busybox": "1.37.0-r5",
        "kmod-nf-nat6": "6.12.71-r1",
        "luci-app-package-manager": "26.014.71207~0bcd6b2-r1",
        "apk-mbedtls": "3.0.0_pre20250606-r1",
    }
    assert parse_installed("base-files 1655~edfe589811\n") == {"base-files": "1655~edfe589811"}
    for text, words in [("{}", "no release"), ("[", "not JSON")]:
        with pytest.raises(UpgradeCheckRejected, match=words):
            parse_board(text)
    with pytest.raises(UpgradeCheckRejected, match="empty"):
        parse_installed("\n\n")
