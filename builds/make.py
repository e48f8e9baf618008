"""Running `make` in an ImageBuilder: an argument list (never a shell string), a scrubbed
environment and the build's deadline, inside bubblewrap when it is installed.

In the sandbox make runs as an unprivileged user of its own user namespace, sees a read-only
system with only the parts of /etc it needs, and writes only in its working copy. A build
whose feeds are remote gets a network namespace of its own, connected by pasta: it reaches
other hosts but not the worker host's loopback (Redis, PostgreSQL, ...), except the loopback
ports of its own feeds and proxies, which the server's configuration names."""

import contextlib
import functools
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from builds.errors import BuildError, BuildTimeout, remaining

log = logging.getLogger(__name__)

# Only these come from the worker's environment into make's: proxies the feeds may need.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
PASSED_ENVIRONMENT = (*PROXY_VARIABLES, "no_proxy")

# What of /etc the ImageBuilder's tools need: name lookups, TLS roots, the dynamic linker,
# Debian's alternatives (awk, ...). passwd and group are written for the sandbox's user.
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "gai.conf",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mke2fs.conf",
    "nsswitch.conf",
    "protocols",
    "services",
    "ssl",
    "wgetrc",
)
# systemd-resolved lists its upstream servers here; /etc/resolv.conf may name only its
# stub on 127.0.0.53, which a build in its own network namespace cannot reach.
RESOLVERS = ("/run/systemd/resolve/resolv.conf", "/etc/resolv.conf")
BUILD_UID = BUILD_GID = 1000  # the sandbox's user; it owns the working copy inside
PASTA_SECONDS = 30  # setting up the build's network takes well under a second


@dataclass
class MakeResult:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Sandbox:
    bwrap: str
    pasta: str | None  # None: builds that download feeds share the worker host's network


@functools.cache
def sandbox() -> Sandbox | None:
    """The sandbox tools that are installed and work here, else None (logged once)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        log.warning(
            "bubblewrap is not installed; ImageBuilder commands run as plain subprocesses "
            "with the worker's user, files and network"
        )
        return None
    # The probes use the real options: some containers allow bubblewrap but not /proc.
    problem = _probe(Sandbox(bwrap, None), network=False)
    if problem:
        log.warning(
            "bubblewrap is installed but cannot run here (%s); ImageBuilder commands run as "
            "plain subprocesses with the worker's user, files and network",
            problem,
        )
        return None
    pasta = shutil.which("pasta")
    problem = _probe(Sandbox(bwrap, pasta), network=True) if pasta else "not installed"
    if problem:
        log.warning(
            "ImageBuilder commands run inside bubblewrap (%s), but pasta cannot give builds "
            "a network of their own (%s): builds that download feeds share the worker "
            "host's network, its loopback services included",
            bwrap,
            problem,
        )
        return Sandbox(bwrap, None)
    log.info(
        "ImageBuilder commands run inside bubblewrap (%s); builds that download feeds get "
        "a network namespace of their own through pasta (%s), without the host's loopback",
        bwrap,
        pasta,
    )
    return Sandbox(bwrap, pasta)


def _probe(tools: Sandbox, network: bool) -> str:
    """Why `true` cannot run in this sandbox, or "" if it can."""
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        try:
            process, pasta_pid = _start(tools, workdir, ["true"], network, _environment(workdir))
        except BuildError as error:
            return error.message
        _, stderr = process.communicate(timeout=PASTA_SECONDS)
        _stop(pasta_pid)
    if process.returncode:
        return _text(stderr).strip() or f"exit status {process.returncode}"
    return ""


def sandboxed(tools: Sandbox, workdir: Path, network: bool, fds: dict[str, int]) -> list[str]:
    """The bubblewrap prefix: its own user (BUILD_UID), read-only system, only `workdir`
    writable, a private /tmp, every namespace private but the network when `network`.

    `fds` are pipes: "passwd" and "group" to read the accounts from; with pasta, "info" and
    "block", for an outer bubblewrap that holds only the build's network namespace, which
    pasta joins before the sandbox starts. (pasta cannot join the sandbox itself: it moves
    to a second user namespace, to become BUILD_UID, that does not own the network.)"""
    args = [tools.bwrap, "--die-with-parent", "--new-session", "--unshare-all"]
    args += ["--unshare-user", "--uid", str(BUILD_UID), "--gid", str(BUILD_GID)]
    if network:
        args.append("--share-net")
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ETC_ENTRIES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    resolver = next((path for path in RESOLVERS if os.path.exists(path)), None)
    if resolver:
        args += ["--ro-bind", resolver, "/etc/resolv.conf"]
    for name in ("passwd", "group"):
        args += ["--ro-bind-data", str(fds[name]), f"/etc/{name}"]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--"]
    if "info" not in fds:
        return args
    outer = [tools.bwrap, "--die-with-parent", "--unshare-user", "--unshare-net"]
    outer += ["--dev-bind", "/", "/", "--info-fd", str(fds["info"])]
    return [*outer, "--block-fd", str(fds["block"]), "--", *args]


def _accounts(home: Path) -> dict[str, str]:
    """passwd and group naming only root and the sandbox's user, for tools that look up
    the user they run as."""
    return {
        "passwd": (
            "root:x:0:0:root:/root:/bin/sh\n"
            f"build:x:{BUILD_UID}:{BUILD_GID}:build:{home}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "group": f"root:x:0:\nbuild:x:{BUILD_GID}:\nnogroup:x:65534:\n",
    }


def loopback_ports(workdir: Path, env: dict[str, str]) -> list[int]:
    """TCP ports on the worker host's loopback that a build must reach: those of its feeds
    (repositories.conf or repositories, written from ASU_UPSTREAM_URL and the allow-list)
    and of the proxies it is given. Everything else on the loopback stays out of reach."""
    urls = [value for name, value in env.items() if name in PROXY_VARIABLES]
    for name in ("repositories.conf", "repositories"):
        path = workdir / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if not line.lstrip().startswith("#"):
                    urls += re.findall(r"\bhttps?://\S+", line)
    ports = set()
    for url in urls:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:  # not a URL: nothing to reach
            continue
        if _is_loopback(parts.hostname or ""):
            ports.add(port)
    return sorted(ports)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _start(
    tools: Sandbox, workdir: Path, args: list[str], network: bool, env: dict[str, str]
) -> tuple[subprocess.Popen, int | None]:
    """Start `args` in the sandbox; with pasta, connect its network before they run.
    Returns the process and pasta's, which the caller stops when the process has ended."""
    isolated = bool(network and tools.pasta)
    pasta_pid = None
    pipes = _Pipes()
    try:
        child_fds = {}
        for name, text in _accounts(workdir).items():
            child_fds[name], write_end = pipes.open()
            os.write(write_end, text.encode())  # far below a pipe's buffer
            pipes.close(write_end)
        if isolated:
            info_read, child_fds["info"] = pipes.open()
            child_fds["block"], block_write = pipes.open()
        cmd = [*sandboxed(tools, workdir, network, child_fds), *args]
        process = _popen(cmd, workdir, env, tuple(child_fds.values()))
        for fd in child_fds.values():
            pipes.close(fd)  # so a bubblewrap that fails early ends what we read
        if isolated:
            assert tools.pasta
            ports = loopback_ports(workdir, env)
            pasta_pid = _connect_network(tools.pasta, process, info_read, ports)
            if pasta_pid:
                # make may start; if bubblewrap has ended meanwhile, its output says why.
                with contextlib.suppress(BrokenPipeError):
                    os.write(block_write, b"1")
        return process, pasta_pid
    finally:
        pipes.close_all()


