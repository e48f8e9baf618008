"""The ImageBuilder side of a build: parsing make's output, getting, caching and copying
an ImageBuilder, running make. Parsers are fed the real output formats of
openwrt-formats.md; the rest runs against the test mirror's stand-in ImageBuilder."""

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from builds import imagebuilder as ib
from tests.fixtures.mirror import build_mirror

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
    info = ib.parse_make_info(MAKE_INFO)
    assert info.revision == "r24106-10cc5fcd00"
    assert info.default_packages[:3] == ["base-files", "ca-bundle", "dropbear"]
    assert "busybox" in info.default_packages


def test_it_reads_each_profiles_packages_from_make_info():
    info = ib.parse_make_info(MAKE_INFO)
    assert set(info.profile_packages) == {
        "8dev_carambola2",
        "tplink_archer-c7-v5",
        "generic_no_title",
    }
    assert info.profile_packages["8dev_carambola2"] == ["kmod-usb-chipidea2"]
    assert "-wpad-basic-mbedtls" in info.profile_packages["tplink_archer-c7-v5"]
    assert info.profile_packages["generic_no_title"] == []
    assert info.supported_devices["8dev_carambola2"] == ["8dev,carambola2", "carambola2"]


def test_it_reads_make_info_of_old_imagebuilders_without_a_revision():
    info = ib.parse_make_info(OLD_MAKE_INFO)
    assert info.revision == ""
    assert info.profile_packages == {"Default": ["kmod-usb-core"]}


