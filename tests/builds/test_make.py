"""Running make: the argument list, the deadline, the environment and the sandbox."""

import dataclasses
import logging
import os
import pwd
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from builds import make
from builds.errors import BuildError, BuildTimeout


@pytest.fixture(autouse=True)
def _working_copy(tmp_path: Path) -> None:
    make.hand_over(tmp_path)  # as the builds' working copies are: make writes there


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


@pytest.mark.parametrize(
    ("sandboxed", "network"),
    [(True, False), (True, True), (False, False)],
    ids=["bubblewrap", "bubblewrap-and-pasta", "plain"],
)
def test_it_kills_make_and_its_children_when_the_deadline_passes(
    tmp_path, monkeypatch, sandboxed, network
):
    if sandboxed and not make.sandbox():
        pytest.skip("bubblewrap is not installed or cannot run here")
    if network and not make.sandbox().pasta:
        pytest.skip("pasta is not installed or cannot run here")
    if not sandboxed:
        monkeypatch.setattr(make, "sandbox", lambda: None)
    # A unique sleep length to look for, long enough to outlast the deadline.
    marker = f"{100 + time.time_ns() % 1000}.{os.getpid()}"
    (tmp_path / "Makefile").write_text(
        f"slow:\n\t@echo started; sleep {marker} & sleep {marker}; echo never\n"
    )
    started = time.monotonic()
    with pytest.raises(BuildTimeout) as caught:
        make.run_make(tmp_path, ["make", "slow"], time.monotonic() + 1, network)
    assert time.monotonic() - started < 10
    assert "started" in caught.value.stdout
    assert "limit of" in caught.value.message
    time.sleep(0.5)
    assert not _processes_with(f"sleep\0{marker}")
    assert not _processes_with(str(tmp_path))  # nor any bubblewrap or pasta of the build


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


needs_pasta = pytest.mark.skipif(
    not (make.sandbox() and make.sandbox().pasta),
    reason="bubblewrap or pasta is not installed or cannot run here (no user namespaces?)",
)
CONNECT = (
    "import socket, sys\n"
    "for port in sys.argv[1:]:\n"
    "    try:\n"
    "        socket.create_connection(('127.0.0.1', int(port)), timeout=3).close()\n"
    "        print(port, 'connected')\n"
    "    except OSError as error:\n"
    "        print(port, 'failed', error)\n"
)


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port on the host's loopback that accepts connections (into its backlog)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def _connect_from_make(workdir: Path, ports: list[int], network: bool) -> dict[int, str]:
    (workdir / "connect.py").write_text(CONNECT)
    (workdir / "Makefile").write_text(
        f"connect:\n\t@python3 connect.py {' '.join(map(str, ports))}\n"
    )
    result = make.run_make(workdir, ["make", "connect"], time.monotonic() + 60, network)
    assert result.returncode == 0, result.stderr
    return {int(line.split()[0]): line.split()[1] for line in result.stdout.splitlines()}


@needs_pasta
def test_a_networked_build_reaches_none_of_the_hosts_loopback_but_its_feeds(
    tmp_path, listening_port
):
    with socket.create_server(("127.0.0.1", 0)) as feed_server:
        feed = feed_server.getsockname()[1]
        (tmp_path / "repositories.conf").write_text(
            f"src/gz base http://127.0.0.1:{feed}/base\n# src/gz old http://127.0.0.1:1/x\n"
        )
        ports = [6379, 5432, listening_port, feed]  # Redis, PostgreSQL, a test port, the feed
        assert all(answers_on_loopback(port) for port in ports)  # each answers on the host itself
        inside = _connect_from_make(tmp_path, ports, network=True)
    assert inside == {6379: "failed", 5432: "failed", listening_port: "failed", feed: "connected"}
    assert _gone(f"-T\0{feed}\0")  # the build's pasta stopped with it


