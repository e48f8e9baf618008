"""apply_package_changes: each kind of rule, their scopes, chaining, order, idempotence,
the per-process copy of the rules, and the rules openwrt/asu applies, seeded as rows."""

import pytest
from django.core.exceptions import ValidationError

from packages.changes import apply_package_changes
from packages.models import Package, PackageChange, PackageIndex
from targets.models import Version
from tests.packages.rules import rule, scope

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_seeded_rules():
    """Only the rules a test makes: the seeded ones would fire on common names."""
    PackageChange.objects.all().delete()


def applied(packages, *where):
    return apply_package_changes(packages, *where)[0]


# Each kind -----------------------------------------------------------------------------


def test_a_rename_replaces_the_package_in_place(no_seeded_rules):
    rule("rename", "auc", "owut")
    assert applied(["luci", "auc", "htop"], *scope()) == ["luci", "owut", "htop"]


def test_a_rename_drops_the_old_name_when_the_new_one_is_already_there(no_seeded_rules):
    rule("rename", "auc", "owut")
    assert applied(["owut", "auc"], *scope()) == ["owut"]


def test_a_rename_keeps_a_removal_a_removal(no_seeded_rules):
    rule("rename", "auc", "owut")
    assert applied(["-auc", "luci"], *scope()) == ["-owut", "luci"]


def test_an_addition_appends_the_package_once(no_seeded_rules):
    rule("add", target="fitblk")
    assert applied(["luci"], *scope()) == ["luci", "fitblk"]
    assert applied(["fitblk", "luci"], *scope()) == ["fitblk", "luci"]


def test_an_addition_leaves_a_package_the_request_removes(no_seeded_rules):
    rule("add", target="fitblk")
    assert applied(["-fitblk"], *scope()) == ["-fitblk"]


def test_a_removal_drops_the_package(no_seeded_rules):
    rule("remove", "kmod-nf-conntrack6")
    packages = ["kmod-nf-conntrack", "kmod-nf-conntrack6", "luci", "-kmod-nf-conntrack6"]
    assert applied(packages, *scope()) == ["kmod-nf-conntrack", "luci"]


def test_a_pattern_rename_keeps_what_the_star_stands_for(no_seeded_rules):
    rule("rename", "luci-i18n-opkg-*", "luci-i18n-package-manager-*")
    packages = ["luci-i18n-opkg-ko", "luci-i18n-xinetd-lt", "luci-i18n-opkg-zh-cn"]
    assert applied(packages, *scope()) == [
        "luci-i18n-package-manager-ko",
        "luci-i18n-xinetd-lt",
        "luci-i18n-package-manager-zh-cn",
    ]


def test_a_pattern_removal_drops_every_match(no_seeded_rules):
    rule("remove", "luci-i18n-*-en")
    packages = ["luci-i18n-base-en", "luci-i18n-ddns-en", "luci-i18n-base-de", "luci-app-en"]
    assert applied(packages, *scope()) == ["luci-i18n-base-de", "luci-app-en"]


def test_a_condition_limits_the_rule_to_lists_with_that_package(no_seeded_rules):
    rule("add", target="luci-i18n-package-manager-de", only_if="luci-i18n-base-de")
    assert applied(["luci"], *scope()) == ["luci"]
    assert applied(["luci-i18n-base-de"], *scope()) == [
        "luci-i18n-base-de",
        "luci-i18n-package-manager-de",
    ]


def test_each_applied_rule_says_what_it_did(no_seeded_rules):
    rename = rule("rename", "luci-i18n-opkg-*", "luci-i18n-package-manager-*", note="renamed")
    removal = rule("remove", "kmod-nf-conntrack6", note="gone")
    addition = rule("add", target="fitblk", note="needed")
    _, rules = apply_package_changes(["luci-i18n-opkg-de", "kmod-nf-conntrack6"], *scope())
    assert rules == [
        {
            "id": rename.pk,
            "kind": "rename",
            "source": "luci-i18n-opkg-de",
            "target": "luci-i18n-package-manager-de",
            "note": "renamed",
        },
        {"id": removal.pk, "kind": "remove", "source": "kmod-nf-conntrack6", "target": None,
         "note": "gone"},
        {"id": addition.pk, "kind": "add", "source": None, "target": "fitblk", "note": "needed"},
    ]  # fmt: skip


