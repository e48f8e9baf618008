"""The generated test mirror of downloads.openwrt.org (tests/fixtures/mirror.py)."""

from __future__ import annotations

import email.parser
import gzip
import hashlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures import usign
from tests.fixtures.mirror import (
    FEEDS,
    RELEASES,
    TARGETS,
    arch_packages,
    build_mirror,
    target_build,
)
from tests.fixtures.serve import serve_directory

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TRUSTED = next((FIXTURES / "keys" / "trusted").iterdir()).read_text()
UNTRUSTED = next((FIXTURES / "keys" / "untrusted").iterdir()).read_text()
PROFILE_KEYS = {"device_packages", "image_prefix", "images", "supported_devices", "titles"}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


def version_dirs(mirror: Path) -> dict[str, Path]:
    return {r.version: mirror / r.path for r in RELEASES}


def target_dirs(mirror: Path) -> list[Path]:
    return sorted(mirror.glob("*/targets/*/*")) + sorted(mirror.glob("releases/*/targets/*/*"))


def parse_packages(text: str) -> list[dict[str, str]]:
    parser = email.parser.Parser()
    return [dict(parser.parsestr(chunk)) for chunk in text.strip().split("\n\n")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_versions_json_names_the_releases(mirror: Path) -> None:
    assert json.loads((mirror / ".versions.json").read_text()) == {
        "stable_version": "25.12.0",
        "oldstable_version": "24.10.1",
        "upcoming_version": None,
        "versions_list": ["23.05.5", "24.10.1", "25.12.0"],
    }


def test_each_version_lists_its_targets_and_profiles(mirror: Path) -> None:
    for version, path in version_dirs(mirror).items():
        targets = json.loads((path / ".targets.json").read_text())
        expected = {"ath79/generic": "mips_24kc", "x86/64": "x86_64"}
        if version != "23.05.5":
            expected["mediatek/filogic"] = "aarch64_cortex-a53"
        assert targets == expected
        overview = json.loads((path / ".overview.json").read_text())
        assert overview["release"] == version
        ids = {(p["target"], p["id"]) for p in overview["profiles"]}
        assert ("ath79/generic", "tplink_archer-c7-v5") in ids
        assert ("x86/64", "generic") in ids
        assert all(p["titles"] for p in overview["profiles"])
        for target in targets:
            assert (path / "targets" / target / "profiles.json").is_file()


def test_profiles_json_has_the_upstream_schema(mirror: Path) -> None:
    for release in RELEASES:
        for target in release.targets:
            target_dir = mirror / release.path / "targets" / target
            doc = json.loads((target_dir / "profiles.json").read_text())
            assert doc["target"] == target
            assert doc["arch_packages"] == TARGETS[target].arch_packages
            assert doc["version_number"] == release.version
            assert doc["version_code"] == release.revision
            assert doc["metadata_version"] == 1
            assert isinstance(doc["source_date_epoch"], int)
            assert doc["default_packages"] == sorted(doc["default_packages"])
            assert ("opkg" in doc["default_packages"]) != release.apk
            assert ("apk-mbedtls" in doc["default_packages"]) == release.apk
            assert ("linux_kernel" in doc) == (release.version != "23.05.5")
            for profile_id, profile in doc["profiles"].items():
                assert set(profile) == PROFILE_KEYS
                prefix = "openwrt-" if release.snapshot else f"openwrt-{release.version}-"
                board, subtarget = target.split("/")
                assert profile["image_prefix"] == f"{prefix}{board}-{subtarget}-{profile_id}"
                for image in profile["images"]:
                    assert image["name"].startswith(profile["image_prefix"] + "-")
                    assert sha256(target_dir / image["name"]) == image["sha256"]
                    assert image["type"] in {
                        "sysupgrade",
                        "factory",
                        "kernel",
                        "combined",
                        "combined-efi",
                        "rootfs",
                    }


def test_profiles_have_the_documented_devices(mirror: Path) -> None:
    ath79 = json.loads(
        (mirror / "releases/24.10.1/targets/ath79/generic/profiles.json").read_text()
    )
    assert ath79["profiles"]["tplink_archer-c7-v5"]["supported_devices"] == [
        "tplink,archer-c7-v5",
        "archer-c7-v5",
    ]
    assert ath79["profiles"]["8dev_carambola2"]["supported_devices"] == [
        "8dev,carambola2",
        "carambola2",
    ]
    assert "tplink_tl-wr841-v9" in ath79["profiles"]
    x86 = json.loads((mirror / "snapshots/targets/x86/64/profiles.json").read_text())
    assert list(x86["profiles"]) == ["generic"]
    assert x86["profiles"]["generic"]["supported_devices"] == []
    filogic = json.loads((mirror / "snapshots/targets/mediatek/filogic/profiles.json").read_text())
    assert filogic["profiles"]["glinet_gl-mt6000"]["supported_devices"] == ["glinet,gl-mt6000"]


def test_sha256sums_list_every_file_and_are_signed_by_the_test_key(mirror: Path) -> None:
    for target_dir in target_dirs(mirror):
        text = (target_dir / "sha256sums").read_text()
        lines = text.splitlines()
        names = [line.split(" *", 1)[1] for line in lines]
        assert names == sorted(names)
        files = {p.name for p in target_dir.iterdir() if p.is_file()}
        assert set(names) == files - {"sha256sums", "sha256sums.sig"}
        for line in lines:
            digest, name = line.split(" *", 1)
            assert sha256(target_dir / name) == digest
        signature = (target_dir / "sha256sums.sig").read_text()
        assert signature.startswith(
            f"untrusted comment: signed by key {usign.fingerprint(TRUSTED)}"
        )
        assert usign.verify(text.encode(), signature, TRUSTED)
        assert not usign.verify(text.encode(), signature, UNTRUSTED)
        assert not usign.verify(text.encode() + b"\n", signature, TRUSTED)


def test_imagebuilder_tarballs_are_named_and_compressed_per_era(mirror: Path) -> None:
    expected = {
        "releases/23.05.5/targets/ath79/generic": (
            "openwrt-imagebuilder-23.05.5-ath79-generic.Linux-x86_64.tar.xz",
            b"\xfd7zXZ\x00",
        ),
        "releases/24.10.1/targets/x86/64": (
            "openwrt-imagebuilder-24.10.1-x86-64.Linux-x86_64.tar.zst",
            b"\x28\xb5\x2f\xfd",
        ),
        "releases/25.12.0/targets/mediatek/filogic": (
            "openwrt-imagebuilder-25.12.0-mediatek-filogic.Linux-x86_64.tar.zst",
            b"\x28\xb5\x2f\xfd",
        ),
        "snapshots/targets/ath79/generic": (
            "openwrt-imagebuilder-ath79-generic.Linux-x86_64.tar.zst",
            b"\x28\xb5\x2f\xfd",
        ),
    }
    for directory, (name, magic) in expected.items():
        tarball = mirror / directory / name
        assert tarball.read_bytes().startswith(magic)
        assert f" *{name}\n" in (mirror / directory / "sha256sums").read_text()


def test_feeds_have_signed_packages_and_matching_index_json(mirror: Path) -> None:
    for release in RELEASES:
        for arch_dir in sorted((mirror / release.path / "packages").iterdir()):
            feeds = [line.split()[1] for line in (arch_dir / "feeds.conf").read_text().splitlines()]
            assert feeds == ["base", "packages", "luci", "routing", "telephony"]
            for feed in feeds:
                feed_dir = arch_dir / feed
                assert feed_dir.is_dir() and not feed_dir.is_symlink()
                index = json.loads((feed_dir / "index.json").read_text())
                assert index["architecture"] == arch_dir.name
                if release.apk:
                    assert index["version"] == 2
                    assert not (feed_dir / "Packages").exists()
                    continue
                check_opkg_dir(feed_dir, release.index_version, index)


def check_opkg_dir(directory: Path, index_version: int, index: dict) -> None:
    text = (directory / "Packages").read_text()
    assert gzip.decompress((directory / "Packages.gz").read_bytes()).decode() == text
    assert usign.verify(text.encode(), (directory / "Packages.sig").read_text(), TRUSTED)
    versions = {}
    for stanza in parse_packages(text):
        assert list(stanza)[:2] in (["Package", "Version"], ["Package", "ABIVersion"])
        for key in ("Architecture", "Installed-Size", "Filename", "Size", "SHA256sum"):
            assert stanza[key]
        name = stanza["Package"]
        if index_version == 2 and stanza.get("ABIVersion"):
            name = name.removesuffix(stanza["ABIVersion"])
        versions[name] = stanza["Version"]
    assert index.get("version", 1) == index_version
    assert index["packages"] == versions


def test_kmods_follow_linux_kernel_after_the_split(mirror: Path) -> None:
    for release in RELEASES:
        target_dir = mirror / release.path / "targets" / "ath79" / "generic"
        core = json.loads((target_dir / "packages" / "index.json").read_text())["packages"]
        doc = json.loads((target_dir / "profiles.json").read_text())
        if not release.kmods_split:
            assert "kmod-ath9k" in core
            assert not (target_dir / "kmods").exists()
            continue
        kernel = doc["linux_kernel"]
        kver = f"{kernel['version']}-{kernel['release']}-{kernel['vermagic']}"
        kmods_dir = target_dir / "kmods" / kver
        kmods = json.loads((kmods_dir / "index.json").read_text())["packages"]
        assert "kmod-ath9k" in kmods and "kmod-ath9k" not in core
        assert core["kernel"] == f"{kernel['version']}~{kernel['vermagic']}-r1"
        if not release.apk:
            stanzas = parse_packages((kmods_dir / "Packages").read_text())
            assert f"kernel (={core['kernel']})" in stanzas[0]["Depends"]


def test_opkg_eras_carry_abi_versions(mirror: Path) -> None:
    v1 = json.loads((mirror / "releases/23.05.5/packages/mips_24kc/base/index.json").read_text())
    assert "version" not in v1
    assert v1["packages"]["libubox20230523"] == "2023-05-23-75a3b870-1"
    base = (mirror / "releases/24.10.1/packages/mips_24kc/base/Packages").read_text()
    stanza = next(s for s in parse_packages(base) if s["Package"] == "libubox20240329")
    assert stanza["ABIVersion"] == "20240329"
    assert stanza["Provides"] == "libubox"
    v2 = json.loads((mirror / "releases/24.10.1/packages/mips_24kc/base/index.json").read_text())
    assert v2["packages"]["libubox"] == "2024.03.29~eb9bcb64-r1"


def test_package_sets_differ_per_era(mirror: Path) -> None:
    def packages(version: str) -> set[str]:
        names: set[str] = set()
        for feed in (version_dirs(mirror)[version] / "packages" / "mips_24kc").glob("*/index.json"):
            names |= set(json.loads(feed.read_text())["packages"])
        return names

    old, opkg, apk, snapshot = (packages(v) for v in ("23.05.5", "24.10.1", "25.12.0", "SNAPSHOT"))
    for names in (old, opkg):
        assert {"opkg", "auc", "luci-app-opkg", "luci-i18n-opkg-de"} <= names
        assert not {"apk-mbedtls", "luci-app-package-manager"} & names
    for names in (apk, snapshot):
        assert {"apk-mbedtls", "luci-app-package-manager", "luci-i18n-package-manager-de"} <= names
        assert not {"opkg", "auc", "luci-app-opkg"} & names
    assert "owut" not in old and "owut" in opkg and "owut" in apk
    for names in (old, opkg, apk, snapshot):
        assert {
            "dnsmasq",
            "dnsmasq-full",
            "python3",
            "test-slow-build",
            "luci-app-attendedsysupgrade",
            "firewall4",
        } <= names


def test_every_dependency_and_default_package_exists() -> None:
    for release in RELEASES:
        for target in release.targets:
            build = target_build(release, target)
            packages = (
                build.core + build.kmods + arch_packages(release, TARGETS[target].arch_packages)
            )
            names = {p.abi_free_name for p in packages} | {p.name for p in packages}
            names |= {provided for p in packages for provided in p.provides}
            for pkg in packages:
                for dep in pkg.depends:
                    assert dep.split(" ")[0] in names, (release.version, target, pkg.name, dep)
            profiles = TARGETS[target].profiles
            wanted = build.default_packages + [d for p in profiles for d in p.device_packages]
            assert {w.lstrip("-") for w in wanted} <= names, (release.version, target)
            assert {p.feed for p in packages} <= {"core", "kmods", *FEEDS}


def test_it_is_deterministic_and_takes_a_snapshot_revision(mirror: Path, tmp_path: Path) -> None:
    other = build_mirror(tmp_path / "other", snapshot_revision="r33333-abcdef0123")
    build_mirror(tmp_path / "other", snapshot_revision="r33333-abcdef0123")  # overwrites
    changed = []
    for path in sorted(mirror.rglob("*")):
        if path.is_file():
            twin = other / path.relative_to(mirror)
            if twin.read_bytes() != path.read_bytes():
                changed.append(path.relative_to(mirror).parts[0])
    assert changed and set(changed) == {"snapshots"}
    doc = json.loads((other / "snapshots/targets/x86/64/profiles.json").read_text())
    assert doc["version_code"] == "r33333-abcdef0123"
    with pytest.raises(ValueError):
        build_mirror(tmp_path / "bad", snapshot_revision="33333")


def test_the_command_line_writes_a_mirror(tmp_path: Path) -> None:
    script = FIXTURES / "mirror.py"
    subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--snapshot-revision", "r33002-aaaaaaaaaa"],
        check=True,
        capture_output=True,
    )
    doc = json.loads((tmp_path / "snapshots/targets/ath79/generic/profiles.json").read_text())
    assert doc["version_code"] == "r33002-aaaaaaaaaa"