PRIVATE = ["10.255.255.1", "172.16.0.1", "192.168.0.1", "100.64.0.1", "169.254.169.254"]
PRIVATE_V6 = ["fd00::1", "fd00:ec2::254"]  # a ULA, and AWS's metadata service
OUTCOMES = (
    "import errno, socket, sys\n"
    "for host in sys.argv[2:]:\n"
    "    try:\n"
    "        socket.create_connection((host, 80), timeout=1).close()\n"
    "        print(host, 'connected')\n"
    "    except OSError as error:\n"
    "        print(host, errno.errorcode.get(error.errno, 'timeout'))\n"
    "try:\n"
    "    socket.getaddrinfo(sys.argv[1], 443)\n"
    "    print(sys.argv[1], 'resolved')\n"
    "except OSError:\n"
    "    print(sys.argv[1], 'unresolved')\n"
    "import subprocess\n"  # and the rules cannot be taken away from inside
    "removed = subprocess.run(['ip', 'rule', 'flush'], capture_output=True).returncode == 0\n"
    "print('rules', 'removed' if removed else 'kept')\n"
)


def _resolves(name: str) -> str:
    try:
        socket.getaddrinfo(name, 443)
    except OSError:
        return "unresolved"
    return "resolved"


@needs_pasta
def test_a_networked_build_is_refused_private_addresses_but_resolves_names(tmp_path, settings):
    settings.ASU_SANDBOX_ALLOW_NETWORKS = ["192.168.0.0/16"]  # a LAN with a feed host, say
    hosts = PRIVATE + (PRIVATE_V6 if os.path.exists("/proc/net/if_inet6") else [])
    (tmp_path / "outcomes.py").write_text(OUTCOMES)
    (tmp_path / "Makefile").write_text(f"try:\n\t@python3 outcomes.py pypi.org {' '.join(hosts)}\n")
    result = make.run_make(tmp_path, ["make", "try"], time.monotonic() + 60, network=True)
    assert result.returncode == 0, result.stderr
    inside = dict(line.split() for line in result.stdout.splitlines())
    # Refused by the sandbox at once ("Permission denied"), not left to time out.
    assert {host: inside[host] for host in hosts if host != "192.168.0.1"} == {
        host: "EACCES" for host in hosts if host != "192.168.0.1"
    }
    assert inside["192.168.0.1"] != "EACCES"  # the allowed network goes out as before
    # Name lookups still work, the resolver being private or not (here: 10.255.255.53).
    assert inside["pypi.org"] == _resolves("pypi.org")
    assert inside["rules"] == "kept"


def test_it_lets_builds_reach_their_resolvers_private_feeds_and_allowed_networks(
    tmp_path, settings, monkeypatch
):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\nnameserver fe80::1%eth0\n# nameserver 10.9.9.9\n")
    monkeypatch.setattr(make, "RESOLVERS", (str(resolv),))
    settings.ASU_SANDBOX_ALLOW_NETWORKS = ["172.20.0.0/16"]
    (tmp_path / "repositories.conf").write_text(
        "src/gz base http://192.168.1.5:8080/base\nsrc/gz lan http://[fd12::5]/lan\n"
        "src/gz mirror http://127.0.0.1:8000/x\nsrc/gz up https://downloads.openwrt.org/x\n"
    )
    env = {"https_proxy": "http://10.1.1.1:3128"}
    assert [str(network) for network in make.allowed_networks(tmp_path, env)] == [
        "172.20.0.0/16",
        "10.1.1.1/32",
        "192.168.1.5/32",
        "fd12::5/128",
        "10.0.0.53/32",
        "fe80::1/128",
    ]


def _gone(text: str) -> bool:
    """Whether no process has `text` in its command line within a few seconds."""
    for _ in range(50):
        if not _processes_with(text):
            return True
        time.sleep(0.1)
    return False


