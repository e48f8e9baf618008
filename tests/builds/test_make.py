"""Running make: the argument list, the deadline, the environment and the sandbox."""

import os
import time
from pathlib import Path

import pytest

from builds import make
from builds.errors import BuildTimeout


def test_it_builds_the_make_image_command_as_an_argument_list(tmp_path):
    cmd = make.image_command(
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
    if sandboxed and not make.sandbox():
        pytest.skip("bubblewrap is not installed or cannot run here")
    if not sandboxed:
        monkeypatch.setattr(make, "sandbox", lambda: None)
    marker = f"{time.time_ns() % 1000}.{os.getpid()}"  # a unique sleep length to look for
    (tmp_path / "Makefile").write_text(
        f"slow:\n\t@echo started; sleep {marker} & sleep {marker}; echo never\n"
    )
    started = time.monotonic()
    with pytest.raises(BuildTimeout) as caught:
        make.run_make(tmp_path, ["make", "slow"], time.monotonic() + 1)
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
    result = make.run_make(tmp_path, ["make", "env"], time.monotonic() + 30)
    assert result.returncode == 0
    assert "do-not-leak" not in result.stdout
    assert "LC_ALL=C" in result.stdout


def test_it_runs_make_without_bubblewrap_too(tmp_path, monkeypatch):
    monkeypatch.setattr(make, "sandbox", lambda: None)
    (tmp_path / "Makefile").write_text("hello:\n\t@echo hello > out.txt; cat out.txt\n")
    result = make.run_make(tmp_path, ["make", "hello"], time.monotonic() + 30)
    assert (result.returncode, result.stdout) == (0, "hello\n")


@pytest.mark.skipif(not make.sandbox(), reason="bubblewrap is not installed or cannot run here")
def test_it_lets_make_write_only_in_its_working_copy(tmp_path):
    outside = Path("/usr/asu-sandbox-test")  # read-only inside the sandbox
    (tmp_path / "Makefile").write_text(
        f"write:\n\t@echo inside > inside.txt; (echo x > {outside}) 2>/dev/null || echo refused\n"
    )
    try:
        result = make.run_make(tmp_path, ["make", "write"], time.monotonic() + 30)
        assert not outside.exists()
    finally:
        outside.unlink(missing_ok=True)
    assert (tmp_path / "inside.txt").read_text() == "inside\n"
    assert result.stdout == "refused\n"


@pytest.mark.skipif(not make.sandbox(), reason="bubblewrap is not installed or cannot run here")
def test_it_keeps_make_off_the_network_unless_asked(tmp_path):
    (tmp_path / "Makefile").write_text("net:\n\t@cat /proc/net/dev | tail -n +3 | cut -d: -f1\n")
    closed = make.run_make(tmp_path, ["make", "net"], time.monotonic() + 30)
    opened = make.run_make(tmp_path, ["make", "net"], time.monotonic() + 30, network=True)
    assert closed.stdout.split() == ["lo"]
    assert opened.stdout.split() != ["lo"]
