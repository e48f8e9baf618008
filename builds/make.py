"""Running `make` in an ImageBuilder: an argument list (never a shell string), a scrubbed
environment and the build's deadline, inside bubblewrap when it is installed.

In the sandbox make runs as an unprivileged user of its own user namespace (on the host: the
worker's user, or ASU_SANDBOX_USER when the worker is root), sees a read-only system with only
the parts of /etc it needs, and writes only in its working copy. A build whose feeds are
remote gets a network namespace of its own, connected by pasta: it reaches the internet but
not the worker host's loopback (Redis, PostgreSQL, ...), except the loopback ports of its own
feeds and proxies, which the server's configuration names, nor private, link-local or CGNAT
addresses (the LAN, cloud metadata), except its DNS resolvers, feeds and proxies and
ASU_SANDBOX_ALLOW_NETWORKS."""

import contextlib
import functools
import ipaddress
import json
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from builds.errors import BuildError, BuildTimeout, remaining

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
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
# Destinations a build's network namespace refuses: private (RFC 1918, IPv6 ULA), CGNAT,
# link-local (cloud metadata on 169.254.169.254), "this network" and loopback. The
# namespace's own addresses stay reachable, its loopback included: the rule that looks up
# local addresses comes first, so the feeds' ports that pasta forwards keep working.
REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
ALLOWED_PREFERENCE, REFUSED_PREFERENCE = 100, 200  # ip rule priorities: allowed ones first


@dataclass
class MakeResult:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Sandbox:
    bwrap: str
    pasta: str | None = None  # None: builds that download feeds share the host's network
    refuses_private: bool = False  # whether pasta's namespace refuses REFUSED_NETWORKS
    user: tuple[int, int] | None = None  # host uid, gid it runs as; None: the worker's


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
    user = _sandbox_user()
    # The probes use the real options: some containers allow bubblewrap but not /proc.
    problem = _probe(Sandbox(bwrap, user=user), network=False)
    if problem:
        log.warning(
            "bubblewrap is installed but cannot run here (%s); ImageBuilder commands run as "
            "plain subprocesses with the worker's user, files and network",
            problem,
        )
        return None
    tools, problem = _network_tools(bwrap, user)
    if tools.pasta is None:
        log.warning(
            "ImageBuilder commands run inside bubblewrap (%s), but pasta cannot give builds "
            "a network of their own (%s): builds that download feeds share the worker "
            "host's network, its loopback services included",
            bwrap,
            problem,
        )
    elif not tools.refuses_private:
        log.warning(
            "ImageBuilder commands run inside bubblewrap (%s) and builds that download feeds "
            "get a network namespace of their own through pasta (%s), but it cannot refuse "
            "private addresses (%s): builds reach the worker host's private networks and "
            "link-local addresses, cloud metadata (169.254.169.254) included",
            bwrap,
            tools.pasta,
            problem,
        )
    else:
        log.info(
            "ImageBuilder commands run inside bubblewrap (%s); builds that download feeds "
            "get a network namespace of their own through pasta (%s), without the host's "
            "loopback or private addresses",
            bwrap,
            tools.pasta,
        )
    return tools


def _network_tools(bwrap: str, user: tuple[int, int] | None) -> tuple[Sandbox, str]:
    """The most the network of builds that download feeds can be isolated here, and why
    not more ("" if nothing is missing)."""
    pasta = shutil.which("pasta")
    if not pasta:
        return Sandbox(bwrap, user=user), "not installed"
    best = Sandbox(bwrap, pasta, refuses_private=True, user=user)
    problem = _probe(best, network=True)
    if not problem:
        return best, ""
    # Without the rules (no iproute2?), pasta alone still keeps the host's loopback out.
    if _probe(Sandbox(bwrap, pasta, user=user), network=True):
        return Sandbox(bwrap, user=user), problem
    return Sandbox(bwrap, pasta, user=user), problem