def answers_on_loopback(port: int) -> bool:
    """Whether something listens on `port` of this host's loopback."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    except OSError:
        return False
    return True


def test_it_forwards_the_loopback_ports_of_the_feeds_and_proxies_only(tmp_path):
    (tmp_path / "repositories").write_text(
        "http://127.0.0.1:8080/snapshots/targets/x86/64/packages/packages.adb\n"
        "https://localhost/feed/packages.adb\n"
        "https://downloads.openwrt.org/snapshots/packages/x86_64/base/packages.adb\n"
        "http://10.0.0.5:81/lan/packages.adb\n"
        "# http://127.0.0.1:6379/commented-out\n"
        "packages\n"
    )
    env = {"http_proxy": "http://127.0.0.1:3128", "no_proxy": "127.0.0.1:9999"}
    assert make.loopback_ports(tmp_path, env) == [443, 3128, 8080]


@pytest.mark.skipif(not make.sandbox(), reason="bubblewrap is not installed or cannot run here")
@pytest.mark.parametrize("network", [False, True], ids=["offline", "networked"])
def test_it_runs_make_as_an_unprivileged_user_with_a_few_files_of_etc(tmp_path, network):
    if network and not make.sandbox().pasta:
        pytest.skip("pasta is not installed or cannot run here")
    (tmp_path / "Makefile").write_text(
        "who:\n\t@id -u; id -un; touch mine; stat -c %u mine; ls /etc; cat /etc/passwd\n"
    )
    result = make.run_make(tmp_path, ["make", "who"], time.monotonic() + 30, network)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["1000", "build", "1000"]
    etc = set(lines[3 : lines.index("root:x:0:0:root:/root:/bin/sh")])
    assert {"passwd", "group", "resolv.conf", "hosts", "ssl", "nsswitch.conf"} <= etc
    assert not {"shadow", "postgresql", "redis", "sudoers", "ssh"} & etc
    # Outside it is the file of the worker's user, or of ASU_SANDBOX_USER for a root worker.
    assert (tmp_path / "mine").stat().st_uid == sandbox_host_uid()
    assert (tmp_path / "mine").stat().st_uid != 0


def sandbox_host_uid() -> int:
    """The host user that the sandbox runs as: never root."""
    return pwd.getpwnam(settings.ASU_SANDBOX_USER).pw_uid if os.geteuid() == 0 else os.geteuid()


def _sandbox_at_start(caplog) -> make.Sandbox | None:
    """What the sandbox finds as at a worker's start, with what it logs."""
    make.sandbox.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="builds.make"):
            tools = make.sandbox()
    finally:
        make.sandbox.cache_clear()
    return tools


def test_it_says_at_start_what_the_sandbox_cannot_do(monkeypatch, caplog):
    found = {"bwrap": make.shutil.which("bwrap"), "pasta": None}
    monkeypatch.setattr(make.shutil, "which", found.get)
    tools = _sandbox_at_start(caplog)
    assert len(caplog.records) == 1
    if tools is None:
        assert "plain subprocesses" in caplog.text
    else:
        assert tools.pasta is None
        assert "share the worker host's network, its loopback services included" in caplog.text


@pytest.fixture
def without_ip(monkeypatch) -> None:
    """iproute2's ip missing, as in slim containers."""
    real = make._tool
    monkeypatch.setattr(
        make, "_tool", lambda name: "/nonexistent/ip" if name == "ip" else real(name)
    )


@needs_pasta
@pytest.mark.usefixtures("without_ip")
def test_it_warns_at_start_when_private_addresses_cannot_be_refused(caplog):
    tools = _sandbox_at_start(caplog)
    assert (tools.pasta, tools.refuses_private) == (make.shutil.which("pasta"), False)
    assert len(caplog.records) == 1
    assert "cannot refuse private addresses" in caplog.text
    assert "cloud metadata (169.254.169.254) included" in caplog.text


@needs_pasta
@pytest.mark.usefixtures("without_ip")
def test_a_build_whose_private_address_rules_fail_fails_instead_of_running_unprotected(tmp_path):
    (tmp_path / "Makefile").write_text("ran:\n\t@touch ran\n")
    with pytest.raises(BuildError, match="private addresses could not be refused"):
        make.run_make(tmp_path, ["make", "ran"], time.monotonic() + 30, network=True)
    assert not (tmp_path / "ran").exists()
    assert _gone(str(tmp_path))  # no bubblewrap of it is left


