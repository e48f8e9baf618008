"""Package versions ordered as OpenWrt's package managers order them."""

import pytest

from packages.versions import compare_versions, is_apk_version, version_key

# Each list is oldest first, as apk (25.12, SNAPSHOT) orders it.
APK_ORDERS = [
    ["1.2.3-r1", "1.2.3-r2", "1.2.3-r10", "1.2.4-r0", "1.10-r0"],
    [
        "3.0.0_alpha1",
        "3.0.0_beta2",
        "3.0.0_pre20250208-r1",
        "3.0.0_pre20250606-r1",
        "3.0.0_rc1-r1",
        "3.0.0",
        "3.0.0-r1",
        "3.0.0_git20250101-r1",
        "3.0.0_p1-r1",
        "3.0.1-r1",
    ],
    [
        "2024.03.29~eb9bcb64-r1",
        "2024.03.29~eb9bcb64-r2",
        "2024.04.01~00aa11bb-r1",
        "2025.07.23~49056d17-r1",
    ],
    ["1.0", "1.0a", "1.0b", "1.1"],
    # A later number with a leading zero compares as text.
    ["1.01", "1.1", "1.2"],
    ["6.6.86~422144fea623288f7402e1a9a15724c8-r1", "6.6.87~0123456789abcdef-r1"],
    ["26.014.71207~0bcd6b2-r1", "26.014.71207~0bcd6b2-r2", "26.020.1~aaaaaaa-r1"],
]

# Oldest first, as opkg (up to 24.10) orders it: Debian's rules.
OPKG_ORDERS = [
    ["1.0~rc1-1", "1.0-1", "1.0-2", "1.0a-1", "1.0.1-1"],
    ["2.0-1", "1:1.0-1", "2:0.1-1"],
    ["2023-05-23-75a3b870-1", "2023-05-23-75a3b870-2", "2024-03-29-eb9bcb64-1"],
    ["4.14.169-1", "4.14.170-1", "5.15.167-1"],
    ["2.4.9.git-2021-01-04-4", "2.5.1-2"],
    ["git-24.264.56960-63ba3cb", "git-24.300.1-aaaaaaa"],
    # An opkg-era version against a 24.10 apk-style one (an upgrade across the change).
    ["2023-05-23-75a3b870-1", "2024.03.29~eb9bcb64-r1"],
]


def _check_order(versions: list[str]) -> None:
    for older, newer in zip(versions, versions[1:], strict=False):
        assert compare_versions(older, newer) == -1, (older, newer)
        assert compare_versions(newer, older) == 1, (newer, older)
    for version in versions:
        assert compare_versions(version, version) == 0
    assert sorted(reversed(versions), key=version_key()) == versions


@pytest.mark.parametrize("versions", APK_ORDERS, ids=lambda v: v[0])
def test_apk_order(versions: list[str]) -> None:
    assert all(is_apk_version(v) for v in versions)
    _check_order(versions)


@pytest.mark.parametrize("versions", OPKG_ORDERS, ids=lambda v: v[0])
def test_opkg_order(versions: list[str]) -> None:
    _check_order(versions)


def test_the_tilde_is_ordered_by_each_managers_own_rule() -> None:
    # opkg: "~" sorts before everything, even the end. apk: "~hash" is a commit hash that
    # ranks after the version's suffixes and before the revision.
    assert compare_versions("1.0~rc1-r1", "1.0-r1", "opkg") == -1
    assert compare_versions("1.0~abc-r1", "1.0-r1", "apk") == 1
    assert compare_versions("1.0_rc1~abc-r1", "1.0~abc-r1", "apk") == -1


def test_which_strings_are_apk_versions() -> None:
    assert is_apk_version("3.0.0_pre20250606-r1")
    assert is_apk_version("2024.03.29~eb9bcb64-r1")
    assert not is_apk_version("2023-05-23-75a3b870-1")
    assert not is_apk_version("1:2.0-1")
    assert not is_apk_version("git-24.264.56960-63ba3cb")
