"""The stand-in ImageBuilder of the test mirror behaves like a real one (openwrt-formats.md §1)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from tests.fixtures.mirror import build_mirror
from tests.fixtures.serve import serve_directory

TOO_BIG = re.compile(r"^    WARNING: Image file \S+/tmp/(\S+) is too big: (\d+) > (\d+)$", re.M)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="module")
def imagebuilder(
    mirror: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], Path]:
    """unpack(version dir, target) -> the unpacked ImageBuilder, once per module."""
    unpacked: dict[tuple[str, str], Path] = {}

    def unpack(version_dir: str, target: str) -> Path:
        if (version_dir, target) not in unpacked:
            target_dir = mirror / version_dir / "targets" / target
            (tarball,) = target_dir.glob("openwrt-imagebuilder-*")
            dest = tmp_path_factory.mktemp("ib")
            with open(tarball, "rb") as fh:
                if tarball.name.endswith(".zst"):
                    stream = zstandard.ZstdDecompressor().stream_reader(fh)
                    with tarfile.open(fileobj=stream, mode="r|") as tar:
                        tar.extractall(dest, filter="data")
                else:
                    with tarfile.open(fileobj=fh, mode="r:xz") as tar:
                        tar.extractall(dest, filter="data")
            (top,) = dest.iterdir()
            assert top.name == tarball.name.rsplit(".tar.", 1)[0]
            unpacked[(version_dir, target)] = top
        return unpacked[(version_dir, target)]

    return unpack


def make(ib: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run make as a server would: argument list, scrubbed environment."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home or ib)}
    return subprocess.run(
        ["make", *args], cwd=ib, env=env, capture_output=True, text=True, timeout=60
    )


def manifest(ib: Path, *args: str) -> dict[str, str]:
    result = make(ib, "manifest", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == sorted(lines)
    return dict(line.split(" - ") for line in lines)


def read_fwtool_metadata(image: bytes) -> dict:
    """Parse the fwtool trailer independently of the stand-in (openwrt-formats.md §5)."""
    magic, crc, kind, size = struct.unpack(">IIB3xI", image[-16:])
    assert magic == 0x46577830 and kind == 1
    payload = image[-size:-16]
    value = 0xFFFFFFFF
    for byte in image[:-16]:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ (0xEDB88320 if value & 1 else 0)
    assert crc == value
    assert payload[:8] == b"\0" * 8
    return json.loads(payload[8:])


def test_info_follows_the_real_template(imagebuilder: Callable[[str, str], Path]) -> None:
    result = make(imagebuilder("releases/23.05.5", "ath79/generic"), "info")
    assert result.returncode == 0
    assert result.stdout.startswith(
        'Current Target: "ath79/generic"\n'
        'Current Architecture: "mips"\n'
        'Current Revision: "r24106-10cc5fcd00"\n'
        "Default Packages: base-files ca-bundle dropbear fstools libc libgcc libustream-mbedtls"
        " logd mtd netifd opkg uci uclient-fetch urandom-seed urngd busybox procd procd-ujail"
        " procd-seccomp swconfig kmod-gpio-button-hotplug kmod-ath9k uboot-envtools"
        " wpad-basic-mbedtls dnsmasq firewall4 nftables kmod-nft-offload odhcp6c odhcpd-ipv6only"
        " ppp ppp-mod-pppoe\n"
        "Available Profiles:\n"
        "\n"
        "8dev_carambola2:\n"
        "    8devices Carambola2\n"
        "    Packages: kmod-usb-chipidea2\n"
        "    hasImageMetadata: 1\n"
        "    SupportedDevices: 8dev,carambola2 carambola2\n"
    )
    # The parsing ASU does.
    assert re.search(r"tplink_tl-wr841-v9:\n    .+\n    Packages: (.*?)\n", result.stdout)
    x86 = make(imagebuilder("snapshots", "x86/64"), "info").stdout
    assert 'Current Revision: "r33001-0123456789"' in x86
    assert "generic:\n    Generic x86/64\n    Packages: kmod-amazon-ena" in x86
    assert "hasImageMetadata: 0\n" in x86 and "SupportedDevices" not in x86
    assert "apk-mbedtls" in x86.split("\n")[3] and " opkg " not in x86


def test_val_prints_make_variables(imagebuilder: Callable[[str, str], Path]) -> None:
    ib = imagebuilder("releases/24.10.1", "mediatek/filogic")
    assert make(ib, "val.ARCH_PACKAGES").stdout == "aarch64_cortex-a53\n"
    kernel = json.loads((ib / ".targetinfo.json").read_text())["linux_kernel"]
    assert make(ib, "val.LINUX_VERSION").stdout == f"{kernel['version']}\n"
    assert make(ib, "val.LINUX_VERMAGIC").stdout == f"{kernel['vermagic']}\n"
    kernel_build_dir = make(ib, "val.KERNEL_BUILD_DIR").stdout.strip()
    assert kernel_build_dir.endswith(
        "build_dir/target-aarch64_cortex-a53_musl/linux-mediatek_filogic"
    )
    undefined = make(ib, "val.NO_SUCH_VARIABLE")
    assert (undefined.returncode, undefined.stdout) == (0, "")
    assert undefined.stderr == "NO_SUCH_VARIABLE undefined\n"


def test_manifest_agrees_with_the_mirror_indexes(
    mirror: Path, imagebuilder: Callable[[str, str], Path]
) -> None:
    ib = imagebuilder("releases/24.10.1", "ath79/generic")
    installed = manifest(ib, "PROFILE=tplink_archer-c7-v5", "PACKAGES=luci owut")
    assert installed["libubox20240329"] == "2024.03.29~eb9bcb64-r1"
    stripped = manifest(ib, "PROFILE=tplink_archer-c7-v5", "PACKAGES=luci owut", "STRIP_ABI=1")
    assert "libubox20240329" not in stripped and "libubox" in stripped
    index: dict[str, str] = {}
    target_dir = mirror / "releases/24.10.1/targets/ath79/generic"
    for path in [
        target_dir / "packages/index.json",
        *target_dir.glob("kmods/*/index.json"),
        *(mirror / "releases/24.10.1/packages/mips_24kc").glob("*/index.json"),
    ]:
        index.update(json.loads(path.read_text())["packages"])
    assert stripped == {name: index[name] for name in stripped}
    assert {"kernel", "kmod-ath10k-ct", "luci-app-opkg", "owut", "opkg"} <= set(stripped)


def test_manifest_on_apk_releases(imagebuilder: Callable[[str, str], Path]) -> None:
    ib = imagebuilder("releases/25.12.0", "x86/64")
    installed = manifest(ib, "PROFILE=generic", "PACKAGES=luci luci-i18n-package-manager-de")
    assert "apk-mbedtls" in installed and "opkg" not in installed
    assert installed["luci-app-package-manager"] == "26.014.71207~0bcd6b2-r1"
    assert installed["kernel"].startswith("6.12.71~")
    assert "libubox20240329" in installed


def test_pkg_rules_of_the_makefile(imagebuilder: Callable[[str, str], Path]) -> None:
    ib = imagebuilder("releases/24.10.1", "ath79/generic")
    swapped = manifest(ib, "PACKAGES=-dnsmasq dnsmasq-full")
    assert "dnsmasq-full" in swapped and "dnsmasq" not in swapped
    # Removal only affects the list: ppp-mod-pppoe still pulls ppp in.
    assert "ppp" in manifest(ib, "PACKAGES=-ppp")
    assert "ppp" not in manifest(ib, "PACKAGES=-ppp -ppp-mod-pppoe")
    # "-foo foo" removes foo; the profile's own "-uboot-envtools" can be undone.
    assert "htop" not in manifest(ib, "PACKAGES=-htop htop")
    assert "uboot-envtools" not in manifest(ib, "PROFILE=tplink_tl-wr841-v9")
    assert "uboot-envtools" in manifest(ib, "PROFILE=tplink_tl-wr841-v9", "PACKAGES=uboot-envtools")
    # ABI-free names resolve through Provides.
    assert "libncurses6" in manifest(ib, "PACKAGES=libncurses")


def test_missing_packages_fail_like_opkg(imagebuilder: Callable[[str, str], Path]) -> None:
    result = make(imagebuilder("releases/23.05.5", "x86/64"), "manifest", "PACKAGES=nope owut")
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        "Collected errors:\n"
        " * opkg_install_cmd: Cannot install package nope.\n"
        " * opkg_install_cmd: Cannot install package owut.\n"
        "make[2]: *** [Makefile:" in result.stderr
    )
    assert re.search(
        r"make\[2\]: \*\*\* \[Makefile:\d+: package_install\] Error 255\n", result.stderr
    )
    assert result.stderr.endswith("] Error 2\n")
    assert re.search(r"^make: \*\*\* \[Makefile:\d+: manifest\] Error 2$", result.stderr, re.M)


def test_missing_packages_fail_like_apk(imagebuilder: Callable[[str, str], Path]) -> None:
    ib = imagebuilder("snapshots", "ath79/generic")
    result = make(ib, "image", "PROFILE=8dev_carambola2", "PACKAGES=opkg", "BIN_DIR=/nonexistent")
    assert result.returncode == 2
    assert (
        "ERROR: unable to select packages:\n"
        "  opkg (no such package):\n"
        "    required by: world[opkg]\n"
        "make[2]: *** [Makefile:" in result.stderr
    )
    assert re.search(
        r"make\[2\]: \*\*\* \[Makefile:\d+: package_install\] Error 1\n", result.stderr
    )
    assert re.search(r"^make: \*\*\* \[Makefile:\d+: image\] Error 2$", result.stderr, re.M)


def test_conflicting_packages_fail(imagebuilder: Callable[[str, str], Path]) -> None:
    opkg = make(
        imagebuilder("releases/24.10.1", "ath79/generic"), "manifest", "PACKAGES=dnsmasq-full"
    )
    assert opkg.returncode == 2
    assert (
        "Collected errors:\n"
        " * check_conflicts_for: The following packages conflict with dnsmasq-full:\n"
        " * check_conflicts_for: \tdnsmasq *\n"
        " * opkg_install_cmd: Cannot install package dnsmasq-full.\n"
    ) in opkg.stderr
    apk = make(
        imagebuilder("releases/25.12.0", "ath79/generic"), "manifest", "PACKAGES=dnsmasq-full"
    )
    assert apk.returncode == 2
    assert (
        "ERROR: unable to select packages:\n"
        "  dnsmasq-full:\n"
        "    conflicts: dnsmasq[dnsmasq=2.91-r1]\n"
        "    satisfies: world[dnsmasq-full]\n"
        "  dnsmasq:\n"
        "    conflicts: dnsmasq-full[dnsmasq=2.91-r1]\n"
        "    satisfies: world[dnsmasq]\n"
    ) in apk.stderr


def test_unknown_profile(imagebuilder: Callable[[str, str], Path]) -> None:
    ib = imagebuilder("releases/24.10.1", "ath79/generic")
    result = make(ib, "image", "PROFILE=tplink,archer-c7-v5", "BIN_DIR=/nonexistent")
    assert result.returncode == 2
    assert result.stdout == (
        'Profile "tplink,archer-c7-v5" does not exist!\n'
        'Use "make info" to get a list of available profile names.\n'
    )
    assert re.search(r"^make: \*\*\* \[Makefile:\d+: image\] Error 2$", result.stderr, re.M)
    assert make(ib, "manifest", "PROFILE=DEVICE_tplink_archer-c7-v5").returncode == 0


def test_image_writes_images_manifest_profiles_json_and_sums(
    imagebuilder: Callable[[str, str], Path], tmp_path: Path
) -> None:
    ib = imagebuilder("releases/24.10.1", "ath79/generic")
    bin_dir = tmp_path / "bin"
    result = make(
        ib,
        "image",
        "PROFILE=tplink_archer-c7-v5",
        "PACKAGES=luci -dnsmasq dnsmasq-full",
        "EXTRA_IMAGE_NAME=Abc_12 x",
        f"BIN_DIR={bin_dir}",
    )
    assert result.returncode == 0, result.stderr
    prefix = "openwrt-24.10.1-abc-12-x-ath79-generic-tplink_archer-c7-v5"
    assert sorted(p.name for p in bin_dir.iterdir()) == [
        f"{prefix}-squashfs-factory.bin",
        f"{prefix}-squashfs-sysupgrade.bin",
        f"{prefix}.manifest",
        "profiles.json",
        "sha256sums",
    ]
    manifest_text = (bin_dir / f"{prefix}.manifest").read_text()
    expected = make(
        ib, "manifest", "PROFILE=tplink_archer-c7-v5", "PACKAGES=luci -dnsmasq dnsmasq-full"
    ).stdout
    assert manifest_text == expected

    metadata = read_fwtool_metadata((bin_dir / f"{prefix}-squashfs-sysupgrade.bin").read_bytes())
    assert metadata == {
        "metadata_version": "1.1",
        "compat_version": "1.0",
        "supported_devices": ["tplink,archer-c7-v5", "archer-c7-v5"],
        "version": {
            "dist": "OpenWrt",
            "version": "24.10.1",
            "revision": "r28597-0425664679",
            "target": "ath79/generic",
            "board": "tplink_archer-c7-v5",
        },
    }
    assert (bin_dir / f"{prefix}-squashfs-factory.bin").read_bytes()[-16:-12] != b"FWx0"

    doc = json.loads((bin_dir / "profiles.json").read_text())
    assert list(doc["profiles"]) == ["tplink_archer-c7-v5"]
    assert doc["version_code"] == "r28597-0425664679" and doc["linux_kernel"]
    profile = doc["profiles"]["tplink_archer-c7-v5"]
    assert profile["image_prefix"] == prefix
    sums = dict(
        reversed(line.split(" *")) for line in (bin_dir / "sha256sums").read_text().splitlines()
    )
    assert set(sums) == {p.name for p in bin_dir.iterdir()} - {"sha256sums"}
    for image in profile["images"]:
        assert image["sha256"] == image["sha256_unsigned"] == sums[image["name"]]
    assert {i["type"] for i in profile["images"]} == {"sysupgrade", "factory"}

    # A second profile in the same BIN_DIR joins the same profiles.json.
    make(ib, "image", "PROFILE=8dev_carambola2", f"BIN_DIR={bin_dir}")
    doc = json.loads((bin_dir / "profiles.json").read_text())
    assert set(doc["profiles"]) == {"tplink_archer-c7-v5", "8dev_carambola2"}


def test_images_are_deterministic_and_carry_the_files(
    imagebuilder: Callable[[str, str], Path], tmp_path: Path
) -> None:
    ib = imagebuilder("snapshots", "x86/64")
    files = tmp_path / "files" / "etc" / "uci-defaults"
    files.mkdir(parents=True)
    (files / "99-asu-defaults").write_text("uci set system.@system[0].hostname=a\n")

    def build(name: str) -> dict[str, bytes]:
        bin_dir = tmp_path / name
        result = make(
            ib,
            "image",
            "PROFILE=generic",
            "ROOTFS_FILESYSTEM=squashfs",
            f"FILES={tmp_path / 'files'}",
            f"BIN_DIR={bin_dir}",
        )
        assert result.returncode == 0, result.stderr
        return {p.name: p.read_bytes() for p in bin_dir.iterdir()}

    first, second = build("one"), build("two")
    assert first == second
    assert sorted(first) == [
        "openwrt-x86-64-generic-squashfs-combined-efi.img.gz",
        "openwrt-x86-64-generic-squashfs-combined.img.gz",
        "openwrt-x86-64-generic-squashfs-rootfs.img.gz",
        "openwrt-x86-64-generic.manifest",
        "profiles.json",
        "sha256sums",
    ]
    assert first["openwrt-x86-64-generic-squashfs-combined.img.gz"][:2] == b"\x1f\x8b"
    (files / "99-asu-defaults").write_text("uci set system.@system[0].hostname=b\n")
    third = build("three")
    combined = "openwrt-x86-64-generic-squashfs-combined.img.gz"
    assert third["openwrt-x86-64-generic.manifest"] == first["openwrt-x86-64-generic.manifest"]
    assert third[combined] != first[combined]


def test_too_big_images_are_left_out(
    imagebuilder: Callable[[str, str], Path], tmp_path: Path
) -> None:
    ib = imagebuilder("releases/24.10.1", "ath79/generic")
    fits = make(
        ib, "image", "PROFILE=tplink_tl-wr841-v9", "PACKAGES=luci", f"BIN_DIR={tmp_path / 'fits'}"
    )
    assert fits.returncode == 0 and "is too big" not in fits.stderr
    result = make(
        ib, "image", "PROFILE=tplink_tl-wr841-v9", "PACKAGES=python3", f"BIN_DIR={tmp_path / 'big'}"
    )
    assert result.returncode == 0
    warnings = TOO_BIG.findall(result.stderr)
    assert [w[0] for w in warnings] == [
        "openwrt-24.10.1-ath79-generic-tplink_tl-wr841-v9-squashfs-factory.bin",
        "openwrt-24.10.1-ath79-generic-tplink_tl-wr841-v9-squashfs-sysupgrade.bin",
    ]
    assert all(int(size) > int(limit) == 3997696 for _, size, limit in warnings)
    assert "JSON info file script could not find any JSON files for target" in result.stdout
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == [
        "openwrt-24.10.1-ath79-generic-tplink_tl-wr841-v9.manifest",
        "sha256sums",
    ]


def test_small_rootfs_partition_runs_out_of_space(
    imagebuilder: Callable[[str, str], Path], tmp_path: Path
) -> None:
    ib = imagebuilder("releases/23.05.5", "x86/64")
    result = make(ib, "image", "ROOTFS_PARTSIZE=4", f"BIN_DIR={tmp_path}")
    assert result.returncode == 2
    assert re.search(
        r"^error: ext4_allocate_best_fit_partial: failed to allocate \d+ blocks, "
        r"out of space\?$",
        result.stderr,
        re.M,
    )
    assert not (tmp_path / "profiles.json").exists()
    # squashfs alone does not care, nor does a big enough partition.
    assert (
        make(
            ib,
            "image",
            "ROOTFS_PARTSIZE=4",
            "ROOTFS_FILESYSTEM=squashfs",
            f"BIN_DIR={tmp_path / 'sq'}",
        ).returncode
        == 0
    )
    assert (
        make(
            ib,
            "image",
            "ROOTFS_PARTSIZE=64",
            "ROOTFS_FILESYSTEM=ext4",
            f"BIN_DIR={tmp_path / 'ext4'}",
        ).returncode
        == 0
    )
    assert {p.name for p in (tmp_path / "ext4").iterdir()} >= {
        "openwrt-23.05.5-x86-64-generic-ext4-combined.img.gz",
        "openwrt-23.05.5-x86-64-generic-ext4-combined-efi.img.gz",
        "openwrt-23.05.5-x86-64-generic-ext4-rootfs.img.gz",
    }


def test_default_bin_dir(imagebuilder: Callable[[str, str], Path]) -> None:
    ib = imagebuilder("releases/25.12.0", "mediatek/filogic")
    assert make(ib, "image").returncode == 0
    bin_dir = ib / "bin" / "targets" / "mediatek" / "filogic"
    image = bin_dir / "openwrt-25.12.0-mediatek-filogic-glinet_gl-mt6000-squashfs-sysupgrade.bin"
    assert read_fwtool_metadata(image.read_bytes())["supported_devices"] == ["glinet,gl-mt6000"]


def test_extra_repositories_are_downloaded(
    imagebuilder: Callable[[str, str], Path], tmp_path: Path
) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "Packages").write_text(
        "Package: extra-tool\nVersion: 1.2-r1\nDepends: libc, htop\nArchitecture: mips_24kc\n"
        "Installed-Size: 2048\nFilename: extra-tool_1.2-r1_mips_24kc.ipk\nSize: 900\n"
        "SHA256sum: " + "0" * 64 + "\nDescription:  An extra package\n"
    )
    (feed / "index.json").write_text('{"version": 2, "packages": {"extra-tool": "1.2-r1"}}')
    url, stop = serve_directory(feed)
    try:
        for version_dir in ("releases/24.10.1", "releases/25.12.0"):
            copy = tmp_path / version_dir.replace("/", "-")
            shutil.copytree(imagebuilder(version_dir, "ath79/generic"), copy)
            if (copy / "repositories").exists():
                with open(copy / "repositories", "a") as fh:
                    fh.write(f"{url}/packages.adb\n")
            else:
                with open(copy / "repositories.conf", "a") as fh:
                    fh.write(f"src/gz extra {url}\n")
            assert manifest(copy, "PACKAGES=extra-tool", "STRIP_ABI=1")["extra-tool"] == "1.2-r1"
        missing = make(copy, "manifest", "PACKAGES=other-tool")
        assert missing.returncode == 2 and "  other-tool (no such package):" in missing.stderr
    finally:
        stop()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder other users can enter (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="standin-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_hard_linked_copies_build_concurrently_as_another_user(
    imagebuilder: Callable[[str, str], Path], shared_tmp: Path
) -> None:
    ib = imagebuilder("releases/24.10.1", "x86/64")
    user = {"user": 54321, "group": 54321} if os.geteuid() == 0 else {}  # no passwd entry
    processes = []
    start = time.monotonic()
    for number in range(2):
        copy = shared_tmp / f"copy{number}"
        subprocess.run(["cp", "-al", str(ib), str(copy)], check=True)
        writable = shared_tmp / f"out{number}"
        writable.mkdir(mode=0o777)
        writable.chmod(0o777)
        processes.append(
            subprocess.Popen(
                ["make", "image", "PACKAGES=test-slow-build", f"BIN_DIR={writable / 'bin'}"],
                cwd=copy,
                env={"PATH": "/usr/bin:/bin", "HOME": str(writable)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                **user,
            )
        )
    for process in processes:
        _stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    elapsed = time.monotonic() - start
    assert 3 <= elapsed < 6  # test-slow-build sleeps 3 s: both copies ran at once
    one, two = ((shared_tmp / f"out{n}" / "bin").iterdir() for n in range(2))
    assert {p.name: p.read_bytes() for p in one} == {p.name: p.read_bytes() for p in two}
    # Nothing was written into the (shared, hard-linked) ImageBuilder files.
    assert not (ib / "bin" / "targets").exists()