def flaky_bwrap(tmp_path: Path, failures: int) -> Path:
    """A bubblewrap that fails its setup `failures` times, as the real one now and then
    does under load, then runs the real one."""
    state = tmp_path / "flaky"
    state.mkdir(mode=0o777)
    state.chmod(0o777)  # the sandbox user counts its tries here
    wrapper = state / "bwrap"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'tries=$(ls "{state}" | grep -c try)\n'
        f'if [ "$tries" -lt {failures} ]; then\n'
        f'  touch "{state}/try$tries"\n'
        '  echo "bwrap: loopback: Failed RTM_NEWADDR: No child processes" >&2; exit 1\n'
        "fi\n"
        f'exec {make.sandbox().bwrap} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.skipif(not make.sandbox(), reason="bubblewrap is not installed or cannot run here")
def test_a_sandbox_that_fails_to_start_once_is_started_again(tmp_path, monkeypatch, caplog):
    tools = dataclasses.replace(make.sandbox(), bwrap=str(flaky_bwrap(tmp_path, failures=1)))
    monkeypatch.setattr(make, "sandbox", lambda: tools)
    (tmp_path / "Makefile").write_text("hello:\n\t@echo hello\n")
    with caplog.at_level(logging.WARNING, logger="builds.make"):
        result = make.run_make(tmp_path, ["make", "hello"], time.monotonic() + 30)
    assert (result.returncode, result.stdout) == (0, "hello\n")
    assert "Sandbox setup failed (try 1): bwrap: loopback" in caplog.text


@pytest.mark.skipif(not make.sandbox(), reason="bubblewrap is not installed or cannot run here")
def test_a_sandbox_that_never_starts_is_the_servers_fault_not_a_build_error(tmp_path, monkeypatch):
    tools = dataclasses.replace(make.sandbox(), bwrap=str(flaky_bwrap(tmp_path, failures=99)))
    monkeypatch.setattr(make, "sandbox", lambda: tools)
    (tmp_path / "Makefile").write_text("hello:\n\t@echo hello\n")
    with pytest.raises(make.SandboxFailed, match="could not be set up: bwrap: loopback") as failed:
        make.run_make(tmp_path, ["make", "hello"], time.monotonic() + 30)
    # Not a BuildError: the director records it as the server's fault, built again on
    # the next request instead of answered as this request's failure.
    assert not isinstance(failed.value, BuildError)
    assert len(list((tmp_path / "flaky").glob("try*"))) == make.SANDBOX_ATTEMPTS


def bwrap_ending_while_connected(tmp_path: Path, failures: int) -> Path:
    """A bubblewrap that, `failures` times, reports a child (already gone) and then fails
    its own setup, as the real one does under load while its network is being connected;
    then runs the real one."""
    wrapper = flaky_bwrap(tmp_path, failures)
    state = wrapper.parent
    wrapper.write_text(
        "#!/bin/bash\n"
        'info=""; previous=""\n'
        'for arg in "$@"; do [ "$previous" = "--info-fd" ] && info=$arg; previous=$arg; done\n'
        f'tries=$(ls "{state}" | grep -c try)\n'
        f'if [ "$tries" -lt {failures} ]; then\n'
        f'  touch "{state}/try$tries"\n'
        "  true & gone=$!; wait $gone\n"
        '  echo "{\\"child-pid\\": $gone}" >&"$info"\n'  # bash: any fd number
        '  echo "bwrap: loopback: Failed RTM_NEWADDR: No child processes" >&2; exit 1\n'
        "fi\n"
        f'exec {make.sandbox().bwrap} "$@"\n'
    )
    return wrapper


@needs_pasta
def test_a_sandbox_that_ends_while_its_network_is_set_up_is_started_again(
    tmp_path, monkeypatch, caplog
):
    """Not "the build's network could not be set up" (a build error): bubblewrap said
    why it ended, and a second try works."""
    wrapper = bwrap_ending_while_connected(tmp_path, failures=1)
    tools = dataclasses.replace(make.sandbox(), bwrap=str(wrapper))
    monkeypatch.setattr(make, "sandbox", lambda: tools)
    (tmp_path / "Makefile").write_text("hello:\n\t@echo hello\n")
    with caplog.at_level(logging.WARNING, logger="builds.make"):
        result = make.run_make(tmp_path, ["make", "hello"], time.monotonic() + 30, network=True)
    assert (result.returncode, result.stdout) == (0, "hello\n")
    assert "Sandbox setup failed (try 1): bwrap: loopback" in caplog.text
