"""Everything that touches an OpenWrt ImageBuilder.

Getting one: the tarball named in the target's `sha256sums` (whose usign signature is
checked against ASU_UPSTREAM_KEYS when set) is downloaded, checked and unpacked once per
version, target and revision into ASU_CACHE_DIR/<version>/<target>/<revision>, under a
file lock so that concurrent workers unpack it once. Its first `make info` is kept in
current.json and serves every build of that revision. Upstream is asked for a newer one
at most every RECHECK_AFTER seconds, or at once when a build asks for another revision.
Each build then gets its own working copy, hard-linked where the ImageBuilder only reads,
so builds of one target run side by side without touching each other or the cache.

Running one: `make` with an argument list (never a shell string), a scrubbed environment
and the build's deadline, inside bubblewrap when it is installed. The parsers turn make's
output into data: `parse_make_info`, `parse_manifest`, `parse_package_errors`.
The formats are described in openwrt-formats.md.
"""

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import filelock
import requests
import zstandard
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from asuproject.lib import usign
from builds.models import Step
from targets.models import Version
from targets.upstream import NotFound, UpstreamError, fetch, upstream_url

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 64 * 1024  # characters of stdout and stderr kept with a build
DEFAULTS_PATH = "etc/uci-defaults/99-asu-defaults"
OFFICIAL_UPSTREAM = "https://downloads.openwrt.org"
# Only these come from the worker's environment into make's: proxies the feeds may need.
PASSED_ENVIRONMENT = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY")
CURRENT = "current.json"  # in a target's cache folder: which unpacked ImageBuilder is current
# Seconds a verified sha256sums stands before upstream is asked again for a newer ImageBuilder,
# rather than two requests to upstream and a signature check on every build.
RECHECK_AFTER = 60

_session = requests.Session()
_session.headers["User-Agent"] = "asu-django (Attended Sysupgrade server)"


