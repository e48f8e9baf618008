"""The package changes openwrt/asu applies today, entered as rows maintainers can edit.

Facts gathered from openwrt/asu (its published revision list, its per-version,
per-target and per-profile build-time changes, its language-pack renames) and the
pull requests that added them. Scopes follow what ASU does: a rule for "24.10" covers
24.10.x and 24.10-SNAPSHOT only, unless it says "and later".

Rules that ASU only publishes to clients are applied to builds here too when the old
package is gone from the newer feeds (apply_on_build), so a request from a router
that still lists it builds instead of failing. Renames where the old package still
exists (firewall, the wolfssl variants) stay a client's choice.
"""

from django.db import migrations

OPENWRT_COMMIT = "https://github.com/openwrt/openwrt/commit/"
ASU_PULL = "https://github.com/openwrt/asu/pull/"

# kind, source, target, revision, mandatory, apply_on_build, note, link
PUBLISHED = [
    (
        "rename",
        "firewall",
        "firewall4",
        18611,
        False,
        False,
        "firewall4 (nftables) replaced firewall (fw3, iptables) as the default firewall.",
        "",
    ),
    (
        "remove",
        "kmod-nft-nat6",
        "",
        20282,
        True,
        True,
        "kmod-nft-nat6 is gone: IPv6 NAT for nftables is part of kmod-nft-nat.",
        "",
    ),
    (
        "rename",
        "libustream-wolfssl",
        "libustream-mbedtls",
        21994,
        False,
        False,
        "The default TLS library moved from wolfSSL to mbed TLS.",
        "",
    ),
    (
        "rename",
        "px5g-wolfssl",
        "px5g-mbedtls",
        21994,
        False,
        False,
        "The default TLS library moved from wolfSSL to mbed TLS.",
        "",
    ),
    (
        "rename",
        "wpad-basic-wolfssl",
        "wpad-basic-mbedtls",
        21994,
        False,
        False,
        "The default TLS library moved from wolfSSL to mbed TLS.",
        "",
    ),
    (
        "remove",
        "luci-app-diag-core",
        "",
        25984,
        True,
        True,
        "luci-app-diag-core was removed from the LuCI feed.",
        ASU_PULL + "1186",
    ),
    (
        "rename",
        "auc",
        "owut",
        26792,
        False,
        True,
        "auc was replaced by owut; from 24.10 on auc no longer exists.",
        "",
    ),
    (
        "rename",
        "luci-app-opkg",
        "luci-app-package-manager",
        27897,
        False,
        True,
        "The LuCI package manager app was renamed for the move to apk.",
        "",
    ),
    (
        "rename",
        "opkg",
        "apk-mbedtls",
        28056,
        False,
        True,
        "The package manager changed from opkg to apk.",
        "",
    ),
]

# kind, source, target, branch, later_branches, targets, profiles, note, link, order
SCOPED = [
    (
        "rename",
        "luci-i18n-opkg-*",
        "luci-i18n-package-manager-*",
        "24.10",
        True,
        [],
        [],
        "The language packs of luci-app-opkg follow its rename to luci-app-package-manager.",
        "",
        20,
    ),
    (
        "remove",
        "luci-i18n-*-en",
        "",
        "23.05",
        True,
        [],
        [],
        "LuCI dropped its English language packs (English is built in); old package "
        "lists still name them.",
        "https://github.com/openwrt/luci/commit/94a1821c3b6ec01817e53a8a01a4cf0b7692ac42",
        30,
    ),
    # 23.05
    (
        "add",
        "",
        "kmod-mt7622-firmware",
        "23.05",
        False,
        ["mediatek/mt7622"],
        [],
        "The MT7622 wireless firmware is a package of its own in 23.05.",
        "",
        50,
    ),
    (
        "add",
        "",
        "kmod-switch-rtl8366s",
        "23.05",
        False,
        ["ath79/generic"],
        [
            "buffalo_wzr-hp-g300nh-s",
            "dlink_dir-825-b1",
            "netgear_wndr3700",
            "netgear_wndr3700-v2",
            "netgear_wndr3800",
            "netgear_wndr3800ch",
            "netgear_wndrmac-v1",
            "netgear_wndrmac-v2",
            "trendnet_tew-673gru",
        ],
        "The RTL8366S switch driver became a package these boards need.",
        "",
        50,
    ),
    (
        "add",
        "",
        "kmod-switch-rtl8366rb",
        "23.05",
        False,
        ["ath79/generic"],
        ["buffalo_wzr-hp-g300nh-rb"],
        "The RTL8366RB switch driver became a package this board needs.",
        "",
        50,
    ),
    # 24.10
    (
        "add",
        "",
        "ipq-wifi-tplink_archer-c6-v2",
        "24.10",
        False,
        [],
        ["tplink_archer-c6-v2"],
        "The board's wireless calibration data is a package of its own in 24.10.",
        "",
        50,
    ),
    (
        "add",
        "",
        "fitblk",
        "24.10",
        False,
        ["mediatek/filogic", "mediatek/mt7622", "mediatek/mt7623"],
        [],
        "fitblk, which mounts the root filesystem inside FIT images, is needed on MediaTek "
        "boards from 24.10 on.",
        "",
        50,
    ),
]