def test_the_list_given_is_not_changed(no_seeded_rules):
    rule("rename", "auc", "owut")
    packages = ["auc"]
    apply_package_changes(packages, *scope())
    assert packages == ["auc"]


# Scopes --------------------------------------------------------------------------------


def test_a_branch_rule_covers_its_releases_and_its_snapshot(no_seeded_rules):
    rule("add", target="fitblk", branch="24.10")
    assert "fitblk" in applied([], *scope("24.10.1"))
    assert "fitblk" in applied([], *scope("24.10-SNAPSHOT"))
    assert "fitblk" not in applied([], *scope("25.12.0"))
    assert "fitblk" not in applied([], *scope("23.05.5"))
    assert "fitblk" not in applied([], *scope("SNAPSHOT"))


def test_a_branch_rule_marked_so_covers_later_branches(no_seeded_rules):
    rule("add", target="fitblk", branch="24.10", later_branches=True)
    assert "fitblk" in applied([], *scope("24.10.1"))
    assert "fitblk" in applied([], *scope("25.12.0"))
    assert "fitblk" in applied([], *scope("SNAPSHOT"))
    assert "fitblk" not in applied([], *scope("23.05.5"))


def test_a_revision_rule_counts_a_release_as_its_branch_off(no_seeded_rules):
    # 24.10.1 is r28597, past master's r28056, but the 24.10 branch left master at r27990.
    rule("rename", "opkg", "apk-mbedtls", revision=28056)
    assert applied(["opkg"], *scope("24.10.1", version_code="r28597-0425664679")) == ["opkg"]
    assert applied(["opkg"], *scope("25.12.0", version_code="r32402-8fd5bba1b2")) == ["apk-mbedtls"]


def test_a_revision_rule_counts_a_snapshot_as_its_target_revision(no_seeded_rules):
    rule("rename", "opkg", "apk-mbedtls", revision=28056)
    assert applied(["opkg"], *scope("SNAPSHOT", version_code="r28000-0123456789")) == ["opkg"]
    assert applied(["opkg"], *scope("SNAPSHOT", version_code="r28056-0123456789")) == [
        "apk-mbedtls"
    ]


def test_a_snapshot_of_unknown_revision_counts_as_newest(no_seeded_rules):
    rule("rename", "opkg", "apk-mbedtls", revision=28056)
    assert applied(["opkg"], *scope("SNAPSHOT", version_code="")) == ["apk-mbedtls"]


def test_a_rule_limited_to_targets_skips_the_others(no_seeded_rules):
    rule("add", target="fitblk", targets=["mediatek/filogic", "mediatek/mt7622"])
    assert "fitblk" in applied([], *scope(target="mediatek/filogic", profile="glinet_gl-mt6000"))
    assert "fitblk" not in applied([], *scope(target="ath79/generic"))


def test_a_rule_limited_to_profiles_skips_the_others(no_seeded_rules):
    rule("add", target="kmod-switch-rtl8366rb", profiles=["buffalo_wzr-hp-g300nh-rb"])
    version, target, board = scope(profile="buffalo_wzr-hp-g300nh-rb")
    _, _, other = scope(profile="tplink_archer-c7-v5")
    assert applied([], version, target, board) == ["kmod-switch-rtl8366rb"]
    assert applied([], version, target, other) == []
    assert applied([], version, target, None) == []


def test_a_disabled_rule_does_nothing(no_seeded_rules):
    rule("rename", "auc", "owut", enabled=False)
    assert applied(["auc"], *scope()) == ["auc"]


def test_a_rule_the_server_does_not_apply_is_left_to_clients(no_seeded_rules):
    rule("rename", "firewall", "firewall4", revision=18611, apply_on_build=False, publish=True)
    assert applied(["firewall"], *scope("23.05.5")) == ["firewall"]


# Chaining, order, idempotence ----------------------------------------------------------


