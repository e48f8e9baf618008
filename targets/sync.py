"""The catalogue sync: copy the versions, targets and profiles the downloads server
offers into the ORM.

Which versions exist: `.versions.json` `versions_list`, plus `<branch>-SNAPSHOT` for
every enabled release branch and `SNAPSHOT`, each belonging to the enabled branch
whose name prefixes it. For each version, `.targets.json` names the targets and their
package architectures; each target has a `profiles.json`.

This module offers the catalogue's steps, each either a read or a write: `read_version`,
`read_target` read upstream and write nothing but the Version row; `save_target` writes
one target inside its caller's transaction. `packages.sync` runs them together with the
package indexes, so that a target and its packages are written in one transaction.
Every write bumps `Version.synced_at` (`lock_and_bump`), which the JSON documents use
as their cache key.
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from django.utils import timezone

from targets.models import (
    Branch,
    Profile,
    ProfileName,
    Target,
    Version,
    device_title,
    newest_first,
    profile_name_key,
)
from targets.upstream import Fetched, UpstreamError, fetch, upstream_url

logger = logging.getLogger(__name__)

# profiles.json top-level keys kept in their own Target columns; the rest go to `extra`.
TARGET_KEYS = {
    "arch_packages",
    "default_packages",
    "linux_kernel",
    "metadata_version",
    "profiles",
    "source_date_epoch",
    "target",
    "version_code",
    "version_number",
}
# Keys of a profile entry kept in their own Profile columns; the rest go to `extra`.
PROFILE_KEYS = {"device_packages", "image_prefix", "images", "supported_devices", "titles"}
# A version name becomes part of upstream URLs: no slashes, no dots in a row.
VERSION_NAME_RE = re.compile(r"^[0-9A-Za-z]+(?:[.+~_-][0-9A-Za-z]+)*$")


class Writer(Protocol):
    def write(self, text: str) -> Any: ...


@dataclass
class SyncReport:
    versions: int = 0  # versions read
    targets: int = 0  # targets read
    targets_updated: int = 0  # targets whose profiles or packages were written
    feeds_updated: int = 0  # feed indexes written
    removed: int = 0  # versions and targets no longer offered upstream
    errors: list[str] = field(default_factory=list)  # "URL: reason"

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (
            f"{self.versions} versions, {self.targets} targets: {self.targets_updated} targets "
            f"and {self.feeds_updated} feed indexes updated, {self.removed} removed, "
            f"{len(self.errors)} errors"
        )

    def as_dict(self) -> dict:
        return {
            "versions": self.versions,
            "targets": self.targets,
            "targets_updated": self.targets_updated,
            "feeds_updated": self.feeds_updated,
            "removed": self.removed,
            "errors": self.errors,
        }


@dataclass
class SyncRun:
    """One sync run: where progress goes and what it found."""

    out: Writer | None = None
    report: SyncReport = field(default_factory=SyncReport)
    now: datetime = field(default_factory=timezone.now)

    def say(self, line: str) -> None:
        if self.out is not None:
            self.out.write(line + "\n")

    def fail(self, error: UpstreamError, context: str) -> None:
        self.report.errors.append(str(error))
        logger.warning("sync %s: %s", context, error)
        self.say(f"{context}: ERROR {error}")


# Which versions exist ---------------------------------------------------------------


def branch_of(version_name: str, branches: Iterable[Branch]) -> Branch | None:
    """The branch whose name prefixes the version: "24.10.1" and "24.10-SNAPSHOT"
    belong to "24.10", "SNAPSHOT" to "SNAPSHOT"."""
    if not VERSION_NAME_RE.fullmatch(version_name):
        return None
    best = None
    for branch in branches:
        name = branch.name
        if version_name == name or version_name.startswith((f"{name}.", f"{name}-")):
            if best is None or len(name) > len(best.name):
                best = branch
    return best


def snapshot_version_name(branch: Branch) -> str:
    """The snapshot version of a branch: "SNAPSHOT" or "24.10-SNAPSHOT"."""
    return branch.name if branch.snapshot else f"{branch.name}-SNAPSHOT"


def read_versions_list() -> list[str]:
    """The release versions upstream offers (`.versions.json` versions_list)."""
    fetched = fetch(upstream_url(".versions.json"))
    data = fetched.json()
    versions = data.get("versions_list") if isinstance(data, dict) else None
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise UpstreamError(fetched.url, "no `versions_list` array of version names")
    return versions


def read_targets_json(fetched: Fetched) -> dict[str, str]:
    data = fetched.json()
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and "/" in k and isinstance(v, str) and v for k, v in data.items()
    ):
        raise UpstreamError(fetched.url, 'not a map of "target/subtarget" to package architecture')
    return data


# Versions ----------------------------------------------------------------------------------


def refresh_version(name: str) -> Version | None:
    """Look `name` up upstream once (a build request for a version not in the
    catalogue); return its Version, without its targets, or None if upstream does not
    offer it. Targets then come one by one through `packages.sync.refresh_target`."""
    branch = branch_of(name, Branch.objects.filter(enabled=True))
    if branch is None:
        return None
    try:
        if not name.endswith("SNAPSHOT") and name not in read_versions_list():
            return None
        return read_version(name, branch).version
    except UpstreamError as exc:
        logger.warning("refresh of version %s: %s", name, exc)
        return None


def wanted_versions(
    run: SyncRun, branches: list[Branch]
) -> tuple[list[tuple[str, Branch, bool]], bool]:
    """(name, branch, optional) of every version to read, and whether the release list
    is upstream's own (so versions missing from it may be removed)."""
    try:
        releases = read_versions_list()
        listed = True
    except UpstreamError as exc:
        run.fail(exc, "versions")
        # Keep reading the releases already known rather than none at all.
        releases = list(Version.objects.filter(branch__enabled=True).values_list("name", flat=True))
        listed = False
    wanted = []
    for name in dict.fromkeys(releases):
        branch = branch_of(name, branches)
        if branch is not None and not name.endswith("SNAPSHOT"):
            wanted.append((name, branch, False))
    # Snapshots are not in versions_list; a 404 just means the branch has none (yet).
    wanted += [(snapshot_version_name(branch), branch, True) for branch in branches]
    return wanted, listed


