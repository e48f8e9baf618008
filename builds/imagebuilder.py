"""Getting an OpenWrt ImageBuilder, and a private working copy of it for each build.

The tarball named in the target's `sha256sums` (whose usign signature is checked against
ASU_UPSTREAM_KEYS when set) is downloaded, checked and unpacked once per version, target
and revision into ASU_CACHE_DIR/<version>/<target>/<revision>, under a file lock so that
concurrent workers unpack it once. Its first `make info` is kept in current.json and
serves every build of that revision. Upstream is asked for a newer one at most every
RECHECK_AFTER seconds, or at once when a build asks for another revision. Each build then
gets its own working copy, hard-linked where the ImageBuilder only reads, so builds of
one target run side by side without touching each other or the cache.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import filelock
import requests
import zstandard
from django.conf import settings

from asuproject.lib import usign
from builds.errors import BuildError, BuildTimeout, remaining
from builds.make import MakeResult, hand_over, lent_to_sandbox, run_make
from builds.make_output import parse_make_info
from builds.models import Step
from tally.counting import count_now
from targets.upstream import NotFound, UpstreamError, fetch, upstream_url

log = logging.getLogger(__name__)

CURRENT = "current.json"  # in a target's cache folder: which unpacked ImageBuilder is current
# Seconds a verified sha256sums stands before upstream is asked again for a newer ImageBuilder,
# rather than two requests to upstream and a signature check on every build.
RECHECK_AFTER = 60

_session = requests.Session()
_session.headers["User-Agent"] = "asu-django (Attended Sysupgrade server)"


# Upstream: where the ImageBuilder lives and how it is checked.


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


def fetch_sha256sums(version_path: str, target: str) -> dict[str, str]:
    """The target's `sha256sums`, checked against ASU_UPSTREAM_KEYS when that is set.
    `version_path` is the version's folder on the downloads server ("releases/24.10.1").

    Raises UpstreamError when it cannot be read, BuildError when its signature is
    missing or wrong: a build never runs on an ImageBuilder we could not verify.
    """
    url = upstream_url(f"{version_path}/targets/{target}/sha256sums")
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
    # That `make info` run: its output is the same in every copy. None if it is unknown.
    info: MakeResult | None = None


@contextmanager
def working_copy(
    version: str,
    version_path: str,
    target: str,
    deadline: float,
    on_step: Callable[[str], Any],
    revision: str = "",
) -> Iterator[Workspace]:
    """Yield a private working copy of the version's and target's ImageBuilder,
    fetching and unpacking it first if the cache lacks it or upstream has a newer one.
    `version_path` is the version's folder on the downloads server ("releases/24.10.1").
    `revision` is the one the build asks for, if any: a cached ImageBuilder of another
    revision is checked against upstream at once. The copy is removed afterwards."""
    folder = _cache_folder(version, target)
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(settings.ASU_CACHE_DIR) / "work" / uuid.uuid4().hex
    try:
        # Copying under the lock too: a newer ImageBuilder never replaces one being copied.
        with _locked(folder / ".lock", deadline):
            current = _current_imagebuilder(
                version, version_path, target, folder, deadline, on_step, revision
            )
            on_step(Step.CONTAINER_SETUP)
            copy_tree(folder / current["dir"], work)
            hand_over(work)
            mark_used(folder / current["dir"])
            if not isinstance(current.get("info"), dict):
                current = _remember_info(folder, current, work, deadline)
        info = current.get("info")
        yield Workspace(
            path=work,
            revision=current["revision"],
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


def mark_used(entry: Path) -> None:
    """Record that a build used the unpacked ImageBuilder `entry` now: its folder's
    modification time, which nothing else changes once it is unpacked (working copies
    link its files, never its folders). The retention sweep removes long-unused ones."""
    os.utime(entry)


def cache_entries() -> list[Path]:
    """Every unpacked ImageBuilder in the cache: ASU_CACHE_DIR/<version>/<target>/<revision>,
    found beside the current.json of its target folder."""
    entries = []
    for current in sorted(Path(settings.ASU_CACHE_DIR).glob(f"*/*/*/{CURRENT}")):
        entries += [
            path
            for path in sorted(current.parent.iterdir())
            if path.is_dir() and not path.name.startswith(".")
        ]
    return entries


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


def _current_imagebuilder(
    version: str,
    version_path: str,
    target: str,
    folder: Path,
    deadline: float,
    on_step: Callable[[str], Any],
    revision: str = "",
) -> dict[str, Any]:
    """The unpacked ImageBuilder to use, as recorded in the folder's current.json.
    Call with the folder's lock held."""
    current = _read_current(folder)
    if current and _recently_verified(current) and _has_revision(current, revision):
        return current

    on_step(Step.DOWNLOAD_IMAGEBUILDER)
    try:
        sums = fetch_sha256sums(version_path, target)
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
        return _write_current(folder, {**current, "checked_at": time.time()})

    url = upstream_url(f"{version_path}/targets/{target}/{name}")
    current = _write_current(folder, _unpack_new(folder, url, name, sums[name], deadline, on_step))
    _remove_other_revisions(folder, keep=current["dir"])
    log.info(
        "Unpacked ImageBuilder %s (%s) into %s", name, current["revision"], folder / current["dir"]
    )
    return current