def test_serve_directory_serves_the_mirror_quietly(
    mirror: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url, stop = serve_directory(mirror)
    try:
        assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
        with urllib.request.urlopen(f"{url}/.versions.json") as response:
            assert json.load(response)["stable_version"] == "25.12.0"
        name = "releases/24.10.1/targets/x86/64/openwrt-imagebuilder-24.10.1-x86-64.Linux-x86_64.tar.zst"
        request = urllib.request.Request(f"{url}/{name}", method="HEAD")
        with urllib.request.urlopen(request) as response:
            assert int(response.headers["Content-Length"]) == (mirror / name).stat().st_size
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/nope.json")
        assert missing.value.code == 404
    finally:
        stop()
    assert capfd.readouterr().err == ""


def test_usign_matches_the_documented_formats(tmp_path: Path) -> None:
    real = "RWR//HUXxMwMVnx7fESOKO7x8XoW4/dRidJPjt91hAAU2L59mYvHy0Fa"
    assert usign.fingerprint(real) == "7ffc7517c4cc0c56"
    secret = FIXTURES / "keys" / "test-key.sec"
    public_file = FIXTURES / "keys" / "trusted" / usign.fingerprint(secret.read_text())
    assert usign.public_key(secret).splitlines()[1] == public_file.read_text().splitlines()[1]
    signature = usign.sign(b"data", secret)
    assert usign.verify(b"data", signature, public_file.read_text())
    other = usign.sign(b"data", FIXTURES / "keys" / "other-key.sec")
    assert not usign.verify(b"data", other, public_file.read_text())
    new_secret, new_public = usign.generate("throwaway")
    (tmp_path / "new.sec").write_text(new_secret)
    assert usign.verify(b"x", usign.sign(b"x", tmp_path / "new.sec"), new_public)