def _sandbox_user() -> tuple[int, int] | None:
    """The host user and group the sandbox runs as when the worker is root, so that a
    package's install script never creates or changes files as the host's root."""
    if os.geteuid() != 0:
        return None  # the worker's own user
    name = settings.ASU_SANDBOX_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ImproperlyConfigured(f"ASU_SANDBOX_USER: no user {name!r} on this host") from None
    if entry.pw_uid == 0:
        return None
    user = (entry.pw_uid, entry.pw_gid)
    # bubblewrap finds the working copies by their path, as this user.
    cache = Path(settings.ASU_CACHE_DIR)
    cache.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["test", "-x", str(cache)], check=False, **_as_user(user)).returncode:
        raise ImproperlyConfigured(
            f"ASU_SANDBOX_USER {name} cannot reach ASU_CACHE_DIR {cache}, where builds run: "
            "open it and the folders above it to that user (chmod o+x)"
        )
    return user


def _as_user(user: tuple[int, int] | None) -> dict:
    """subprocess arguments that start a command as `user` (the sandbox's host user)."""
    if not user:
        return {}
    return {"user": user[0], "group": user[1], "extra_groups": []}


def hand_over(workdir: Path) -> None:
    """Let make write in the working copy `workdir`: its folders and the files it alone
    holds become the sandbox's host user's (when the worker is root; else they are the
    worker's already). Files hard-linked with the ImageBuilder cache stay the worker's:
    make only reads them, and no build may change what other builds share."""
    tools = sandbox()
    if tools and tools.user:
        _chown_tree(workdir, *tools.user, shared_too=False)


@contextlib.contextmanager
def lent_to_sandbox(folder: Path) -> Iterator[None]:
    """Let make write in `folder` for a while (a freshly unpacked ImageBuilder's first
    `make info`), then give all of it back to the worker, so builds cannot change it."""
    hand_over(folder)
    try:
        yield
    finally:
        tools = sandbox()
        if tools and tools.user:
            _chown_tree(folder, os.geteuid(), os.getegid(), shared_too=True)


def _chown_tree(top: Path, uid: int, gid: int, shared_too: bool) -> None:
    for root, dirs, files in os.walk(top):
        os.lchown(root, uid, gid)
        for name in files + dirs:
            path = os.path.join(root, name)
            status = os.lstat(path)
            if shared_too or not (stat.S_ISREG(status.st_mode) and status.st_nlink > 1):
                os.lchown(path, uid, gid)