class _Pipes:
    """Pipe ends this process holds, each closed exactly once (fd numbers are reused)."""

    def __init__(self) -> None:
        self.fds: set[int] = set()

    def open(self) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        self.fds.update((read_end, write_end))
        return read_end, write_end

    def close(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.discard(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self.fds):
            self.close(fd)


def _popen(
    cmd: list[str], workdir: Path, env: dict[str, str], fds: tuple[int, ...] = ()
) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=fds,
        start_new_session=True,  # its own process group, so a timeout kills all of make
        umask=0o022,  # the ImageBuilder's prerequisite check insists on it
    )


def _connect_network(
    pasta: str, process: subprocess.Popen, info: int, ports: list[int]
) -> int | None:
    """Give the sandbox's network namespace a connection out through pasta: no inbound
    ports, no way to the host's loopback (--no-map-gw) except `ports`. Returns the pid of
    pasta, which runs on in the background (and does not notice the sandbox end: stop it),
    or None if bubblewrap failed before the sandbox was ready: its output says why."""
    child = _child_pid(info)
    if child is None:
        return None
    forwarded = ",".join(str(port) for port in ports) or "none"
    # pasta, started as root, would switch to nobody, who may not enter the sandbox.
    runas = f"{os.geteuid()}:{os.getegid()}"
    cmd = [pasta, "--runas", runas, "--config-net", "--no-map-gw", "--quiet"]
    cmd += ["-t", "none", "-u", "none", "-T", forwarded, "-U", "none"]
    with tempfile.TemporaryDirectory() as folder:
        pid_file = Path(folder) / "pasta.pid"
        try:
            result = subprocess.run(
                [*cmd, "--pid", str(pid_file), str(child)],
                capture_output=True,
                text=True,
                timeout=PASTA_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            result = subprocess.CompletedProcess(cmd, -1, "", "timed out")
        pasta_pid = int(pid_file.read_text()) if pid_file.is_file() else None
    if result.returncode or not pasta_pid:
        _stop(pasta_pid)
        _kill_group(process)
        process.communicate()
        detail = _pasta_messages(result.stderr) or f"exit status {result.returncode}"
        raise BuildError(f"The build's network could not be set up: pasta: {detail}")
    return pasta_pid


def _stop(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _child_pid(info: int) -> int | None:
    """The sandbox's first process, from bubblewrap's --info-fd JSON."""
    data = b""
    while chunk := os.read(info, 4096):
        data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except ValueError:
            continue
    return None


def _pasta_messages(stderr: str) -> str:
    # Without a system logger pasta reports every line it fails to send to it.
    return "; ".join(
        line.strip() for line in stderr.splitlines() if line.strip() and "to syslog" not in line
    )


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
    """Run `args` (make and its arguments) in `workdir` before `deadline`; `network` when
    the ImageBuilder's feeds are remote.

    On timeout the whole process group (or bubblewrap's namespace) is killed and
    BuildTimeout raised with the output so far.
    """
    tools = sandbox()
    env = _environment(workdir)
    pasta_pid = None
    if tools:
        process, pasta_pid = _start(tools, workdir, list(args), network, env)
    else:
        process = _popen(list(args), workdir, env)
    try:
        stdout, stderr = process.communicate(timeout=remaining(deadline))
    except (subprocess.TimeoutExpired, BuildTimeout):
        _kill_group(process)
        try:
            stdout, stderr = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a child left the group and holds the pipes
            stdout, stderr = b"", b""
        raise BuildTimeout(_text(stdout), _text(stderr)) from None
    finally:
        _stop(pasta_pid)
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