def only_version(run: SyncRun, name: str) -> list[tuple[str, Branch, bool]] | None:
    """The one version a run was asked for, as `wanted_versions` lists versions; None
    (and the reason reported) if no enabled branch has it."""
    branch = branch_of(name, Branch.objects.all())
    if branch is None or not branch.enabled:
        reason = "belongs to no branch" if branch is None else f"branch {branch} is disabled"
        run.report.errors.append(f"{name}: {reason}")
        run.say(f"{name}: ERROR {reason}")
        return None
    return [(name, branch, name.endswith("SNAPSHOT"))]


@dataclass
class VersionRead:
    """A version's .targets.json as read, and the Version row that records it."""

    version: Version
    url: str
    targets: dict[str, str]  # {"ath79/generic": "mips_24kc", ...}
    unchanged: bool  # the same .targets.json as the last run read


def read_version(name: str, branch: Branch) -> VersionRead:
    """Read one version's .targets.json and record the Version (no targets yet).
    Raises UpstreamError, NotFound when upstream does not publish the version."""
    url = upstream_url(f"{branch.path.format(version=name)}/.targets.json")
    fetched = fetch(url)
    targets = read_targets_json(fetched)
    version, unchanged = save_version(name, branch, fetched.digest)
    version.branch = branch  # spares a query for version.path
    return VersionRead(version, url, targets, unchanged)


def save_version(name: str, branch: Branch, digest: str) -> tuple[Version, bool]:
    """The Version row, and whether its .targets.json is the one read last time."""
    now = timezone.now()
    version, created = Version.objects.get_or_create(
        name=name, defaults={"branch": branch, "targets_digest": digest, "synced_at": now}
    )
    if not created and (version.targets_digest != digest or version.branch_id != branch.pk):
        Version.objects.filter(pk=version.pk).update(
            branch=branch, targets_digest=digest, synced_at=now
        )
        version.branch, version.targets_digest, version.synced_at = branch, digest, now
        return version, False
    return version, not created


def remove_versions(run: SyncRun, branches: list[Branch], kept: set[str]) -> None:
    gone = Version.objects.filter(branch__in=branches).exclude(name__in=kept)
    names = list(gone.values_list("name", flat=True))
    if names:
        gone.delete()
        run.report.removed += len(names)
        run.say(f"Removed versions no longer offered upstream: {', '.join(newest_first(names))}")


def lock_and_bump(version: Version) -> None:
    """Serialise writers of one version and move its cache generation on.

    A fresh timestamp for every transaction, not the run's: a document cached between
    two transactions of one run must not outlive the second one.
    """
    now = timezone.now()
    Version.objects.select_for_update().filter(pk=version.pk).update(synced_at=now)
    version.synced_at = now


# Targets -----------------------------------------------------------------------------------


def parse_profiles_json(data: object, url: str) -> tuple[dict, dict[str, dict]]:
    """Split a profiles.json into Target fields and {profile id: entry}."""
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise UpstreamError(url, "not a profiles.json: no `profiles` object")
    profiles = data["profiles"]
    for profile_id, entry in profiles.items():
        if not isinstance(entry, dict):
            raise UpstreamError(url, f"profile {profile_id} is not an object")
        for key in ("images", "supported_devices", "titles", "device_packages"):
            if not isinstance(entry.get(key, []), list):
                raise UpstreamError(url, f"profile {profile_id}: `{key}` is not a list")
    default_packages = data.get("default_packages", [])
    linux_kernel = data.get("linux_kernel") or {}
    if not isinstance(default_packages, list) or not isinstance(linux_kernel, dict):
        raise UpstreamError(url, "`default_packages` or `linux_kernel` has the wrong type")
    epoch = data.get("source_date_epoch")
    metadata_version = data.get("metadata_version")
    fields = {
        "version_code": str(data.get("version_code") or ""),
        "version_number": str(data.get("version_number") or ""),
        # Old files have the epoch as a string.
        "source_date_epoch": int(epoch) if str(epoch).isdigit() else None,
        "metadata_version": metadata_version if isinstance(metadata_version, int) else None,
        "default_packages": default_packages,
        "linux_kernel": linux_kernel,
        "extra": {key: value for key, value in data.items() if key not in TARGET_KEYS},
    }
    return fields, profiles


