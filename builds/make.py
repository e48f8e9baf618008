"""Running `make` in an ImageBuilder: an argument list (never a shell string), a scrubbed
environment and the build's deadline, inside bubblewrap when it is installed."""

import functools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builds.errors import BuildTimeout, remaining

log = logging.getLogger(__name__)

# Only these come from the worker's environment into make's: proxies the feeds may need.
PASSED_ENVIRONMENT = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY")


@dataclass
class MakeResult:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str


@functools.cache
def sandbox() -> str | None:
    """The bubblewrap binary if it is installed and works here, else None (logged once)."""
    bwrap = shutil.which("bwrap")
    if bwrap:
        # The probe uses the real options: some containers allow bubblewrap but not /proc.
        with tempfile.TemporaryDirectory() as scratch:
            probe = subprocess.run(
                [*sandboxed(bwrap, Path(scratch), network=False), "true"],
                capture_output=True,
                text=True,
                check=False,
            )
        if probe.returncode == 0:
            log.info("ImageBuilder commands run inside bubblewrap (%s)", bwrap)
            return bwrap
        log.warning(
            "bubblewrap is installed but cannot run here (%s); ImageBuilder commands run "
            "as plain subprocesses",
            probe.stderr.strip(),
        )
        return None
    log.warning("bubblewrap is not installed; ImageBuilder commands run as plain subprocesses")
    return None


def sandboxed(bwrap: str, workdir: Path, network: bool) -> list[str]:
    """The bubblewrap prefix: read-only system, only `workdir` writable, a private /tmp,
    no network unless asked, every other namespace private."""
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all"]
    if network:
        args.append("--share-net")
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    # /etc/resolv.conf may point into /run (systemd-resolved).
    args += ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--"]
    return args


def _environment(workdir: Path) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(workdir),
        "LC_ALL": "C",
        "LANG": "C",
        "TERM": "dumb",
    }
    env.update({k: v for k, v in os.environ.items() if k in PASSED_ENVIRONMENT})
    return env


def run_make(workdir: Path, args: list[str], deadline: float, network: bool = False) -> MakeResult:
    """Run `args` (make and its arguments) in `workdir` before `deadline`.

    On timeout the whole process group (or bubblewrap's namespace) is killed and
    BuildTimeout raised with the output so far.
    """
    bwrap = sandbox()
    cmd = [*sandboxed(bwrap, workdir, network), *args] if bwrap else list(args)
    process = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=_environment(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so a timeout kills all of make
        umask=0o022,  # the ImageBuilder's prerequisite check insists on it
    )
    try:
        stdout, stderr = process.communicate(timeout=remaining(deadline))
    except (subprocess.TimeoutExpired, BuildTimeout):
        _kill_group(process)
        try:
            stdout, stderr = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a child left the group and holds the pipes
            stdout, stderr = b"", b""
        raise BuildTimeout(_text(stdout), _text(stderr)) from None
    return MakeResult(list(args), process.returncode, _text(stdout), _text(stderr))


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.kill()


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def image_command(
    profile: str,
    packages: list[str],
    extra_image_name: str,
    bin_dir: Path,
    files: Path | None = None,
    rootfs_size_mb: int | None = None,
    filesystem: str | None = None,
) -> list[str]:
    """The `make image` argument list."""
    cmd = [
        "make",
        "image",
        f"PROFILE={profile}",
        f"PACKAGES={' '.join(packages)}",
        f"EXTRA_IMAGE_NAME={extra_image_name}",
        f"BIN_DIR={bin_dir}",
    ]
    if files:
        cmd.append(f"FILES={files}")
    if rootfs_size_mb:
        cmd.append(f"ROOTFS_PARTSIZE={rootfs_size_mb}")
    if filesystem:
        cmd.append(f"ROOTFS_FILESYSTEM={filesystem}")
    return cmd