def test_it_parses_an_opkg_manifest():
    manifest = ib.parse_manifest(
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
    manifest = ib.parse_manifest("apk-mbedtls 3.0.0_pre20250208-r1\nbase-files 1655~edfe589811\n")
    assert manifest == {"apk-mbedtls": "3.0.0_pre20250208-r1", "base-files": "1655~edfe589811"}


def test_it_skips_stray_lines_in_a_manifest():
    manifest = ib.parse_manifest("Signature check passed.\nbusybox - 1.36.1-r2\n\n")
    assert manifest == {"busybox": "1.36.1-r2"}


def test_it_names_missing_packages_in_opkg_errors():
    stderr = (
        "Collected errors:\n"
        " * opkg_install_cmd: Cannot install package ppp-mod-pppoe.\n"
        " * opkg_install_cmd: Cannot install package luci-app-nothing.\n"
    )
    errors = ib.parse_package_errors(stderr)
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
    errors = ib.parse_package_errors(stderr)
    assert errors.missing == []
    assert errors.detail == "Impossible package selection: conflicts (dnsmasq, dnsmasq-full)"


def test_it_names_file_clashes_in_opkg_errors_as_conflicts():
    stderr = (
        "Collected errors:\n"
        " * check_data_file_clashes: Package wpad wants to install file /usr/sbin/hostapd\n"
        "\tBut that file is already provided by package  * wpad-basic\n"
        " * opkg_install_cmd: Cannot install package wpad.\n"
    )
    assert ib.parse_package_errors(stderr).conflicts == ["wpad", "wpad-basic"]


def test_it_names_missing_packages_in_apk_errors():
    stderr = (
        "ERROR: unable to select packages:\n"
        "  opkg (no such package):\n"
        "    required by: world[opkg]\n"
    )
    assert ib.parse_package_errors(stderr).detail == "Impossible package selection: missing (opkg)"


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
    errors = ib.parse_package_errors(stderr)
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
    assert ib.parse_package_errors(stderr).detail == (
        "Impossible package selection: missing (foo) conflicts (a, b)"
    )


def test_it_finds_no_package_errors_in_other_failures():
    errors = ib.parse_package_errors("make[2]: *** [Makefile:225: package_install] Error 1\n")
    assert not errors
    assert errors.detail == "Impossible package selection"


def test_it_accepts_a_manifest_with_the_requested_versions():
    manifest = {"busybox": "1.36.1-r2", "dropbear": "2024.86-r1"}
    assert ib.check_packages_versions(manifest, {"busybox": "1.36.1-r2"}) == ""


def test_it_reports_requested_packages_missing_from_the_manifest():
    problem = ib.check_packages_versions({"busybox": "1"}, {"luci": "1", "busybox": "1"})
    assert problem == "Impossible package selection: missing (luci)"


def test_it_reports_requested_versions_that_differ_from_the_manifest():
    problem = ib.check_packages_versions({"busybox": "1.37.0-r1"}, {"busybox": "1.36.1-r2"})
    assert "busybox 1.37.0-r1 (requested 1.36.1-r2)" in problem
    assert problem.startswith("Impossible package selection")


def test_it_removes_default_packages_an_absolute_list_lacks():
    packages = ib.diff_packages(["luci", "dropbear", "-ppp"], {"dropbear", "ppp", "odhcpd"})
    assert packages == ["-odhcpd", "-ppp", "luci", "dropbear"]


def test_it_sees_the_image_too_big_warning_and_the_full_ext4():
    assert ib.image_too_big("    WARNING: Image file /b/x.bin is too big: 8126469 > 7995392\n")
    assert ib.image_too_big(
        "error: ext4_allocate_best_fit_partial: failed to allocate 28 blocks, out of space?\n"
    )
    assert not ib.image_too_big("Calculating checksums...\n")


def test_it_names_imagebuilders_by_era():
    assert ib.imagebuilder_names("23.05.5", "ath79/generic")[0] == (
        "openwrt-imagebuilder-23.05.5-ath79-generic.Linux-x86_64.tar.xz"
    )
    assert ib.imagebuilder_names("24.10.0", "x86/64")[0] == (
        "openwrt-imagebuilder-24.10.0-x86-64.Linux-x86_64.tar.zst"
    )
    assert ib.imagebuilder_names("SNAPSHOT", "x86/64")[0] == (
        "openwrt-imagebuilder-x86-64.Linux-x86_64.tar.zst"
    )
    assert ib.imagebuilder_names("24.10-SNAPSHOT", "x86/64")[0] == (
        "openwrt-imagebuilder-24.10-snapshot-x86-64.Linux-x86_64.tar.zst"
    )


def test_it_reads_sha256sums():
    sums = ib.parse_sha256sums(
        "4e47c644057f9e7b62d14c89cbb505549644819f307bd950d60cb773a7e2098a "
        "*openwrt-imagebuilder-24.10.0-x86-64.Linux-x86_64.tar.zst\n"
        "not a checksum line\n"
    )
    assert sums == {
        "openwrt-imagebuilder-24.10.0-x86-64.Linux-x86_64.tar.zst": (
            "4e47c644057f9e7b62d14c89cbb505549644819f307bd950d60cb773a7e2098a"
        )
    }


def test_it_keeps_the_end_of_long_output():
    text = "x" * 100 + "the error"
    kept = ib.bounded(text, limit=20)
    assert kept.endswith("the error")
    assert "earlier characters left out" in kept


def test_it_adds_extra_opkg_feeds_and_their_keys(tmp_path):
    (tmp_path / "repositories.conf").write_text(
        "src/gz openwrt_core https://downloads.openwrt.org/releases/24.10.0/targets/x86/64/packages\n"
        "src imagebuilder file:packages\n"
        "option check_signature\n"
    )
    key = "RWR//HUXxMwMVnx7fESOKO7x8XoW4/dRidJPjt91hAAU2L59mYvHy0Fa"
    ib.add_repositories(tmp_path, {"extra": "https://feed.example.org/x86_64"}, "append", [key])
    lines = (tmp_path / "repositories.conf").read_text().splitlines()
    assert lines[0].startswith("src/gz openwrt_core ")
    assert lines[1] == "src/gz extra https://feed.example.org/x86_64"
    assert "src imagebuilder file:packages" in lines
    assert (tmp_path / "keys" / "7ffc7517c4cc0c56").read_text().endswith(key + "\n")


def test_it_replaces_opkg_feeds_but_keeps_the_local_packages(tmp_path):
    (tmp_path / "repositories.conf").write_text(
        "src/gz openwrt_core https://downloads.openwrt.org/x\nsrc imagebuilder file:packages\n"
    )
    ib.add_repositories(tmp_path, {"mine": "https://feed.example.org/y"}, "replace", [])
    assert (tmp_path / "repositories.conf").read_text() == (
        "src/gz mine https://feed.example.org/y\nsrc imagebuilder file:packages\n"
    )


def test_it_adds_extra_apk_feeds_and_pem_keys(tmp_path):
    (tmp_path / "repositories").write_text(
        "https://downloads.openwrt.org/snapshots/targets/x86/64/packages/packages.adb\n"
    )
    pem = (Path(__file__).parent.parent / "fixtures" / "keys" / "apk-test-key.pem").read_text()
    ib.add_repositories(tmp_path, {"extra": "https://feed.example.org/apk"}, "append", [pem])
    assert (tmp_path / "repositories").read_text().splitlines()[-1] == (
        "https://feed.example.org/apk/packages.adb"
    )
    assert [p.suffix for p in (tmp_path / "keys").iterdir()] == [".pem"]


def test_it_writes_feed_files_as_new_files(tmp_path):
    """A working copy may share the file's inode with the cache: never edit it in place."""
    conf = tmp_path / "repositories.conf"
    conf.write_text("src imagebuilder file:packages\n")
    shared = tmp_path / "shared"
    os.link(conf, shared)
    ib.add_repositories(tmp_path, {"extra": "https://feed.example.org/x"}, "append", [])
    assert shared.read_text() == "src imagebuilder file:packages\n"


def test_it_refuses_a_repository_key_it_cannot_read(tmp_path):
    (tmp_path / "repositories.conf").write_text("")
    with pytest.raises(ib.BuildError, match="Repository key 1"):
        ib.add_repositories(tmp_path, {"x": "https://feed.example.org"}, "append", ["nonsense"])


def test_it_builds_the_make_image_command_as_an_argument_list(tmp_path):
    cmd = ib.image_command(
        "tplink_archer-c7-v5",
        ["-ppp", "luci"],
        "abc123",
        tmp_path / "bin",
        files=tmp_path / "files",
        rootfs_size_mb=256,
        filesystem="squashfs",
    )
    assert cmd == [
        "make",
        "image",
        "PROFILE=tplink_archer-c7-v5",
        "PACKAGES=-ppp luci",
        "EXTRA_IMAGE_NAME=abc123",
        f"BIN_DIR={tmp_path / 'bin'}",
        f"FILES={tmp_path / 'files'}",
        "ROOTFS_PARTSIZE=256",
        "ROOTFS_FILESYSTEM=squashfs",
    ]


@pytest.mark.parametrize("sandboxed", [True, False], ids=["bubblewrap", "plain"])
def test_it_kills_make_and_its_children_when_the_deadline_passes(tmp_path, monkeypatch, sandboxed):
    if sandboxed and not ib.sandbox():
        pytest.skip("bubblewrap is not installed or cannot run here")
    if not sandboxed:
        monkeypatch.setattr(ib, "sandbox", lambda: None)
    marker = f"{time.time_ns() % 1000}.{os.getpid()}"  # a unique sleep length to look for
    (tmp_path / "Makefile").write_text(
        f"slow:\n\t@echo started; sleep {marker} & sleep {marker}; echo never\n"
    )
    started = time.monotonic()
    with pytest.raises(ib.BuildTimeout) as caught:
        ib.run_make(tmp_path, ["make", "slow"], time.monotonic() + 1)
    assert time.monotonic() - started < 10
    assert "started" in caught.value.stdout
    assert "limit of" in caught.value.message
    time.sleep(0.5)
    assert not _processes_with(f"sleep\0{marker}")


def _processes_with(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_text():
                found.append(cmdline.parent.name)
        except OSError:
            pass
    return found


def test_it_runs_make_with_a_scrubbed_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    (tmp_path / "Makefile").write_text("env:\n\t@env\n")
    result = ib.run_make(tmp_path, ["make", "env"], time.monotonic() + 30)
    assert result.returncode == 0
    assert "do-not-leak" not in result.stdout
    assert "LC_ALL=C" in result.stdout


def test_it_runs_make_without_bubblewrap_too(tmp_path, monkeypatch):
    monkeypatch.setattr(ib, "sandbox", lambda: None)
    (tmp_path / "Makefile").write_text("hello:\n\t@echo hello > out.txt; cat out.txt\n")
    result = ib.run_make(tmp_path, ["make", "hello"], time.monotonic() + 30)
    assert (result.returncode, result.stdout) == (0, "hello\n")


@pytest.mark.skipif(not ib.sandbox(), reason="bubblewrap is not installed or cannot run here")
def test_it_lets_make_write_only_in_its_working_copy(tmp_path):
    outside = Path("/usr/asu-sandbox-test")  # read-only inside the sandbox
    (tmp_path / "Makefile").write_text(
        f"write:\n\t@echo inside > inside.txt; (echo x > {outside}) 2>/dev/null || echo refused\n"
    )
    try:
        result = ib.run_make(tmp_path, ["make", "write"], time.monotonic() + 30)
        assert not outside.exists()
    finally:
        outside.unlink(missing_ok=True)
    assert (tmp_path / "inside.txt").read_text() == "inside\n"
    assert result.stdout == "refused\n"


@pytest.mark.skipif(not ib.sandbox(), reason="bubblewrap is not installed or cannot run here")
def test_it_keeps_make_off_the_network_unless_asked(tmp_path):
    (tmp_path / "Makefile").write_text("net:\n\t@cat /proc/net/dev | tail -n +3 | cut -d: -f1\n")
    closed = ib.run_make(tmp_path, ["make", "net"], time.monotonic() + 30)
    opened = ib.run_make(tmp_path, ["make", "net"], time.monotonic() + 30, network=True)
    assert closed.stdout.split() == ["lo"]
    assert opened.stdout.split() != ["lo"]


# Against the test mirror and its stand-in ImageBuilder.


def test_it_refuses_sha256sums_with_a_bad_signature(
    upstream, settings, mirror_copy, release_target, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    version, target = release_target
    sums = copy / ib.version_path(version) / "targets" / target / "sha256sums"
    sums.write_text(sums.read_text() + "0" * 64 + " *an-added-file\n")
    with pytest.raises(ib.BuildError, match="signature"):
        ib.fetch_sha256sums(version, target)


def test_it_refuses_sha256sums_signed_by_an_untrusted_key(upstream, settings, release_target, db):
    settings.ASU_UPSTREAM_KEYS = str(Path(__file__).parent.parent / "fixtures/keys/untrusted")
    version, target = release_target
    with pytest.raises(ib.BuildError, match="not trusted"):
        ib.fetch_sha256sums(version, target)


def test_it_unpacks_an_imagebuilder_once_and_gives_each_build_a_copy(
    upstream, settings, release_target, db
):
    version, target = release_target
    steps: list[str] = []
    deadline = time.monotonic() + 120
    with ib.working_copy(version, target, deadline, steps.append) as first:
        assert (first.path / "Makefile").is_file()
        assert first.revision.startswith("r")
        with ib.working_copy(version, target, deadline, steps.append) as second:
            assert second.path != first.path
    assert not first.path.exists()
    assert steps.count("unpack_imagebuilder") == 1
    cached = list((Path(settings.ASU_CACHE_DIR) / version / target).iterdir())
    assert [p.name for p in cached if p.is_dir() and not p.name.startswith(".")] == [first.revision]


def test_it_keeps_the_first_make_info_for_every_copy(upstream, settings, release_target, db):
    version, target = release_target
    deadline = time.monotonic() + 120
    with ib.working_copy(version, target, deadline, lambda step: None) as workspace:
        rerun = ib.run_make(workspace.path, ["make", "info"], deadline)
        assert workspace.info is not None
        assert (workspace.info.returncode, workspace.info.stdout) == (0, rerun.stdout)
        assert ib.parse_make_info(workspace.info.stdout).revision == workspace.revision


def test_it_runs_make_info_once_for_a_cache_that_lacks_its_output(
    upstream, settings, release_target, db
):
    """current.json written by an earlier version of the server has no `make info` output."""
    version, target = release_target
    deadline = time.monotonic() + 120
    with ib.working_copy(version, target, deadline, lambda step: None) as first:
        expected = first.info.stdout
    current = Path(settings.ASU_CACHE_DIR) / version / target / ib.CURRENT
    older = {k: v for k, v in json.loads(current.read_text()).items() if k != "info"}
    current.write_text(json.dumps(older))
    with ib.working_copy(version, target, deadline, lambda step: None) as second:
        assert second.info.stdout == expected
    assert json.loads(current.read_text())["info"]["stdout"] == expected


def test_it_asks_upstream_again_only_after_a_while(
    upstream, settings, mirror_copy, release_target, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    version, target = release_target
    deadline = time.monotonic() + 120
    steps: list[str] = []
    with ib.working_copy(version, target, deadline, steps.append):
        pass
    assert "download_imagebuilder" in steps
    # Damaged upstream checksums would stop a build that asked upstream.
    sums = copy / ib.version_path(version) / "targets" / target / "sha256sums"
    sums.write_text(sums.read_text() + "0" * 64 + " *an-added-file\n")
    steps.clear()
    with ib.working_copy(version, target, deadline, steps.append) as workspace:
        assert (workspace.path / "Makefile").is_file()
    assert steps == ["container_setup"]


def test_it_fetches_the_imagebuilder_again_when_upstream_has_a_new_one(
    upstream, settings, mirror_copy, monkeypatch, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    deadline = time.monotonic() + 120
    with ib.working_copy("SNAPSHOT", "x86/64", deadline, lambda step: None) as before:
        old_revision = before.revision
    build_mirror(copy, snapshot_revision="r33333-abcdef0123")
    with ib.working_copy("SNAPSHOT", "x86/64", deadline, lambda step: None) as meanwhile:
        assert meanwhile.revision == old_revision  # verified moments ago
    monkeypatch.setattr(ib, "RECHECK_AFTER", 0)
    steps: list[str] = []
    with ib.working_copy("SNAPSHOT", "x86/64", deadline, steps.append) as after:
        assert after.revision == "r33333-abcdef0123"
    assert old_revision != after.revision
    assert "unpack_imagebuilder" in steps
    assert not (Path(settings.ASU_CACHE_DIR) / "SNAPSHOT" / "x86/64" / old_revision).exists()
    info = json.loads((Path(settings.ASU_CACHE_DIR) / "SNAPSHOT/x86/64" / ib.CURRENT).read_text())
    assert 'Current Revision: "r33333-abcdef0123"' in info["info"]["stdout"]


def test_it_asks_upstream_at_once_for_a_revision_the_cache_lacks(
    upstream, settings, mirror_copy, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    deadline = time.monotonic() + 120
    with ib.working_copy("SNAPSHOT", "x86/64", deadline, lambda step: None):
        pass
    build_mirror(copy, snapshot_revision="r33333-abcdef0123")
    with ib.working_copy(
        "SNAPSHOT", "x86/64", deadline, lambda step: None, revision="r33333-abcdef0123"
    ) as workspace:
        assert workspace.revision == "r33333-abcdef0123"


def test_it_keeps_building_with_the_cached_imagebuilder_when_upstream_is_down(
    upstream, settings, mirror_copy, release_target, monkeypatch, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    version, target = release_target
    deadline = time.monotonic() + 120
    with ib.working_copy(version, target, deadline, lambda step: None):
        pass
    monkeypatch.setattr(ib, "RECHECK_AFTER", 0)  # so that the build asks upstream
    settings.ASU_UPSTREAM_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    with ib.working_copy(version, target, deadline, lambda step: None) as workspace:
        assert (workspace.path / "Makefile").is_file()


def test_a_build_leaves_the_cached_imagebuilder_untouched(upstream, settings, release_target, db):
    version, target = release_target
    deadline = time.monotonic() + 120
    with ib.working_copy(version, target, deadline, lambda step: None) as workspace:
        cache = Path(settings.ASU_CACHE_DIR) / version / target / workspace.revision
        before = _snapshot(cache)
        info = ib.parse_make_info(ib.run_make(workspace.path, ["make", "info"], deadline).stdout)
        profile = next(iter(info.profile_packages))
        ib.add_repositories(workspace.path, {}, "append", [])
        bin_dir = workspace.path / "asu-bin"
        files = ib.write_defaults(workspace.path, "echo hello\n")
        cmd = ib.image_command(profile, [], "x", bin_dir, files=files)
        result = ib.run_make(workspace.path, cmd, deadline, ib.needs_network(workspace.path))
        assert result.returncode == 0, result.stderr
        assert (bin_dir / "profiles.json").is_file()
    assert _snapshot(cache) == before


@pytest.fixture
def release_target(mirror_dir: Path) -> tuple[str, str]:
    """A release and target the mirror offers: ("24.10.1", "ath79/generic")."""
    sums = sorted(mirror_dir.glob("releases/*/targets/*/*/sha256sums"))[0]
    return sums.parts[-5], "/".join(sums.parts[-3:-1])


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Content and modification time of every file below `folder`."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            state[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return state