MV88E6XXX_NOTE = (
    "The mv88e6xxx DSA switch driver is no longer built into the kernel: add its package."
)
SCOPED += [
    (
        "add",
        "",
        "kmod-dsa-mv88e6xxx",
        "25.12",
        False,
        [target],
        profiles,
        MV88E6XXX_NOTE,
        OPENWRT_COMMIT + commit,
        50,
    )
    for target, commit, profiles in [
        (
            "kirkwood/generic",
            "8a7239009c5f4b28b696042b70ed1f8f89902915",
            [
                "checkpoint_l-50",
                "endian_4i-edge-200",
                "linksys_e4200-v2",
                "linksys_ea3500",
                "linksys_ea4500",
            ],
        ),
        (
            "mvebu/cortexa9",
            "eaa82118eadfd495f8512d55c01c1935b8b42c51",
            [
                "cznic_turris-omnia",
                "fortinet_fg-30e",
                "fortinet_fwf-30e",
                "fortinet_fg-50e",
                "fortinet_fg-51e",
                "fortinet_fg-52e",
                "fortinet_fwf-50e-2r",
                "fortinet_fwf-51e",
                "iij_sa-w2",
                "linksys_wrt1200ac",
                "linksys_wrt1900acs",
                "linksys_wrt1900ac-v1",
                "linksys_wrt1900ac-v2",
                "linksys_wrt3200acm",
                "linksys_wrt32x",
                "marvell_a370-rd",
            ],
        ),
        (
            "mvebu/cortexa53",
            "eaa82118eadfd495f8512d55c01c1935b8b42c51",
            [
                "glinet_gl-mv1000",
                "globalscale_espressobin",
                "globalscale_espressobin-emmc",
                "globalscale_espressobin-ultra",
                "globalscale_espressobin-v7",
                "globalscale_espressobin-v7-emmc",
                "methode_udpu",
            ],
        ),
        (
            "mvebu/cortexa72",
            "eaa82118eadfd495f8512d55c01c1935b8b42c51",
            [
                "checkpoint_v-80",
                "checkpoint_v-81",
                "globalscale_mochabin",
                "mikrotik_rb5009",
                "solidrun_clearfog-pro",
            ],
        ),
    ]
]

SCOPED.append(
    (
        "add",
        "",
        "kmod-dsa-gswip",
        "25.12",
        False,
        ["lantiq/xrx200"],
        [],
        "The Lantiq xRx200 switch driver is no longer built into the kernel: add its package.",
        OPENWRT_COMMIT + "62bf0287326dcfab4596d5f4cad77cd9e7f8f03b",
        50,
    )
)

LANTIQ_PHY22F = {
    "lantiq/xrx200": [
        "arcadyan_arv7519rw22",
        "arcadyan_vgv7510kw22-brn",
        "arcadyan_vgv7510kw22-nor",
        "avm_fritz7412",
        "avm_fritz7430",
        "buffalo_wbmr-300hpd",
    ],
    "lantiq/xrx200_legacy": ["alphanetworks_asl56026", "netgear_dm200"],
}
LANTIQ_PHY11G = {
    "lantiq/xrx200": [
        "tplink_vr200",
        "tplink_vr200v",
        "arcadyan_vgv7519-brn",
        "arcadyan_vgv7519-nor",
        "arcadyan_vrv9510kwac23",
        "avm_fritz3370-rev2-hynix",
        "avm_fritz3370-rev2-micron",
        "avm_fritz3390",
        "avm_fritz3490",
        "avm_fritz3490-micron",
        "avm_fritz5490",
        "avm_fritz5490-micron",
        "avm_fritz7360sl",
        "avm_fritz7360-v2",
        "avm_fritz7362sl",
        "avm_fritz7490",
        "avm_fritz7490-micron",
        "bt_homehub-v5a",
        "lantiq_easy80920-nand",
        "lantiq_easy80920-nor",
        "zyxel_p-2812hnu-f1",
        "zyxel_p-2812hnu-f3",
    ],
    "lantiq/xrx200_legacy": ["tplink_tdw8970", "tplink_tdw8980", "arcadyan_vg3503j"],
}
for phy, boards in (("phy22f", LANTIQ_PHY22F), ("phy11g", LANTIQ_PHY11G)):
    for target, profiles in boards.items():
        for rev in ("1.1", "1.2"):
            SCOPED.append(
                (
                    "add",
                    "",
                    f"xrx200-rev{rev}-{phy}-firmware",
                    "25.12",
                    False,
                    [target],
                    profiles,
                    "The xRx200 PHY firmware is no longer built into the kernel but packaged; "
                    "these boards need it.",
                    OPENWRT_COMMIT + "a18d95f35bd54ade908e8ec3158435859402552d",
                    50,
                )
            )