def test_rules_chain_across_releases(no_seeded_rules):
    rule("rename", "b-pkg", "c-pkg", branch="25.12", later_branches=True)
    rule("rename", "a-pkg", "b-pkg", branch="24.10", later_branches=True)
    assert applied(["a-pkg"], *scope("24.10.1")) == ["b-pkg"]
    assert applied(["a-pkg"], *scope("25.12.0")) == ["c-pkg"]


def test_rules_run_in_their_order(no_seeded_rules):
    rule("rename", "auc", "owut-late", order=20)
    rule("rename", "auc", "owut", order=10)
    assert applied(["auc"], *scope()) == ["owut"]


def test_equal_orders_run_by_id(no_seeded_rules):
    rule("rename", "auc", "owut-first")
    rule("rename", "auc", "owut-second")
    assert applied(["auc"], *scope()) == ["owut-first"]


def test_applying_the_rules_again_changes_nothing(no_seeded_rules):
    rule("remove", "x-pkg")
    rule("rename", "y-pkg", "x-pkg")  # brings back what the rule before removed
    rule("rename", "luci-i18n-opkg-*", "luci-i18n-package-manager-*")
    rule("remove", "luci-i18n-*-en")
    rule("add", target="fitblk")
    where = scope()
    once, _ = apply_package_changes(["x-pkg", "y-pkg", "luci-i18n-opkg-en", "auc"], *where)
    twice, rules = apply_package_changes(once, *where)
    assert once == ["auc", "fitblk"]
    assert twice == once
    assert rules == []


@pytest.mark.parametrize(
    "version,target,profile",
    [
        ("23.05.5", "mediatek/mt7622", "linksys_e8450"),
        ("24.10.1", "mediatek/filogic", "glinet_gl-mt6000"),
        ("25.12.0", "lantiq/xrx200", "avm_fritz7490"),
        ("SNAPSHOT", "ath79/generic", "tplink_archer-c7-v5"),
    ],
)
def test_the_seeded_rules_are_idempotent(version, target, profile):
    where = scope(version, target, profile)
    packages = ["auc", "opkg", "luci-app-opkg", "luci-i18n-opkg-de", "luci-i18n-base-en",
                "kmod-nft-nat6", "kmod-nf-conntrack6", "kmod-lib-crc32c", "luci"]  # fmt: skip
    once, _ = apply_package_changes(packages, *where)
    assert apply_package_changes(once, *where) == (once, [])


def test_rules_that_undo_each_other_still_stop(no_seeded_rules):
    rule("rename", "a-pkg", "b-pkg")
    rule("rename", "b-pkg", "a-pkg")
    packages, applied = apply_package_changes(["a-pkg"], *scope())
    # Each pass renames a-pkg to b-pkg and back; the passes run out with a-pkg.
    assert packages == ["a-pkg"]
    assert len(applied) == 12  # two renames in each of the 2 * 2 + 2 passes


# The copy of the rules each process keeps ----------------------------------------------


def test_unchanged_rules_cost_one_query(no_seeded_rules, django_assert_num_queries):
    rule("rename", "auc", "owut")
    version, target, profile = scope()
    version = Version.objects.get(pk=version.pk)  # without its branch loaded
    apply_package_changes(["auc"], version, target, profile)
    with django_assert_num_queries(1):
        assert applied(["auc"], version, target, profile) == ["owut"]


def test_an_edit_takes_effect_at_once(no_seeded_rules):
    change = rule("rename", "auc", "owut")
    where = scope()
    assert applied(["auc"], *where) == ["owut"]
    change.target = "owut-ng"
    change.save()
    assert applied(["auc"], *where) == ["owut-ng"]
    change.delete()
    assert applied(["auc"], *where) == ["auc"]


def test_a_disabled_rule_is_dropped_at_once(no_seeded_rules):
    change = rule("rename", "auc", "owut")
    where = scope()
    applied(["auc"], *where)
    PackageChange.objects.filter(pk=change.pk).update(enabled=False)
    assert applied(["auc"], *where) == ["auc"]


# The rules of openwrt/asu, seeded by the data migration ----------------------------------


def test_a_2410_request_for_auc_gets_owut():
    packages, rules = apply_package_changes(["luci", "auc"], *scope("24.10.1"))
    assert packages == ["luci", "owut"]
    assert [(r["kind"], r["source"], r["target"]) for r in rules] == [("rename", "auc", "owut")]


