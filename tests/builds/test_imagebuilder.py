"""Getting, caching and copying an ImageBuilder, against the test mirror's stand-in
ImageBuilder."""

import hashlib
import json
import time
from pathlib import Path

import pytest

from builds import imagebuilder as ib
from builds.configure import add_repositories, needs_network, write_defaults
from builds.errors import BuildError
from builds.make import image_command, run_make
from builds.make_output import parse_make_info
from tests.fixtures.mirror import build_mirror


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


# Against the test mirror and its stand-in ImageBuilder.


def test_it_refuses_sha256sums_with_a_bad_signature(
    upstream, settings, mirror_copy, release_target, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    version, path, target = release_target
    sums = copy / path / "targets" / target / "sha256sums"
    sums.write_text(sums.read_text() + "0" * 64 + " *an-added-file\n")
    with pytest.raises(BuildError, match="signature"):
        ib.fetch_sha256sums(path, target)


def test_it_refuses_sha256sums_signed_by_an_untrusted_key(upstream, settings, release_target, db):
    settings.ASU_UPSTREAM_KEYS = str(Path(__file__).parent.parent / "fixtures/keys/untrusted")
    version, path, target = release_target
    with pytest.raises(BuildError, match="not trusted"):
        ib.fetch_sha256sums(path, target)


def test_it_unpacks_an_imagebuilder_once_and_gives_each_build_a_copy(
    upstream, settings, release_target, db
):
    version, path, target = release_target
    steps: list[str] = []
    deadline = time.monotonic() + 120
    with ib.working_copy(version, path, target, deadline, steps.append) as first:
        assert (first.path / "Makefile").is_file()
        assert first.revision.startswith("r")
        with ib.working_copy(version, path, target, deadline, steps.append) as second:
            assert second.path != first.path
    assert not first.path.exists()
    assert steps.count("unpack_imagebuilder") == 1
    cached = list((Path(settings.ASU_CACHE_DIR) / version / target).iterdir())
    assert [p.name for p in cached if p.is_dir() and not p.name.startswith(".")] == [first.revision]


def test_it_keeps_the_first_make_info_for_every_copy(upstream, settings, release_target, db):
    version, path, target = release_target
    deadline = time.monotonic() + 120
    with ib.working_copy(version, path, target, deadline, lambda step: None) as workspace:
        rerun = run_make(workspace.path, ["make", "info"], deadline)
        assert workspace.info is not None
        assert (workspace.info.returncode, workspace.info.stdout) == (0, rerun.stdout)
        assert parse_make_info(workspace.info.stdout).revision == workspace.revision


def test_it_runs_make_info_once_for_a_cache_that_lacks_its_output(
    upstream, settings, release_target, db
):
    """current.json written by an earlier version of the server has no `make info` output."""
    version, path, target = release_target
    deadline = time.monotonic() + 120
    with ib.working_copy(version, path, target, deadline, lambda step: None) as first:
        expected = first.info.stdout
    current = Path(settings.ASU_CACHE_DIR) / version / target / "current.json"
    older = {k: v for k, v in json.loads(current.read_text()).items() if k != "info"}
    current.write_text(json.dumps(older))
    with ib.working_copy(version, path, target, deadline, lambda step: None) as second:
        assert second.info.stdout == expected
    assert json.loads(current.read_text())["info"]["stdout"] == expected


def test_it_asks_upstream_again_only_after_a_while(
    upstream, settings, mirror_copy, release_target, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    version, path, target = release_target
    deadline = time.monotonic() + 120
    steps: list[str] = []
    with ib.working_copy(version, path, target, deadline, steps.append):
        pass
    assert "download_imagebuilder" in steps
    # Damaged upstream checksums would stop a build that asked upstream.
    sums = copy / path / "targets" / target / "sha256sums"
    sums.write_text(sums.read_text() + "0" * 64 + " *an-added-file\n")
    steps.clear()
    with ib.working_copy(version, path, target, deadline, steps.append) as workspace:
        assert (workspace.path / "Makefile").is_file()
    assert steps == ["container_setup"]


def test_it_fetches_the_imagebuilder_again_when_upstream_has_a_new_one(
    upstream, settings, mirror_copy, monkeypatch, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    deadline = time.monotonic() + 120
    with ib.working_copy("SNAPSHOT", "snapshots", "x86/64", deadline, lambda step: None) as before:
        old_revision = before.revision
    build_mirror(copy, snapshot_revision="r33333-abcdef0123")
    with ib.working_copy(
        "SNAPSHOT", "snapshots", "x86/64", deadline, lambda step: None
    ) as meanwhile:
        assert meanwhile.revision == old_revision  # verified moments ago
    monkeypatch.setattr(ib, "RECHECK_AFTER", 0)
    steps: list[str] = []
    with ib.working_copy("SNAPSHOT", "snapshots", "x86/64", deadline, steps.append) as after:
        assert after.revision == "r33333-abcdef0123"
    assert old_revision != after.revision
    assert "unpack_imagebuilder" in steps
    assert not (Path(settings.ASU_CACHE_DIR) / "SNAPSHOT" / "x86/64" / old_revision).exists()
    info = json.loads(
        (Path(settings.ASU_CACHE_DIR) / "SNAPSHOT/x86/64" / "current.json").read_text()
    )
    assert 'Current Revision: "r33333-abcdef0123"' in info["info"]["stdout"]


def test_it_asks_upstream_at_once_for_a_revision_the_cache_lacks(
    upstream, settings, mirror_copy, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    deadline = time.monotonic() + 120
    with ib.working_copy("SNAPSHOT", "snapshots", "x86/64", deadline, lambda step: None):
        pass
    build_mirror(copy, snapshot_revision="r33333-abcdef0123")
    with ib.working_copy(
        "SNAPSHOT", "snapshots", "x86/64", deadline, lambda step: None, revision="r33333-abcdef0123"
    ) as workspace:
        assert workspace.revision == "r33333-abcdef0123"


def test_it_keeps_building_with_the_cached_imagebuilder_when_upstream_is_down(
    upstream, settings, mirror_copy, release_target, monkeypatch, db
):
    copy, url = mirror_copy
    settings.ASU_UPSTREAM_URL = url
    version, path, target = release_target
    deadline = time.monotonic() + 120
    with ib.working_copy(version, path, target, deadline, lambda step: None):
        pass
    monkeypatch.setattr(ib, "RECHECK_AFTER", 0)  # so that the build asks upstream
    settings.ASU_UPSTREAM_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    with ib.working_copy(version, path, target, deadline, lambda step: None) as workspace:
        assert (workspace.path / "Makefile").is_file()


def test_a_build_leaves_the_cached_imagebuilder_untouched(upstream, settings, release_target, db):
    version, path, target = release_target
    deadline = time.monotonic() + 120
    with ib.working_copy(version, path, target, deadline, lambda step: None) as workspace:
        cache = Path(settings.ASU_CACHE_DIR) / version / target / workspace.revision
        before = _snapshot(cache)
        info = parse_make_info(run_make(workspace.path, ["make", "info"], deadline).stdout)
        profile = next(iter(info.profile_packages))
        add_repositories(workspace.path, {}, "append", [])
        bin_dir = workspace.path / "asu-bin"
        files = write_defaults(workspace.path, "echo hello\n")
        cmd = image_command(profile, [], "x", bin_dir, files=files)
        result = run_make(workspace.path, cmd, deadline, needs_network(workspace.path))
        assert result.returncode == 0, result.stderr
        assert (bin_dir / "profiles.json").is_file()
    assert _snapshot(cache) == before


@pytest.fixture
def release_target(mirror_dir: Path) -> tuple[str, str, str]:
    """A release the mirror offers, its folder there and a target of it:
    ("24.10.1", "releases/24.10.1", "ath79/generic")."""
    sums = sorted(mirror_dir.glob("releases/*/targets/*/*/sha256sums"))[0]
    return sums.parts[-5], "/".join(sums.parts[-6:-4]), "/".join(sums.parts[-3:-1])


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