for target, profiles in (
    ("bcm53xx/generic", ["meraki_mr32"]),
    ("ipq40xx/generic", ["linksys_whw03", "linksys_whw03v2"]),
    ("qualcommax/ipq807x", ["linksys_mx4200v1", "linksys_mx8500", "zyxel_nbg7815"]),
):
    SCOPED.append(
        (
            "add",
            "",
            "kmod-hci-uart",
            "25.12",
            False,
            [target],
            profiles,
            "The Bluetooth HCI UART driver became a package these boards need.",
            OPENWRT_COMMIT + "3b7a92754e81432024b232c7cd7fe32593891ee0",
            50,
        )
    )

SCOPED += [
    (
        "add",
        "",
        "kmod-ag71xx-legacy",
        "25.12",
        False,
        ["ath79/mikrotik"],
        [],
        "From 25.12.5 the ag71xx-legacy Ethernet driver is a module in the default packages "
        "of ath79/mikrotik; without it many boards have no network.",
        ASU_PULL + "1649",
        50,
    ),
    # SNAPSHOT (move to the next release branch when it is created)
    (
        "remove",
        "kmod-nf-conntrack6",
        "",
        "SNAPSHOT",
        False,
        [],
        [],
        "kmod-nf-conntrack6 is gone: IPv6 connection tracking is part of kmod-nf-conntrack.",
        OPENWRT_COMMIT + "5b61a50244ebc82096f5949de294ad69851e1fd6",
        60,
    ),
    (
        "remove",
        "kmod-lib-crc32c",
        "",
        "SNAPSHOT",
        False,
        [],
        [],
        "kmod-lib-crc32c no longer exists with Linux 6.18; it is only ever a dependency, "
        "so dropping it from a request is safe on older kernels too.",
        ASU_PULL + "1647",
        60,
    ),
]


def seed(apps, schema_editor):
    PackageChange = apps.get_model("packages", "PackageChange")
    Branch = apps.get_model("targets", "Branch")
    branches = {branch.name: branch for branch in Branch.objects.all()}
    rows = [
        PackageChange(
            kind=kind,
            source=source,
            target=target,
            revision=revision,
            mandatory=mandatory,
            apply_on_build=apply_on_build,
            publish=True,
            note=note,
            link=link,
            order=10,
        )
        for kind, source, target, revision, mandatory, apply_on_build, note, link in PUBLISHED
    ]
    for kind, source, target, branch, later, targets, profiles, note, link, order in SCOPED:
        if branch not in branches:
            continue  # a branch a maintainer deleted before this ran
        rows.append(
            PackageChange(
                kind=kind,
                source=source,
                target=target,
                branch=branches[branch],
                later_branches=later,
                targets=targets,
                profiles=profiles,
                apply_on_build=True,
                publish=False,
                note=note,
                link=link,
                order=order,
            )
        )
    PackageChange.objects.bulk_create(rows)


def unseed(apps, schema_editor):
    PackageChange = apps.get_model("packages", "PackageChange")
    for kind, source, target, revision, *_ in PUBLISHED:
        PackageChange.objects.filter(
            kind=kind, source=source, target=target, revision=revision
        ).delete()
    for kind, source, target, branch, *_rest in SCOPED:
        PackageChange.objects.filter(
            kind=kind, source=source, target=target, branch__name=branch
        ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("packages", "0002_package_change"),
        ("targets", "0002_seed_branches"),
    ]
    operations = [migrations.RunPython(seed, unseed)]
