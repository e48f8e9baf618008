"""Parsing make's output: fed the real output formats of openwrt-formats.md."""

from builds import make_output

MAKE_INFO = """\
Current Target: "ath79/generic"
Current Architecture: "mips"
Current Revision: "r24106-10cc5fcd00"
Default Packages: base-files ca-bundle dropbear fstools libc libgcc opkg uci busybox
Available Profiles:

8dev_carambola2:
    8devices Carambola2
    Packages: kmod-usb-chipidea2
    hasImageMetadata: 1
    SupportedDevices: 8dev,carambola2 carambola2
tplink_archer-c7-v5:
    TP-Link Archer C7 v5
    Packages: kmod-ath10k-ct ath10k-firmware-qca988x-ct -wpad-basic-mbedtls wpad-mbedtls
    hasImageMetadata: 1
    SupportedDevices: tplink,archer-c7-v5
generic_no_title:
    Packages:
    hasImageMetadata: 0
"""

OLD_MAKE_INFO = """\
Current Target: "ath79 (Generic)"
Default Packages: base-files libc
Available Profiles:

Default:
    Default Profile (all drivers)
    Packages: kmod-usb-core
"""


def test_it_reads_the_revision_and_default_packages_from_make_info():
    info = make_output.parse_make_info(MAKE_INFO)
    assert info.revision == "r24106-10cc5fcd00"
    assert info.default_packages[:3] == ["base-files", "ca-bundle", "dropbear"]
    assert "busybox" in info.default_packages


def test_it_reads_each_profiles_packages_from_make_info():
    info = make_output.parse_make_info(MAKE_INFO)
    assert set(info.profile_packages) == {
        "8dev_carambola2",
        "tplink_archer-c7-v5",
        "generic_no_title",
    }
    assert info.profile_packages["8dev_carambola2"] == ["kmod-usb-chipidea2"]
    assert "-wpad-basic-mbedtls" in info.profile_packages["tplink_archer-c7-v5"]
    assert info.profile_packages["generic_no_title"] == []


def test_it_reads_make_info_of_old_imagebuilders_without_a_revision():
    info = make_output.parse_make_info(OLD_MAKE_INFO)
    assert info.revision == ""
    assert info.profile_packages == {"Default": ["kmod-usb-core"]}


def test_it_parses_an_opkg_manifest():
    manifest = make_output.parse_manifest(
        "base-files - 1655~edfe589811-r1\n"
        "kernel - 6.6.86~422144fea623288f7402e1a9a15724c8-r1\n"
        "kmod-usb2 - 4.14.169-1\n"
        "libubox20240329 - 2024.03.29~eb9bcb64-r1\n"
    )
    assert manifest == {
        "base-files": "1655~edfe589811-r1",
        "kernel": "6.6.86~422144fea623288f7402e1a9a15724c8-r1",
        "kmod-usb2": "4.14.169-1",
        "libubox20240329": "2024.03.29~eb9bcb64-r1",
    }


def test_it_parses_an_old_apk_manifest():
    manifest = make_output.parse_manifest(
        "apk-mbedtls 3.0.0_pre20250208-r1\nbase-files 1655~edfe589811\n"
    )
    assert manifest == {"apk-mbedtls": "3.0.0_pre20250208-r1", "base-files": "1655~edfe589811"}


def test_it_skips_stray_lines_in_a_manifest():
    manifest = make_output.parse_manifest("Signature check passed.\nbusybox - 1.36.1-r2\n\n")
    assert manifest == {"busybox": "1.36.1-r2"}


def test_it_names_missing_packages_in_opkg_errors():
    stderr = (
        "Collected errors:\n"
        " * opkg_install_cmd: Cannot install package ppp-mod-pppoe.\n"
        " * opkg_install_cmd: Cannot install package luci-app-nothing.\n"
    )
    errors = make_output.parse_package_errors(stderr)
    assert errors.detail == (
        "Impossible package selection: missing (luci-app-nothing, ppp-mod-pppoe)"
    )