def _probe(tools: Sandbox, network: bool) -> str:
    """Why `true` cannot run in this sandbox, or "" if it can."""
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        if tools.user:
            os.chown(workdir, *tools.user)
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
    args = [tools.bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL"]
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
    resolver = _resolv_conf()
    if resolver:
        args += ["--ro-bind", resolver, "/etc/resolv.conf"]
    for name in ("passwd", "group"):
        args += ["--ro-bind-data", str(fds[name]), f"/etc/{name}"]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--"]
    if "info" not in fds:
        return args
    # In the outer user namespace the sandbox's host user is root, with the capabilities
    # the inner bubblewrap needs to set up as root and _refuse_private's ip to add rules.
    # make, in the inner one, has none over the outer namespace or its network.
    outer = [tools.bwrap, "--die-with-parent", "--unshare-user", "--uid", "0", "--gid", "0"]
    outer += ["--cap-add", "ALL", "--unshare-net"]
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


def _resolv_conf() -> str | None:
    return next((path for path in RESOLVERS if os.path.exists(path)), None)


def loopback_ports(workdir: Path, env: dict[str, str]) -> list[int]:
    """TCP ports on the worker host's loopback that a build must reach: those of its feeds
    and of the proxies it is given. Everything else on the loopback stays out of reach."""
    return sorted({port for host, port in _feeds_and_proxies(workdir, env) if _is_loopback(host)})


def allowed_networks(workdir: Path, env: dict[str, str]) -> list[IPNetwork]:
    """Private destinations a build reaches after all: ASU_SANDBOX_ALLOW_NETWORKS, the
    DNS resolvers of its resolv.conf, and the feeds and proxies named by address (by
    ASU_UPSTREAM_URL, the allow-list or the worker's environment: the operator's choice).
    Feeds on the loopback come through pasta's forwarded ports instead."""
    networks = [ipaddress.ip_network(network) for network in settings.ASU_SANDBOX_ALLOW_NETWORKS]
    hosts = [host for host, _ in _feeds_and_proxies(workdir, env)]
    resolver = _resolv_conf()
    if resolver:
        hosts += re.findall(r"^\s*nameserver\s+([0-9A-Fa-f.:]+)", Path(resolver).read_text(), re.M)
    for host in hosts:
        address = _address(host)
        if address and not address.is_loopback:
            networks.append(ipaddress.ip_network(address))
    return list(dict.fromkeys(networks))  # ip refuses a rule twice


def _feeds_and_proxies(workdir: Path, env: dict[str, str]) -> list[tuple[str, int]]:
    """Host and port of each feed (repositories.conf or repositories, written from
    ASU_UPSTREAM_URL and the allow-list) and proxy of a build."""
    urls = [value for name, value in env.items() if name in PROXY_VARIABLES]
    for name in ("repositories.conf", "repositories"):
        path = workdir / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if not line.lstrip().startswith("#"):
                    urls += re.findall(r"\bhttps?://\S+", line)
    hosts = []
    for url in urls:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:  # not a URL: nothing to reach
            continue
        hosts.append((parts.hostname or "", port))
    return hosts


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%")[0])  # fe80::1%eth0: the scope goes
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    address = _address(host)
    return host == "localhost" or bool(address and address.is_loopback)


def _start(
    tools: Sandbox, workdir: Path, args: list[str], network: bool, env: dict[str, str]
) -> tuple[subprocess.Popen, int | None]:
    """Start `args` in the sandbox; with pasta, connect its network (and refuse private
    destinations in it) before they run. Returns the process and pasta's, which the
    caller stops when the process has ended."""
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
        process = _popen(cmd, workdir, env, tuple(child_fds.values()), _as_user(tools.user))
        for fd in child_fds.values():
            pipes.close(fd)  # so a bubblewrap that fails early ends what we read
        # If bubblewrap fails before the sandbox is ready, there is no child: its output
        # says why.
        child = _child_pid(info_read) if isolated else None
        if child is not None:
            try:
                pasta_pid = _connect_network(tools, child, loopback_ports(workdir, env))
                if tools.refuses_private:
                    _refuse_private(tools, child, allowed_networks(workdir, env))
            except BuildError:
                _stop(pasta_pid)
                _kill_group(process)
                stdout, stderr = process.communicate()
                if _text(stderr).startswith(BWRAP_ERROR):
                    # bubblewrap failed on its own (its child is gone, so nsenter or
                    # pasta found nothing): a sandbox that did not start, tried again.
                    raise SandboxEnded(
                        process.returncode or 1, _text(stdout), _text(stderr)
                    ) from None
                raise
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
    cmd: list[str],
    workdir: Path,
    env: dict[str, str],
    fds: tuple[int, ...] = (),
    as_user: dict | None = None,
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
        **(as_user or {}),
    )


def _connect_network(tools: Sandbox, child: int, ports: list[int]) -> int:
    """Give the network namespace of the sandbox's first process `child` a connection
    out through pasta: no inbound ports, no way to the host's loopback (--no-map-gw)
    except `ports`. Returns the pid of pasta, which runs on in the background (and does
    not notice the sandbox end: stop it). Raises BuildError if pasta fails."""
    assert tools.pasta
    forwarded = ",".join(str(port) for port in ports) or "none"
    # pasta, started as root, would switch to nobody: it runs as the sandbox's owner.
    uid, gid = tools.user or (os.geteuid(), os.getegid())
    cmd = [tools.pasta, "--runas", f"{uid}:{gid}", "--config-net", "--no-map-gw", "--quiet"]
    cmd += ["-t", "none", "-u", "none", "-T", forwarded, "-U", "none"]
    with tempfile.TemporaryDirectory() as folder:
        os.chown(folder, uid, gid)  # pasta writes its pid file there
        pid_file = Path(folder) / "pasta.pid"
        try:
            result = subprocess.run(
                [*cmd, "--pid", str(pid_file), str(child)],
                capture_output=True,
                text=True,
                timeout=PASTA_SECONDS,
                check=False,
                **_as_user(tools.user),
            )
        except subprocess.TimeoutExpired:
            result = subprocess.CompletedProcess(cmd, -1, "", "timed out")
        pasta_pid = int(pid_file.read_text()) if pid_file.is_file() else None
    if result.returncode or not pasta_pid:
        _stop(pasta_pid)
        detail = _pasta_messages(result.stderr) or f"exit status {result.returncode}"
        raise BuildError(f"The build's network could not be set up: pasta: {detail}")
    return pasta_pid