def test_a_2305_request_keeps_auc():
    assert applied(["auc"], *scope("23.05.5", version_code="r24106-10cc5fcd00")) == ["auc"]


def test_2305_gives_mt7622_its_wireless_firmware():
    packages = applied(["ubus"], *scope("23.05.5", "mediatek/mt7622", "linksys_e8450"))
    assert packages == ["ubus", "kmod-mt7622-firmware"]
    assert applied(["ubus"], *scope("24.10.1", "mediatek/mt7622", "linksys_e8450")) == [
        "ubus",
        "fitblk",
    ]


def test_2305_gives_the_rtl8366_boards_their_switch_drivers():
    assert applied([], *scope("23.05.5", profile="buffalo_wzr-hp-g300nh-s")) == [
        "kmod-switch-rtl8366s"
    ]
    assert applied([], *scope("23.05.5", profile="buffalo_wzr-hp-g300nh-rb")) == [
        "kmod-switch-rtl8366rb"
    ]
    assert applied([], *scope("23.05.5", profile="tplink_archer-c7-v5")) == []


def test_2410_gives_mediatek_fitblk_and_the_archer_c6_v2_its_wifi_data():
    assert "fitblk" in applied([], *scope("24.10.1", "mediatek/filogic", "glinet_gl-mt6000"))
    assert applied([], *scope("24.10.1", "ath79/generic", "tplink_archer-c6-v2")) == [
        "ipq-wifi-tplink_archer-c6-v2"
    ]


def test_2512_gives_marvell_switch_boards_the_dsa_driver():
    assert applied(["luci"], *scope("25.12.0", "kirkwood/generic", "checkpoint_l-50")) == [
        "luci",
        "kmod-dsa-mv88e6xxx",
    ]
    assert "kmod-dsa-mv88e6xxx" in applied(
        [], *scope("25.12.0", "mvebu/cortexa72", "mikrotik_rb5009")
    )
    assert applied([], *scope("25.12.0", "kirkwood/generic", "other_board")) == []
    assert applied([], *scope("24.10.1", "kirkwood/generic", "checkpoint_l-50")) == []


def test_2512_gives_lantiq_its_switch_driver_and_phy_firmware():
    packages = applied(["luci"], *scope("25.12.0", "lantiq/xrx200", "arcadyan_arv7519rw22"))
    assert sorted(packages) == [
        "kmod-dsa-gswip",
        "luci",
        "xrx200-rev1.1-phy22f-firmware",
        "xrx200-rev1.2-phy22f-firmware",
    ]
    legacy = applied([], *scope("25.12.0", "lantiq/xrx200_legacy", "tplink_tdw8970"))
    assert sorted(legacy) == ["xrx200-rev1.1-phy11g-firmware", "xrx200-rev1.2-phy11g-firmware"]


def test_2512_gives_bluetooth_boards_hci_uart_and_mikrotik_ag71xx_legacy():
    assert applied([], *scope("25.12.0", "qualcommax/ipq807x", "linksys_mx4200v1")) == [
        "kmod-hci-uart"
    ]
    assert applied([], *scope("25.12.0", "ath79/mikrotik", "mikrotik_routerboard-493g")) == [
        "kmod-ag71xx-legacy"
    ]


def test_snapshot_drops_conntrack6_and_crc32c():
    packages = ["kmod-nf-conntrack", "kmod-nf-conntrack6", "kmod-lib-crc32c", "luci"]
    assert applied(packages, *scope("SNAPSHOT")) == ["kmod-nf-conntrack", "luci"]
    assert applied(packages, *scope("25.12.0")) == packages


def test_language_packs_follow_the_package_manager_rename_from_2410_on():
    packages = ["luci-i18n-opkg-de", "luci-app-opkg"]
    assert applied(packages, *scope("23.05.5")) == packages
    renamed = ["luci-i18n-package-manager-de", "luci-app-package-manager"]
    assert applied(packages, *scope("24.10.1")) == renamed
    assert applied(packages, *scope("SNAPSHOT")) == renamed