def test_it_names_conflicting_packages_in_opkg_errors():
    stderr = (
        "Collected errors:\n"
        " * check_conflicts_for: The following packages conflict with dnsmasq-full:\n"
        " * check_conflicts_for: \tdnsmasq *\n"
        " * opkg_install_cmd: Cannot install package dnsmasq-full.\n"
    )
    errors = make_output.parse_package_errors(stderr)
    assert errors.missing == []
    assert errors.detail == "Impossible package selection: conflicts (dnsmasq, dnsmasq-full)"


def test_it_names_file_clashes_in_opkg_errors_as_conflicts():
    stderr = (
        "Collected errors:\n"
        " * check_data_file_clashes: Package wpad wants to install file /usr/sbin/hostapd\n"
        "\tBut that file is already provided by package  * wpad-basic\n"
        " * opkg_install_cmd: Cannot install package wpad.\n"
    )
    assert make_output.parse_package_errors(stderr).conflicts == ["wpad", "wpad-basic"]


def test_it_names_missing_packages_in_apk_errors():
    stderr = (
        "ERROR: unable to select packages:\n"
        "  opkg (no such package):\n"
        "    required by: world[opkg]\n"
    )
    assert (
        make_output.parse_package_errors(stderr).detail
        == "Impossible package selection: missing (opkg)"
    )


def test_it_names_conflicting_packages_in_apk_errors():
    stderr = (
        "ERROR: unable to select packages:\n"
        "  nftables-json:\n"
        "    conflicts: nftables-nojson[nftables=1.1.6-r1]\n"
        "    satisfies: world[nftables-json]\n"
        "  nftables-nojson:\n"
        "    conflicts: nftables-json[nftables=1.1.6-r1]\n"
        "    satisfies: world[nftables-nojson]\n"
    )
    errors = make_output.parse_package_errors(stderr)
    assert errors.detail == (
        "Impossible package selection: conflicts (nftables-json, nftables-nojson)"
    )


def test_it_reports_missing_and_conflicting_packages_together():
    stderr = (
        "ERROR: unable to select packages:\n"
        "  foo (no such package):\n"
        "    required by: world[foo]\n"
        "  a:\n"
        "    conflicts: b[x=1]\n"
    )
    assert make_output.parse_package_errors(stderr).detail == (
        "Impossible package selection: missing (foo) conflicts (a, b)"
    )


def test_it_finds_no_package_errors_in_other_failures():
    errors = make_output.parse_package_errors(
        "make[2]: *** [Makefile:225: package_install] Error 1\n"
    )
    assert not errors
    assert errors.detail == "Impossible package selection"


def test_it_accepts_a_manifest_with_the_requested_versions():
    manifest = {"busybox": "1.36.1-r2", "dropbear": "2024.86-r1"}
    assert make_output.check_packages_versions(manifest, {"busybox": "1.36.1-r2"}) == ""


def test_it_reports_requested_packages_missing_from_the_manifest():
    problem = make_output.check_packages_versions({"busybox": "1"}, {"luci": "1", "busybox": "1"})
    assert problem == "Impossible package selection: missing (luci)"


def test_it_reports_requested_versions_that_differ_from_the_manifest():
    problem = make_output.check_packages_versions(
        {"busybox": "1.37.0-r1"}, {"busybox": "1.36.1-r2"}
    )
    assert "busybox 1.37.0-r1 (requested 1.36.1-r2)" in problem
    assert problem.startswith("Impossible package selection")


def test_it_removes_default_packages_an_absolute_list_lacks():
    packages = make_output.diff_packages(
        ["luci", "dropbear", "-ppp"], {"dropbear", "ppp", "odhcpd"}
    )
    assert packages == ["-odhcpd", "-ppp", "luci", "dropbear"]


def test_it_sees_the_image_too_big_warning_and_the_full_ext4():
    assert make_output.image_too_big(
        "    WARNING: Image file /b/x.bin is too big: 8126469 > 7995392\n"
    )
    assert make_output.image_too_big(
        "error: ext4_allocate_best_fit_partial: failed to allocate 28 blocks, out of space?\n"
    )
    assert not make_output.image_too_big("Calculating checksums...\n")


def test_it_keeps_the_end_of_long_output():
    text = "x" * 100 + "the error"
    kept = make_output.bounded(text, limit=20)
    assert kept.endswith("the error")
    assert "earlier characters left out" in kept