def target_folder(version: Version, name: str) -> str:
    """The target's folder on the downloads server: "releases/24.10.1/targets/x86/64"."""
    return f"{version.path}/targets/{name}"


@dataclass
class TargetRead:
    """One target's profiles.json as read, against the catalogue's copy (`known`)."""

    name: str
    arch: str  # its package architecture, from .targets.json
    known: Target | None
    fetched: Fetched | None = None  # None: the file is the one recorded last time
    fields: dict = field(default_factory=dict)  # Target columns, from parse_profiles_json
    profiles: dict[str, dict] = field(default_factory=dict)

    @property
    def profiles_changed(self) -> bool:
        return self.fetched is not None

    @property
    def changed(self) -> bool:
        """Whether the Target row needs a write: new profiles or a new architecture."""
        arch_changed = self.known is not None and self.known.arch_packages != self.arch
        return self.profiles_changed or arch_changed

    @property
    def kmods_dir(self) -> str:
        """The kmods folder of the kernel the target has after this read, or ""."""
        kernel = self.fields["linux_kernel"] if self.profiles_changed else self.known.linux_kernel
        return Target(linux_kernel=kernel).kmods_dir


def read_target(version: Version, name: str, arch: str, known: Target | None) -> TargetRead:
    """Read one target's profiles.json, conditionally when the catalogue has it.
    Raises UpstreamError."""
    url = upstream_url(f"{target_folder(version, name)}/profiles.json")
    if known is not None and known.profiles_digest:
        fetched = fetch(url, known.profiles_etag, known.profiles_last_modified)
    else:
        fetched = fetch(url)
    if known is not None and (fetched.not_modified or fetched.digest == known.profiles_digest):
        return TargetRead(name, arch, known)
    fields, profiles = parse_profiles_json(fetched.json(), url)
    return TargetRead(name, arch, known, fetched, fields, profiles)


def save_target(read: TargetRead, version: Version, now: datetime) -> Target:
    """Write what changed of one target: its row and its profiles. Call inside the
    transaction in which `lock_and_bump` locked the version."""
    target = read.known
    if read.changed:
        defaults = {"arch_packages": read.arch}
        if read.profiles_changed:
            defaults |= read.fields | {
                "profiles_digest": read.fetched.digest,
                "profiles_etag": read.fetched.etag,
                "profiles_last_modified": read.fetched.last_modified,
                "synced_at": now,
            }
        target, _ = Target.objects.update_or_create(
            version=version, name=read.name, defaults=defaults
        )
    if read.profiles_changed:
        save_profiles(target, read.profiles)
    return target


def save_profiles(target: Target, profiles: dict[str, dict]) -> None:
    """Replace the target's profiles in bulk, keeping the rows of profiles that remain."""
    rows = [
        Profile(
            target=target,
            name=profile_id,
            titles=entry.get("titles", []),
            title=device_title(entry.get("titles"))[:255],
            device_packages=entry.get("device_packages", []),
            supported_devices=entry.get("supported_devices", []),
            image_prefix=str(entry.get("image_prefix") or ""),
            images=entry.get("images", []),
            extra={key: value for key, value in entry.items() if key not in PROFILE_KEYS},
        )
        for profile_id, entry in profiles.items()
    ]
    Profile.objects.filter(target=target).exclude(name__in=list(profiles)).delete()
    Profile.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["target", "name"],
        update_fields=[
            "titles",
            "title",
            "device_packages",
            "supported_devices",
            "image_prefix",
            "images",
            "extra",
        ],
        batch_size=500,
    )
    if any(row.pk is None for row in rows):  # databases that cannot return ids
        ids = dict(Profile.objects.filter(target=target).values_list("name", "pk"))
        for row in rows:
            row.pk = ids[row.name]
    _save_profile_names(target, rows)


def _save_profile_names(target: Target, rows: list[Profile]) -> None:
    """Replace the names requests may use for the target's profiles.

    A request names a profile by its id or by a board name (commas made underscores).
    Ids come first so that an id always means its own profile; then the first profile
    to claim a board name keeps it, as in openwrt/asu.
    """
    names: dict[str, int] = {}
    for row in rows:
        names.setdefault(profile_name_key(row.name), row.pk)
    for row in rows:
        for device in row.supported_devices:
            if isinstance(device, str) and device:
                names.setdefault(profile_name_key(device), row.pk)
    ProfileName.objects.filter(target=target).delete()
    ProfileName.objects.bulk_create(
        [ProfileName(target=target, profile_id=pk, name=name[:128]) for name, pk in names.items()],
        batch_size=1000,
    )