class BuildError(Exception):
    """A build failed for a reason its requester can read.

    The message is the detail without the "Error: " prefix; stdout and stderr are the
    output of the command that failed, if any.
    """

    def __init__(self, message: str, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stdout = stdout
        self.stderr = stderr


class BuildTimeout(BuildError):
    def __init__(self, stdout: str = "", stderr: str = "") -> None:
        super().__init__(
            f"The build took longer than the server's limit of {settings.ASU_BUILD_TIMEOUT} "
            "seconds and was stopped. Try again later or with fewer packages.",
            stdout,
            stderr,
        )


def remaining(deadline: float) -> float:
    """Seconds left before `deadline` (a time.monotonic() value); BuildTimeout if none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise BuildTimeout()
    return left


def bounded(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """The end of `text`, where errors are, at most `limit` characters."""
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} earlier characters left out]\n" + text[-limit:]


# Upstream: where the ImageBuilder lives and how it is checked.


def version_path(version: str) -> str:
    """The version's folder on the downloads server: "releases/24.10.1", "snapshots"."""
    row = Version.objects.select_related("branch").filter(name=version).first()
    if row is not None:
        return row.path
    # Not in the catalogue (yet): the downloads server's own convention.
    if version.upper() == "SNAPSHOT":
        return "snapshots"
    return f"releases/{version}"


def imagebuilder_names(version: str, target: str) -> list[str]:
    """Possible tarball names of the ImageBuilder, the most likely first.

    Releases up to 23.05 are `.tar.xz`, 24.10 and later `.tar.zst`; snapshots carry no
    version, branch snapshots carry it lowercased ("24.10-snapshot") like all file names.
    """
    board = target.replace("/", "-")
    major = re.match(r"(\d+)\.", version)
    extensions = ["xz", "zst"] if major and int(major.group(1)) <= 23 else ["zst", "xz"]
    prefixes = [f"{version.lower()}-", f"{version}-", ""]
    if version.upper() == "SNAPSHOT":
        prefixes = ["", f"{version.lower()}-"]
    names: list[str] = []
    for prefix in prefixes:
        for ext in extensions:
            name = f"openwrt-imagebuilder-{prefix}{board}.Linux-x86_64.tar.{ext}"
            if name not in names:
                names.append(name)
    return names


def parse_sha256sums(text: str) -> dict[str, str]:
    """`<64 hex> *<file>` lines as {file: digest}."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *]?(.+)", line.strip())
        if match:
            sums[match.group(2)] = match.group(1).lower()
    return sums


def fetch_sha256sums(version: str, target: str) -> dict[str, str]:
    """The target's `sha256sums`, checked against ASU_UPSTREAM_KEYS when that is set.

    Raises UpstreamError when it cannot be read, BuildError when its signature is
    missing or wrong: a build never runs on an ImageBuilder we could not verify.
    """
    url = upstream_url(f"{version_path(version)}/targets/{target}/sha256sums")
    sums = fetch(url).content
    if settings.ASU_UPSTREAM_KEYS:
        try:
            signature = fetch(f"{url}.sig").text()
        except NotFound:
            raise BuildError(
                f"The ImageBuilder cannot be verified: {url}.sig is missing upstream"
            ) from None
        try:
            usign.verify(sums, signature, settings.ASU_UPSTREAM_KEYS)
        except usign.SignatureError as exc:
            raise BuildError(
                f"The ImageBuilder's checksums failed the signature check ({exc}); "
                "the server refuses to build with it"
            ) from None
    return parse_sha256sums(sums.decode("utf-8", errors="replace"))


def download(url: str, dest: Path, deadline: float) -> str:
    """Save `url` (http(s):// or file://) to `dest`; return its sha256."""
    digest = hashlib.sha256()
    try:
        with open(dest, "wb") as out:
            if url.startswith("file://"):
                with open(unquote(urlsplit(url).path), "rb") as source:
                    while chunk := source.read(1 << 20):
                        remaining(deadline)
                        digest.update(chunk)
                        out.write(chunk)
            else:
                with _session.get(url, stream=True, timeout=(10, 60)) as response:
                    if response.status_code != 200:
                        raise UpstreamError(url, f"HTTP {response.status_code}")
                    for chunk in response.iter_content(1 << 20):
                        remaining(deadline)
                        digest.update(chunk)
                        out.write(chunk)
    except FileNotFoundError:
        raise NotFound(url) from None
    except requests.RequestException as exc:
        raise UpstreamError(url, f"download failed: {exc.__class__.__name__}") from None
    return digest.hexdigest()


def unpack(tarball: Path, dest: Path, deadline: float) -> None:
    """Unpack an ImageBuilder tarball into `dest`, without its top folder."""
    dest.mkdir(parents=True)

    def strip_top(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        remaining(deadline)
        name = _strip_first(member.name)
        if not name:
            return None  # the top folder itself
        changes: dict[str, Any] = {
            "name": name,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "uname": "",
            "gname": "",
        }
        if member.islnk():  # hard links name their target by its path in the archive
            changes["linkname"] = _strip_first(member.linkname)
        return tarfile.tar_filter(member.replace(**changes, deep=False), path)

    with open(tarball, "rb") as raw:
        if tarball.name.endswith(".zst"):
            # tarfile reads zstd only from Python 3.14 on.
            with zstandard.ZstdDecompressor().stream_reader(raw) as stream:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    tar.extractall(dest, filter=strip_top)
        else:
            with tarfile.open(fileobj=raw, mode="r|*") as tar:
                tar.extractall(dest, filter=strip_top)


def _strip_first(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.partition("/")[2]


# The cache of unpacked ImageBuilders and the working copies made from it.


@dataclass
class Workspace:
    """A build's private copy of an ImageBuilder."""

    path: Path
    revision: str  # as `make info` reported it when the ImageBuilder was unpacked
    tarball: str
    # That `make info` run: its output is the same in every copy. None if it is unknown.
    info: "MakeResult | None" = None


def _cache_folder(version: str, target: str) -> Path:
    for part in (version, *target.split("/")):
        if not re.fullmatch(r"[\w.+-]+", part) or part.startswith("."):
            raise BuildError(f"Unusable version or target name: {version} {target}")
    return Path(settings.ASU_CACHE_DIR) / version / target


@contextmanager
def _locked(path: Path, deadline: float) -> Iterator[None]:
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=remaining(deadline))
    except filelock.Timeout:
        raise BuildTimeout() from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def working_copy(
    version: str,
    target: str,
    deadline: float,
    on_step: Callable[[str], Any],
    revision: str = "",
) -> Iterator[Workspace]:
    """Yield a private working copy of the version's and target's ImageBuilder,
    fetching and unpacking it first if the cache lacks it or upstream has a newer one.
    `revision` is the one the build asks for, if any: a cached ImageBuilder of another
    revision is checked against upstream at once. The copy is removed afterwards."""
    folder = _cache_folder(version, target)
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(settings.ASU_CACHE_DIR) / "work" / uuid.uuid4().hex
    try:
        # Copying under the lock too: a newer ImageBuilder never replaces one being copied.
        with _locked(folder / ".lock", deadline):
            current = _current_imagebuilder(version, target, folder, deadline, on_step, revision)
            on_step(Step.CONTAINER_SETUP)
            copy_tree(folder / current["dir"], work)
            if not isinstance(current.get("info"), dict):
                current = _remember_info(folder, current, work, deadline)
        info = current.get("info")
        yield Workspace(
            path=work,
            revision=current["revision"],
            tarball=current["tarball"],
            info=MakeResult(["make", "info"], 0, info["stdout"], info["stderr"]) if info else None,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove_stale_working_copies(max_age: float) -> int:
    """Remove working copies older than `max_age` seconds, left by a worker that died
    mid-build; return how many. Younger ones may belong to running builds."""
    work = Path(settings.ASU_CACHE_DIR) / "work"
    removed = 0
    if not work.is_dir():
        return 0
    cutoff = time.time() - max_age
    for path in work.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _current_imagebuilder(
    version: str,
    target: str,
    folder: Path,
    deadline: float,
    on_step: Callable[[str], Any],
    revision: str = "",
) -> dict[str, Any]:
    """The unpacked ImageBuilder to use, as recorded in the folder's current.json.
    Call with the folder's lock held."""
    try:
        current = json.loads((folder / CURRENT).read_text())
        if not (folder / current["dir"]).is_dir():
            current = None
    except (OSError, ValueError, KeyError, TypeError):
        current = None
    if current and _recently_verified(current):
        # An ImageBuilder without a revision is never compared with the requested one.
        if not revision or not current["revision"] or current["revision"] == revision:
            return current

    on_step(Step.DOWNLOAD_IMAGEBUILDER)
    try:
        sums = fetch_sha256sums(version, target)
    except UpstreamError as exc:
        if current:
            # Upstream unreachable: the ImageBuilder verified earlier still builds.
            log.warning("Using the cached ImageBuilder of %s %s: %s", version, target, exc)
            return current
        raise BuildError(
            f"Could not get the ImageBuilder's checksums from upstream: {exc}"
        ) from None
    name = next((n for n in imagebuilder_names(version, target) if n in sums), None)
    if name is None:
        raise BuildError(f"Upstream offers no ImageBuilder for {version} {target}")
    if current and current["tarball"] == name and current["sha256"] == sums[name]:
        current = {**current, "checked_at": time.time()}
        _replace_file(folder / CURRENT, json.dumps(current))
        return current

    tarball = folder / f".download-{name}"
    unpacked = folder / f".unpack-{uuid.uuid4().hex}"
    try:
        url = upstream_url(f"{version_path(version)}/targets/{target}/{name}")
        try:
            digest = download(url, tarball, deadline)
        except UpstreamError as exc:
            raise BuildError(f"Could not download the ImageBuilder: {exc}") from None
        if digest != sums[name]:
            raise BuildError(
                f"The downloaded ImageBuilder {name} does not match its checksum; "
                "upstream may be updating, try again in a few minutes"
            )
        on_step(Step.UNPACK_IMAGEBUILDER)
        try:
            unpack(tarball, unpacked, deadline)
        except (tarfile.TarError, zstandard.ZstdError, OSError) as exc:
            raise BuildError(f"Could not unpack the ImageBuilder {name}: {exc}") from None
        info = _prime(unpacked, deadline)
        revision = parse_make_info(info.stdout).revision
        final = revision or sums[name][:12]
        shutil.rmtree(folder / final, ignore_errors=True)  # same revision, rebuilt tarball
        unpacked.rename(folder / final)
    finally:
        tarball.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)

    current = {
        "tarball": name,
        "sha256": sums[name],
        "revision": revision,
        "dir": final,
        "checked_at": time.time(),
        "info": {"stdout": info.stdout, "stderr": info.stderr},
    }
    _replace_file(folder / CURRENT, json.dumps(current))
    # Older revisions go; builds that copied them keep their own links to the files.
    for old in folder.iterdir():
        if old.is_dir() and not old.name.startswith(".") and old.name != final:
            shutil.rmtree(old, ignore_errors=True)
    log.info("Unpacked ImageBuilder %s (%s) into %s", name, revision, folder / final)
    return current


def _recently_verified(current: dict[str, Any]) -> bool:
    """True if upstream's sha256sums confirmed this ImageBuilder less than RECHECK_AFTER
    seconds ago."""
    checked_at = current.get("checked_at")
    if not isinstance(checked_at, (int, float)):
        return False
    return 0 <= time.time() - checked_at < RECHECK_AFTER


def _prime(path: Path, deadline: float) -> "MakeResult":
    """Run `make info` once in a freshly unpacked ImageBuilder, so its first-run files
    (.profiles.mk, the prerequisite check) are made once for every build; return that
    run, whose output every build of this ImageBuilder reuses."""
    result = run_make(path, ["make", "info"], deadline)
    if result.returncode:
        raise BuildError(
            "The ImageBuilder does not run on this server (make info failed)",
            result.stdout,
            result.stderr,
        )
    return result


def _remember_info(
    folder: Path, current: dict[str, Any], work: Path, deadline: float
) -> dict[str, Any]:
    """Add the `make info` output to a current.json written without it (by an earlier
    version of this server), running it once in the fresh copy `work`. Call with the
    folder's lock held. On failure nothing is recorded: the build runs it again itself."""
    result = run_make(work, ["make", "info"], deadline)
    if result.returncode:
        return current
    current = {**current, "info": {"stdout": result.stdout, "stderr": result.stderr}}
    _replace_file(folder / CURRENT, json.dumps(current))
    return current


# Top folders whose files an ImageBuilder only reads: host tools, target recipes,
# scripts and make includes. Everything else (build_dir, whose kernel and rootfs files
# image recipes rewrite in place, packages/ indexes, keys, top-level files, stamps) is
# copied, so that no build writes to a file the cache or another build shares.
_READ_ONLY_TOPS = {"staging_dir", "target", "scripts", "include"}
_PACKAGE_ARCHIVES = {".ipk", ".apk"}


def _linkable(relative: PurePosixPath) -> bool:
    if any(part.startswith(".") for part in relative.parts):
        return False  # stamps and generated files: make touches or rewrites them
    if relative.parts[0] in _READ_ONLY_TOPS:
        return True
    return relative.parts[0] == "packages" and relative.suffix in _PACKAGE_ARCHIVES


def copy_tree(source: Path, dest: Path) -> None:
    """Copy an ImageBuilder: hard links for the files it only reads, real copies for the
    rest. Modes and modification times are kept, since make compares them."""
    for root, dirs, files in os.walk(source):
        root_path = Path(root)
        relative_root = root_path.relative_to(source)
        target_root = dest / relative_root
        target_root.mkdir(parents=True, exist_ok=True)
        shutil.copymode(root_path, target_root)
        for name in dirs + files:
            src = root_path / name
            dst = target_root / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            elif name in files:
                relative = PurePosixPath(relative_root.as_posix(), name)
                if _linkable(relative):
                    try:
                        os.link(src, dst)
                        continue
                    except OSError:  # another file system: copy instead
                        pass
                shutil.copy2(src, dst)
        # Symlinks to folders are listed in dirs, but os.walk does not follow them.
        dirs[:] = [d for d in dirs if not (root_path / d).is_symlink()]


def _replace_file(path: Path, text: str) -> None:
    """Write `path` as a new file (a new inode), never editing the old one in place."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_text(text)
    os.replace(temporary, path)


# Configuring a working copy: feeds, keys, first-boot script.


def is_apk(workdir: Path) -> bool:
    """apk ImageBuilders have a `repositories` file, opkg ones `repositories.conf`."""
    return (workdir / "repositories").is_file()


def point_feeds_at_upstream(workdir: Path) -> None:
    """Fetch packages from ASU_UPSTREAM_URL when it is a mirror of downloads.openwrt.org."""
    mirror = settings.ASU_UPSTREAM_URL.rstrip("/")
    if mirror == OFFICIAL_UPSTREAM:
        return
    for name in ("repositories.conf", "repositories"):
        path = workdir / name
        if path.is_file():
            text = path.read_text()
            if OFFICIAL_UPSTREAM in text:
                _replace_file(path, text.replace(OFFICIAL_UPSTREAM, mirror))


def add_repositories(
    workdir: Path, repositories: dict[str, str], mode: str, keys: list[str]
) -> None:
    """Add extra package feeds ("append") or use only them ("replace"), and their keys.

    opkg: `src/gz <name> <url>` lines in repositories.conf and usign keys in keys/;
    apk: one index URL a line in `repositories` and PEM keys in keys/.
    """
    if is_apk(workdir):
        path = workdir / "repositories"
        kept = [
            line
            for line in path.read_text().splitlines()
            # "replace" keeps comments and the local packages folder only.
            if mode != "replace" or line.startswith("#") or "://" not in line
        ]
        added = [
            url if url.endswith(".adb") else f"{url}/packages.adb" for url in repositories.values()
        ]
        _replace_file(path, "\n".join(kept + added) + "\n")
    else:
        path = workdir / "repositories.conf"
        lines = path.read_text().splitlines() if path.is_file() else []
        feeds = [line for line in lines if line.startswith("src/gz ") and mode != "replace"]
        others = [line for line in lines if not line.startswith("src/gz ")]
        added = [f"src/gz {name} {url}" for name, url in repositories.items()]
        _replace_file(path, "\n".join(feeds + added + others) + "\n")

    key_folder = workdir / "keys"
    key_folder.mkdir(exist_ok=True)
    for number, key in enumerate(keys, start=1):
        if "-----BEGIN" in key:
            name = hashlib.sha256(key.encode()).hexdigest()[:16] + ".pem"
            _replace_file(key_folder / name, key.strip() + "\n")
            continue
        try:
            parsed = usign.read_public_key(key)
        except usign.SignatureError:
            raise BuildError(
                f"Repository key {number} is neither a usign public key nor a PEM key"
            ) from None
        base64_line = [line for line in key.splitlines() if line.strip()][-1].strip()
        _replace_file(
            key_folder / parsed.fingerprint,
            f"untrusted comment: {parsed.fingerprint}\n{base64_line}\n",
        )


def needs_network(workdir: Path) -> bool:
    """True if the ImageBuilder's feeds are remote, so make must reach the network."""
    for name in ("repositories.conf", "repositories"):
        path = workdir / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if not line.lstrip().startswith("#") and re.search(r"\bhttps?://", line):
                    return True
    return False


def write_defaults(workdir: Path, script: str) -> Path:
    """Put the first-boot script where FILES= picks it up; return the FILES folder."""
    files = workdir / "asu-files"
    path = files / DEFAULTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    return files


# Running make.


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


# Parsing make's output.


@dataclass
class ImageBuilderInfo:
    """What `make info` says."""

    revision: str = ""  # "r28427-6df0e3d02a"; "" on ImageBuilders that do not print it
    default_packages: list[str] = field(default_factory=list)
    profile_packages: dict[str, list[str]] = field(default_factory=dict)  # may hold -pkg
    supported_devices: dict[str, list[str]] = field(default_factory=dict)


def parse_make_info(stdout: str) -> ImageBuilderInfo:
    """Parse `make info`: revision, default packages, and each profile's packages."""
    info = ImageBuilderInfo()
    if match := re.search(r'^Current Revision: "(r[^"]+)"', stdout, re.MULTILINE):
        info.revision = match.group(1)
    if match := re.search(r"^Default Packages:(.*)$", stdout, re.MULTILINE):
        info.default_packages = match.group(1).split()
    _, _, profiles = stdout.partition("Available Profiles:")
    profile = None
    for line in profiles.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            profile = line.strip().removesuffix(":") if line.rstrip().endswith(":") else None
            if profile:
                info.profile_packages[profile] = []
            continue
        if profile is None:
            continue
        key, sep, value = line.strip().partition(":")
        if sep and key == "Packages":
            info.profile_packages[profile] = value.split()
        elif sep and key == "SupportedDevices":
            info.supported_devices[profile] = value.split()
    return info


def parse_manifest(text: str) -> dict[str, str]:
    """Parse a package manifest into {name: version}.

    opkg and newer apk print `name - version`, older apk `name version`; lines that are
    neither (stray log lines) are skipped.
    """
    separated = " - " in text
    manifest: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if separated:
            name, sep, version = line.partition(" - ")
        else:
            name, sep, version = line.partition(" ")
        if sep and name and version and " " not in name and " " not in version.strip():
            manifest[name] = version.strip()
    return manifest


@dataclass
class PackageErrors:
    missing: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.conflicts)

    @property
    def detail(self) -> str:
        """The contract's text: `Impossible package selection: missing (a, b) conflicts (c, d)`."""
        text = "Impossible package selection"
        parts = []
        if self.missing:
            parts.append(f"missing ({', '.join(self.missing)})")
        if self.conflicts:
            parts.append(f"conflicts ({', '.join(self.conflicts)})")
        return f"{text}: {' '.join(parts)}" if parts else text


def parse_package_errors(stderr: str) -> PackageErrors:
    """Find missing and conflicting packages in opkg's or apk's error output
    (openwrt-formats.md §1.5)."""
    missing = set(re.findall(r"Cannot install package ([^ \n]+)\.", stderr))  # opkg
    missing |= set(re.findall(r"^ +([^ \n]+) \(no such package\):", stderr, re.MULTILINE))  # apk
    conflicts: set[str] = set()
    # apk groups a conflict under the package: "  A:\n    conflicts: B[...]"
    for name, other in re.findall(r"^ +([^ :\n]+):\n +conflicts: ([^\[\s]+)", stderr, re.MULTILINE):
        conflicts.update((name, other))
    conflicts.update(re.findall(r"ERROR: ([^ :\n]+): trying to overwrite", stderr))
    conflicts.update(re.findall(r"trying to overwrite \S+ owned by ([^ .\n]+)", stderr))
    # opkg: conflicts_for lists, file clashes between two packages
    conflicts.update(re.findall(r"The following packages conflict with ([^ :\n]+):", stderr))
    conflicts.update(re.findall(r"\* check_conflicts_for:\s+([^ \n]+) \*$", stderr, re.MULTILINE))
    conflicts.update(re.findall(r"check_data_file_clashes: Package ([^ \n]+) wants", stderr))
    conflicts.update(
        re.findall(r"already provided by package\s+\* ([^ \n]+)$", stderr, re.MULTILINE)
    )
    # opkg says "Cannot install package" for conflicting packages too.
    missing -= conflicts
    return PackageErrors(missing=sorted(missing), conflicts=sorted(conflicts))


def check_packages_versions(manifest: dict[str, str], packages_versions: dict[str, str]) -> str:
    """Compare the versions a client expects with the manifest; "" when they agree."""
    missing = sorted(name for name in packages_versions if name not in manifest)
    if missing:
        return PackageErrors(missing=missing).detail
    differing = [
        f"{name} {manifest[name]} (requested {version})"
        for name, version in sorted(packages_versions.items())
        if version and manifest[name] != version
    ]
    if differing:
        return "Impossible package selection: other versions available: " + ", ".join(differing)
    return ""


def diff_packages(packages: list[str], default_packages: set[str]) -> list[str]:
    """The PACKAGES list of an absolute package list: every default package the list
    lacks becomes `-pkg` so the ImageBuilder leaves it out; explicit `-pkg` entries stay."""
    wanted = [p for p in packages if not p.startswith("-")]
    removed = {p[1:] for p in packages if p.startswith("-")}
    removed |= default_packages - set(wanted)
    removed = {p for p in removed if p and not p.startswith("-")}
    return sorted(f"-{p}" for p in removed) + wanted


def packages_hash(manifest: dict[str, str]) -> str:
    """A short hash of the installed packages, for EXTRA_IMAGE_NAME."""
    return hashlib.sha256(" ".join(sorted(manifest)).encode()).hexdigest()[:12]


def image_too_big(stderr: str) -> bool:
    return "is too big" in stderr or "out of space?" in stderr


def read_profiles_json(bin_dir: Path, profile: str) -> dict:
    """The profiles.json `make image` wrote; BuildError if it or the profile is missing."""
    path = bin_dir / "profiles.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError(
            "The ImageBuilder made no images (no profiles.json); the log below shows why"
        ) from None
    except ValueError as exc:
        raise BuildError(f"The ImageBuilder wrote an unreadable profiles.json: {exc}") from None
    if profile not in (data.get("profiles") or {}):
        raise BuildError(f"The ImageBuilder made no images for profile {profile}")
    return data


def merge_profile(profiles_json: dict, profile: str) -> dict:
    """profiles.json's top level merged with the profile's entry, as clients read it."""
    top = {key: value for key, value in profiles_json.items() if key != "profiles"}
    return {**top, **profiles_json["profiles"][profile], "id": profile}


# The store.


def store_files(source: Path, bin_dir: str) -> list[str]:
    """Copy the files of a BIN_DIR into the store under `<bin_dir>/`; return their names."""
    if not re.fullmatch(r"[\w.-]+", bin_dir) or bin_dir.startswith("."):
        raise BuildError(f"Unusable store folder name: {bin_dir!r}")
    stored = []
    locks = Path(settings.ASU_CACHE_DIR) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    # Identical builds share a folder; one writer at a time per host.
    with filelock.FileLock(str(locks / f"store-{bin_dir}.lock")):
        for path in sorted(source.iterdir()):
            if not path.is_file() or path.is_symlink():
                continue
            name = f"{bin_dir}/{path.name}"
            if default_storage.exists(name):
                default_storage.delete(name)
            with open(path, "rb") as fh:
                saved = default_storage.save(name, File(fh, name=path.name))
            if saved != name:
                raise BuildError(f"The store saved {name} as {saved}")
            stored.append(path.name)
    return stored


def delete_stored_files(bin_dir: str) -> None:
    """Remove a build folder from the store."""
    if not bin_dir or not re.fullmatch(r"[\w.-]+", bin_dir) or bin_dir.startswith("."):
        return
    _delete_folder(bin_dir)
    try:
        os.rmdir(default_storage.path(bin_dir))  # FileSystemStorage keeps empty folders
    except (NotImplementedError, OSError):
        pass


def _delete_folder(folder: str) -> None:
    try:
        dirs, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in files:
        default_storage.delete(f"{folder}/{name}")
    for name in dirs:
        _delete_folder(f"{folder}/{name}")
        try:
            os.rmdir(default_storage.path(f"{folder}/{name}"))
        except (NotImplementedError, OSError):
            pass