def _refuse_private(tools: Sandbox, child: int, allowed: list[IPNetwork]) -> None:
    """Add routing rules to the network namespace of `child` (entered as its owner,
    with iproute2) that refuse REFUSED_NETWORKS but `allowed`: connecting there fails
    at once with "Permission denied". Nothing in the sandbox can remove them: make runs
    in a user namespace of its own, without rights over the network namespace's."""
    # The sandbox's host user is the outer namespace's root already (and setgroups, which
    # nsenter would call to become it, is denied there).
    nsenter = [_tool("nsenter"), f"--target={child}", "--user", "--net", "--preserve-credentials"]
    for version in (4, 6) if os.path.exists("/proc/net/if_inet6") else (4,):
        rules = [
            f"rule add to {network} lookup main pref {ALLOWED_PREFERENCE}"
            for network in allowed
            if network.version == version
        ]
        rules += [
            f"rule add to {network} prohibit pref {REFUSED_PREFERENCE}"
            for network in REFUSED_NETWORKS
            if network.version == version
        ]
        try:
            result = subprocess.run(
                [*nsenter, _tool("ip"), f"-{version}", "-batch", "-"],
                input="\n".join(rules) + "\n",
                capture_output=True,
                text=True,
                timeout=PASTA_SECONDS,
                check=False,
                **_as_user(tools.user),
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            result = subprocess.CompletedProcess(nsenter, -1, "", str(error))
        if result.returncode:
            detail = result.stderr.strip() or f"exit status {result.returncode}"
            raise BuildError(
                f"The build's network could not be set up: private addresses could not be "
                f"refused: {detail}"
            )


def _tool(name: str) -> str:
    """The path of `name`, looked for in the sbin folders too (ip lives there)."""
    path = os.environ.get("PATH", os.defpath) + ":/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(name, path=path) or name


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


class SandboxFailed(RuntimeError):
    """bubblewrap could not set the sandbox up, again and again: the server's fault, so the
    build is not answered as the request's failure."""


class SandboxEnded(Exception):
    """bubblewrap ended on its own while its network was being set up (make never ran)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(stderr)
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


# bubblewrap's own errors (before make runs) start with this; under heavy load its
# loopback setup in a fresh network namespace fails now and then ("loopback: Failed
# RTM_NEWADDR"), and a second try works.
BWRAP_ERROR = "bwrap: "
SANDBOX_ATTEMPTS = 3


def run_make(workdir: Path, args: list[str], deadline: float, network: bool = False) -> MakeResult:
    """Run `args` (make and its arguments) in `workdir` before `deadline`; `network` when
    the ImageBuilder's feeds are remote.

    On timeout the whole process group (or bubblewrap's namespace) is killed and
    BuildTimeout raised with the output so far. A sandbox that fails to start is tried
    again; SandboxFailed when it never starts.
    """
    for attempt in range(1, SANDBOX_ATTEMPTS + 1):
        result = _run_make_once(workdir, args, deadline, network)
        if not _sandbox_setup_failed(result):
            return result
        log.warning("Sandbox setup failed (try %d): %s", attempt, result.stderr.strip())
        time.sleep(0.2 * attempt)
    raise SandboxFailed(f"the build sandbox could not be set up: {result.stderr.strip()}")


def _sandbox_setup_failed(result: MakeResult) -> bool:
    return result.returncode != 0 and not result.stdout and result.stderr.startswith(BWRAP_ERROR)


def _run_make_once(workdir: Path, args: list[str], deadline: float, network: bool) -> MakeResult:
    tools = sandbox()
    env = _environment(workdir)
    pasta_pid = None
    if tools:
        try:
            process, pasta_pid = _start(tools, workdir, list(args), network, env)
        except SandboxEnded as ended:
            return MakeResult(list(args), ended.returncode, ended.stdout, ended.stderr)
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