def _read_current(folder: Path) -> dict[str, Any] | None:
    """The folder's current.json, or None if it is missing, unreadable or names a
    folder that is gone."""
    try:
        current = json.loads((folder / CURRENT).read_text())
        if not (folder / current["dir"]).is_dir():
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return current


def _recently_verified(current: dict[str, Any]) -> bool:
    """True if upstream's sha256sums confirmed this ImageBuilder less than RECHECK_AFTER
    seconds ago."""
    checked_at = current.get("checked_at")
    if not isinstance(checked_at, (int, float)):
        return False
    return 0 <= time.time() - checked_at < RECHECK_AFTER


def _has_revision(current: dict[str, Any], revision: str) -> bool:
    """True if the cached ImageBuilder serves a build asking for `revision` ("" for any).
    One without a revision is never compared with the requested one."""
    return not revision or not current["revision"] or current["revision"] == revision


def _unpack_new(
    folder: Path,
    url: str,
    name: str,
    sha256: str,
    deadline: float,
    on_step: Callable[[str], Any],
) -> dict[str, Any]:
    """Download the tarball `name` from `url`, check it against `sha256`, unpack it into
    the folder named by its revision and list its profiles once; return its current.json."""
    tarball = folder / f".download-{name}"
    unpacked = folder / f".unpack-{uuid.uuid4().hex}"
    try:
        try:
            digest = download(url, tarball, deadline)
        except UpstreamError as exc:
            count_now("asu_imagebuilder_downloads_total", result="failed")
            raise BuildError(f"Could not download the ImageBuilder: {exc}") from None
        count_now("asu_imagebuilder_downloads_total", result="ok")
        if digest != sha256:
            raise BuildError(
                f"The downloaded ImageBuilder {name} does not match its checksum; "
                "upstream may be updating, try again in a few minutes"
            )
        on_step(Step.UNPACK_IMAGEBUILDER)
        try:
            unpack(tarball, unpacked, deadline)
        except (tarfile.TarError, zstandard.ZstdError, OSError) as exc:
            raise BuildError(f"Could not unpack the ImageBuilder {name}: {exc}") from None
        with lent_to_sandbox(unpacked):
            info = _prime(unpacked, deadline)
        revision = parse_make_info(info.stdout).revision
        final = revision or sha256[:12]
        shutil.rmtree(folder / final, ignore_errors=True)  # same revision, rebuilt tarball
        unpacked.rename(folder / final)
    finally:
        tarball.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
    return {
        "tarball": name,
        "sha256": sha256,
        "revision": revision,
        "dir": final,
        "checked_at": time.time(),
        "info": {"stdout": info.stdout, "stderr": info.stderr},
    }


def _write_current(folder: Path, current: dict[str, Any]) -> dict[str, Any]:
    replace_file(folder / CURRENT, json.dumps(current))
    return current


def _remove_other_revisions(folder: Path, keep: str) -> None:
    # Builds that copied an older revision keep their own links to its files.
    for old in folder.iterdir():
        if old.is_dir() and not old.name.startswith(".") and old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def _prime(path: Path, deadline: float) -> MakeResult:
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
    return _write_current(
        folder, {**current, "info": {"stdout": result.stdout, "stderr": result.stderr}}
    )


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


def replace_file(path: Path, text: str) -> None:
    """Write `path` as a new file (a new inode), never editing the old one in place: in a
    working copy it may be a hard link to a file the cache and other builds share."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_text(text)
    os.replace(temporary, path)