def test_english_language_packs_are_dropped_from_2305_on():
    packages = ["luci-i18n-base-en", "luci-i18n-base-de"]
    assert applied(packages, *scope("23.05.5")) == ["luci-i18n-base-de"]
    assert applied(packages, *scope("22.03.7")) == packages


def test_opkg_becomes_apk_only_where_apk_is():
    assert applied(["opkg"], *scope("24.10.1")) == ["opkg"]
    assert applied(["opkg"], *scope("25.12.0")) == ["apk-mbedtls"]
    assert applied(["opkg"], *scope("SNAPSHOT", version_code="r33001-0123456789")) == [
        "apk-mbedtls"
    ]


def test_removed_packages_are_dropped_and_firewall_is_left_to_the_client():
    packages = ["firewall", "kmod-nft-nat6", "luci-app-diag-core"]
    assert applied(packages, *scope("23.05.5")) == ["firewall", "luci-app-diag-core"]
    assert applied(packages, *scope("24.10.1")) == ["firewall"]


# The model -----------------------------------------------------------------------------


def test_a_rule_reads_as_what_it_does_and_where():
    assert str(rule("rename", "auc", "owut", revision=26792)) == "auc → owut (from r26792)"
    assert (
        str(rule("add", target="fitblk", branch="24.10", targets=["mediatek/filogic"]))
        == "add fitblk (24.10, mediatek/filogic)"
    )
    assert (
        str(rule("remove", "luci-i18n-*-en", branch="23.05", later_branches=True))
        == "remove luci-i18n-*-en (23.05 and later)"
    )
    assert str(rule("add", target="x", profiles=["a", "b"], only_if="y")) == (
        "add x (2 profiles, if y is present)"
    )
    assert str(rule("remove", "kmod-foo")) == "remove kmod-foo (everywhere)"


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"kind": "rename", "source": "auc"}, "target"),
        ({"kind": "rename", "source": "auc", "target": "auc"}, "target"),
        ({"kind": "add", "source": "auc", "target": "owut"}, "source"),
        ({"kind": "remove", "target": "owut"}, "source"),
        ({"kind": "remove", "source": "-auc"}, "source"),
        ({"kind": "remove", "source": "a b"}, "source"),
        ({"kind": "remove", "source": "a*b*"}, "source"),
        ({"kind": "add", "target": "luci-i18n-*"}, "target"),
        ({"kind": "rename", "source": "luci-i18n-opkg-*", "target": "luci"}, "target"),
        ({"kind": "add", "target": "x", "targets": ["ath79"]}, "targets"),
        ({"kind": "add", "target": "x", "profiles": ["a b"]}, "profiles"),
        ({"kind": "add", "target": "x", "only_if": "y*"}, "only_if"),
        ({"kind": "add", "target": "x", "later_branches": True}, "later_branches"),
        ({"kind": "add", "target": "x", "publish": True}, "publish"),
        ({"kind": "add", "target": "x", "publish": True, "revision": 1,
          "targets": ["ath79/generic"]}, "publish"),
    ],
)  # fmt: skip
def test_a_rule_that_cannot_work_is_refused(fields, field):
    with pytest.raises(ValidationError) as error:
        PackageChange(**fields).full_clean()
    assert field in error.value.message_dict


def test_the_name_a_rule_brings_in_is_checked_against_the_branch_indexes(no_seeded_rules):
    version, target, _ = scope("24.10.1")
    index = PackageIndex.objects.create(
        version=version, kind="feed", arch_packages="mips_24kc", name="base", url="u1"
    )
    Package.objects.create(index=index, name="owut", version="1")
    Package.objects.create(index=index, name="luci-i18n-package-manager-de", version="1")
    assert rule("rename", "auc", "owut", branch="24.10").missing_from_indexes() == []
    assert rule("rename", "auc", "owutt", branch="24.10").missing_from_indexes() == ["24.10"]
    pattern = rule("rename", "luci-i18n-opkg-*", "luci-i18n-package-manager-*", branch="24.10")
    assert pattern.missing_from_indexes() == []
    # Branches whose indexes were never read prove nothing.
    assert rule("add", target="owutt", revision=18611).missing_from_indexes() == ["24.10"]
    assert rule("remove", "owutt").missing_from_indexes() == []
