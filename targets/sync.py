"""The catalogue sync: copy what the downloads server offers into the ORM.

Which versions exist: `.versions.json` `versions_list`, plus `<branch>-SNAPSHOT` for
every enabled release branch and `SNAPSHOT`, each belonging to the enabled branch
whose name prefixes it. For each version, `.targets.json` names the targets; each
target has a `profiles.json`, a `packages/` index and (24.10 and later) a
`kmods/<kernel>/` index; each package architecture has the feeds of its
`feeds.conf`.

Every file is read before anything is written, and each target (and each
architecture's feeds) is written in one transaction, so a broken or unreachable
upstream leaves the last good catalogue in place and is reported as "URL: reason".
An unchanged file (HTTP 304, or the same sha256) costs no database write. Every
write bumps `Version.synced_at`, which the JSON documents use as their cache key.
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from packages.indexes import IndexRead, parse_feeds_conf, read_index, save_index
from packages.models import PackageIndex
from targets.models import (
    Branch,
    Profile,
    ProfileName,
    Target,
    Version,
    newest_first,
    version_sort_key,
)
from targets.upstream import Fetched, NotFound, UpstreamError, fetch, upstream_url

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
FEED = PackageIndex.Kind.FEED
TARGET = PackageIndex.Kind.TARGET
KMODS = PackageIndex.Kind.KMODS


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
class _Run:
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
    if not VERSION_NAME_RE.match(version_name):
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


# The public entry points --------------------------------------------------------------


def sync_upstream(
    version: str | None = None,
    target: str | None = None,
    stdout: Writer | None = None,
    thorough: bool = False,
) -> SyncReport:
    """Bring the catalogue up to date with upstream; optionally only one version and/or
    one target ("ath79/generic"). Progress goes to `stdout`, one line per version and
    target. Upstream failures are in the report, never raised.

    Releases do not change once published: in a full run, a release whose
    .targets.json is unchanged has only the targets and feeds it lacks read again.
    Snapshots, a run for one version or target, and `thorough` check every file.
    """
    run = _Run(out=stdout)
    branches = list(Branch.objects.filter(enabled=True))
    complete = version is None and target is None
    trust_releases = complete and not thorough

    if version is not None:
        branch = branch_of(version, Branch.objects.all())
        if branch is None or not branch.enabled:
            reason = "belongs to no branch" if branch is None else f"branch {branch} is disabled"
            run.report.errors.append(f"{version}: {reason}")
            run.say(f"{version}: ERROR {reason}")
            return run.report
        wanted = [(version, branch, version.endswith("SNAPSHOT"))]
    else:
        wanted, listed = _wanted_versions(run, branches)
        complete = complete and listed

    kept = set()
    for name, branch, optional in sorted(
        wanted, key=lambda item: version_sort_key(item[0]), reverse=True
    ):
        synced = _sync_version(
            run, name, branch, only_target=target, optional=optional, trust=trust_releases
        )
        if synced is not False:
            kept.add(name)

    if complete:
        _remove_versions(run, branches, kept)
    run.say(f"Done: {run.report.summary()}")
    return run.report


def refresh_version(name: str) -> Version | None:
    """Look `name` up upstream once (a build request for a version not in the
    catalogue); return its Version, without its targets, or None if upstream does not
    offer it. Targets then come one by one through `refresh_target`."""
    branch = branch_of(name, Branch.objects.filter(enabled=True))
    if branch is None:
        return None
    try:
        if not name.endswith("SNAPSHOT") and name not in read_versions_list():
            return None
        fetched = fetch(upstream_url(f"{branch.path.format(version=name)}/.targets.json"))
        read_targets_json(fetched)
    except UpstreamError as exc:
        logger.warning("refresh of version %s: %s", name, exc)
        return None
    return _save_version(name, branch, fetched.digest)[0]


def refresh_target(version: Version, target_name: str) -> Target | None:
    """Read one target of `version` from upstream (a build request for a target or
    profile not in the catalogue): its profiles, packages, kmods, and its
    architecture's feeds if the catalogue has none yet. Returns None if upstream does
    not offer it; if upstream cannot be read, the catalogue's copy (or None)."""
    run = _Run()
    try:
        fetched = fetch(upstream_url(f"{version.path}/.targets.json"))
        targets_map = read_targets_json(fetched)
    except UpstreamError as exc:
        logger.warning("refresh of %s %s: %s", version, target_name, exc)
        return Target.objects.filter(version=version, name=target_name).first()
    if target_name not in targets_map:
        return None
    arch = targets_map[target_name]
    indexes = _known_indexes(
        PackageIndex.objects.filter(version=version)
        .filter(Q(target__name=target_name) | Q(kind=FEED, arch_packages=arch))
        .select_related("target")
    )
    if not any(key[0] == FEED for key in indexes):
        _sync_feeds(run, version, arch, indexes)
    known = Target.objects.filter(version=version, name=target_name).first()
    return _sync_target(run, version, target_name, arch, known, indexes)


# Versions --------------------------------------------------------------------------------


def _wanted_versions(
    run: _Run, branches: list[Branch]
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


def _save_version(name: str, branch: Branch, digest: str) -> tuple[Version, bool]:
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


def _sync_version(
    run: _Run,
    name: str,
    branch: Branch,
    only_target: str | None,
    optional: bool,
    trust: bool = False,
) -> Version | None | bool:
    """Read one version; returns its Version, None on a failure, False if upstream
    does not have it (an optional snapshot that answers 404). With `trust`, an
    unchanged release has only the targets and feeds it lacks read."""
    path = branch.path.format(version=name)
    url = upstream_url(f"{path}/.targets.json")
    try:
        fetched = fetch(url)
        targets_map = read_targets_json(fetched)
    except NotFound as exc:
        if optional:
            run.say(f"{name}: not published ({url} not found)")
            return False
        run.fail(exc, name)
        return None
    except UpstreamError as exc:
        run.fail(exc, name)
        return None

    version, unchanged = _save_version(name, branch, fetched.digest)
    version.branch = branch  # spares a query for version.path
    run.report.versions += 1
    names = sorted(targets_map)
    if only_target is not None:
        if only_target not in targets_map:
            run.fail(UpstreamError(url, f"does not list target {only_target}"), name)
            return version
        names = [only_target]
    archs = sorted({targets_map[t] for t in names})
    known_targets = {t.name: t for t in Target.objects.filter(version=version)}
    indexes = _known_indexes(PackageIndex.objects.filter(version=version).select_related("target"))

    if trust and unchanged and not version.is_snapshot:
        read = [
            t
            for t in names
            if getattr(known_targets.get(t), "arch_packages", None) == targets_map[t]
        ]
        names = [t for t in names if t not in read]
        archs = [a for a in archs if not any(k[:2] == (FEED, a) for k in indexes)]
        run.say(
            f"{name}: release unchanged, {len(read)} targets already read, {len(names)} "
            f"targets and {len(archs)} package architectures to read ({path})"
        )
    else:
        run.say(f"{name}: {len(names)} targets, {len(archs)} package architectures ({path})")
    for arch in archs:
        _sync_feeds(run, version, arch, indexes)
    for target_name in names:
        _sync_target(
            run,
            version,
            target_name,
            targets_map[target_name],
            known_targets.get(target_name),
            indexes,
        )
    if only_target is None:
        _remove_targets(run, version, targets_map, known_targets, indexes)
    return version


def _remove_versions(run: _Run, branches: list[Branch], kept: set[str]) -> None:
    gone = Version.objects.filter(branch__in=branches).exclude(name__in=kept)
    names = list(gone.values_list("name", flat=True))
    if names:
        gone.delete()
        run.report.removed += len(names)
        run.say(f"Removed versions no longer offered upstream: {', '.join(newest_first(names))}")


def _remove_targets(
    run: _Run,
    version: Version,
    targets_map: dict[str, str],
    known_targets: dict[str, Target],
    indexes: dict[tuple, PackageIndex],
) -> None:
    gone = [t for name, t in known_targets.items() if name not in targets_map]
    archs = set(targets_map.values())
    stale_feeds = [i for key, i in indexes.items() if key[0] == FEED and key[1] not in archs]
    if not gone and not stale_feeds:
        return
    with transaction.atomic():
        _lock_and_bump(version)
        Target.objects.filter(pk__in=[t.pk for t in gone]).delete()
        PackageIndex.objects.filter(pk__in=[i.pk for i in stale_feeds]).delete()
    run.report.removed += len(gone)
    if gone:
        run.say(f"{version}: removed targets {', '.join(sorted(t.name for t in gone))}")


def _lock_and_bump(version: Version) -> None:
    """Serialise writers of one version and move its cache generation on.

    A fresh timestamp for every transaction, not the run's: a document cached between
    two transactions of one run must not outlive the second one.
    """
    now = timezone.now()
    Version.objects.select_for_update().filter(pk=version.pk).update(synced_at=now)
    version.synced_at = now


# Package indexes -------------------------------------------------------------------------


def _known_indexes(queryset) -> dict[tuple, PackageIndex]:
    """Recorded indexes by identity: (feed, arch, name), (target, t), (kmods, t)."""
    known = {}
    for index in queryset:
        if index.kind == FEED:
            known[(FEED, index.arch_packages, index.name)] = index
        elif index.target is not None:
            known[(index.kind, index.target.name)] = index
    return known


def _sync_feeds(run: _Run, version: Version, arch: str, indexes: dict[tuple, PackageIndex]) -> None:
    """Read the feeds of one package architecture; write the changed ones together."""
    base = f"{version.path}/packages/{arch}"
    context = f"  {version} packages/{arch}"
    try:
        conf = fetch(upstream_url(f"{base}/feeds.conf"))
        feeds = parse_feeds_conf(conf.text())
        if not feeds:
            raise UpstreamError(conf.url, "lists no feeds")
        reads = {
            feed: read_index(upstream_url(f"{base}/{feed}"), indexes.get((FEED, arch, feed)))
            for feed in feeds
        }
    except UpstreamError as exc:
        run.fail(exc, context)
        return
    changed = {feed: read for feed, read in reads.items() if not read.unchanged}
    stale = [i for key, i in indexes.items() if key[:2] == (FEED, arch) and key[2] not in reads]
    if not changed and not stale:
        run.say(f"{context}: {len(feeds)} feeds unchanged")
        return
    with transaction.atomic():
        _lock_and_bump(version)
        for feed, read in changed.items():
            indexes[(FEED, arch, feed)] = save_index(
                read,
                version=version,
                kind=FEED,
                arch_packages=arch,
                name=feed,
                known=indexes.get((FEED, arch, feed)),
                now=run.now,
            )
        PackageIndex.objects.filter(pk__in=[i.pk for i in stale]).delete()
    for index in stale:
        indexes.pop((FEED, arch, index.name), None)
    run.report.feeds_updated += len(changed)
    count = sum(len(read.packages or ()) for read in changed.values())
    run.say(f"{context}: {len(changed)} of {len(feeds)} feeds updated ({count} packages)")


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


def _sync_target(
    run: _Run,
    version: Version,
    name: str,
    arch: str,
    known: Target | None,
    indexes: dict[tuple, PackageIndex],
) -> Target | None:
    """Read one target's profiles.json, packages and kmods; write what changed in one
    transaction. Returns the Target (the old one if upstream failed)."""
    run.report.targets += 1
    context = f"  {version} {name}"
    base = f"{version.path}/targets/{name}"
    url = upstream_url(f"{base}/profiles.json")
    try:
        if known is not None and known.profiles_digest:
            fetched = fetch(url, known.profiles_etag, known.profiles_last_modified)
        else:
            fetched = fetch(url)
        profiles_changed = known is None or not (
            fetched.not_modified or fetched.digest == known.profiles_digest
        )
        fields, profiles = {}, {}
        if profiles_changed:
            fields, profiles = parse_profiles_json(fetched.json(), url)
        kernel = fields["linux_kernel"] if profiles_changed else known.linux_kernel
        kmods_dir = Target(linux_kernel=kernel).kmods_dir
        packages_read = read_index(upstream_url(f"{base}/packages"), indexes.get((TARGET, name)))
        kmods_read: IndexRead | None = None
        if kmods_dir:
            kmods_read = read_index(
                upstream_url(f"{base}/kmods/{kmods_dir}"), indexes.get((KMODS, name))
            )
    except UpstreamError as exc:
        run.fail(exc, context)
        return known

    stale_kmods = not kmods_dir and (KMODS, name) in indexes
    kmods_changed = kmods_read is not None and not kmods_read.unchanged
    arch_changed = known is not None and known.arch_packages != arch
    if not (
        profiles_changed
        or arch_changed
        or not packages_read.unchanged
        or kmods_changed
        or stale_kmods
    ):
        run.say(f"{context}: unchanged")
        return known

    with transaction.atomic():
        _lock_and_bump(version)
        target = known
        if profiles_changed or arch_changed:
            defaults = {"arch_packages": arch}
            if profiles_changed:
                defaults |= fields | {
                    "profiles_digest": fetched.digest,
                    "profiles_etag": fetched.etag,
                    "profiles_last_modified": fetched.last_modified,
                    "synced_at": run.now,
                }
            target, _ = Target.objects.update_or_create(
                version=version, name=name, defaults=defaults
            )
        if profiles_changed:
            _save_profiles(target, profiles)
        written = []
        if not packages_read.unchanged:
            indexes[(TARGET, name)] = save_index(
                packages_read,
                version=version,
                kind=TARGET,
                arch_packages=arch,
                name="packages",
                target=target,
                known=indexes.get((TARGET, name)),
                now=run.now,
            )
            written.append(f"{len(packages_read.packages)} target packages")
        if kmods_changed:
            indexes[(KMODS, name)] = save_index(
                kmods_read,
                version=version,
                kind=KMODS,
                arch_packages=arch,
                name=kmods_dir,
                target=target,
                known=indexes.get((KMODS, name)),
                now=run.now,
            )
            written.append(f"{len(kmods_read.packages)} kmods")
        if stale_kmods:
            indexes.pop((KMODS, name)).delete()
    if profiles_changed:
        written.insert(0, f"{len(profiles)} profiles")
    run.report.targets_updated += 1
    run.say(f"{context}: updated ({', '.join(written) or 'architecture'})")
    return target


def _save_profiles(target: Target, profiles: dict[str, dict]) -> None:
    """Replace the target's profiles in bulk, keeping the rows of profiles that remain."""
    rows = [
        Profile(
            target=target,
            name=profile_id,
            titles=entry.get("titles", []),
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

    # A request names a profile by its id or by a board name (commas made underscores).
    # Ids come first so that an id always means its own profile; then the first
    # profile to claim a board name keeps it, as in openwrt/asu.
    names: dict[str, int] = {}
    for row in rows:
        names.setdefault(row.name.replace(",", "_"), row.pk)
    for row in rows:
        for device in row.supported_devices:
            if isinstance(device, str) and device:
                names.setdefault(device.replace(",", "_"), row.pk)
    ProfileName.objects.filter(target=target).delete()
    ProfileName.objects.bulk_create(
        [ProfileName(target=target, profile_id=pk, name=name[:128]) for name, pk in names.items()],
        batch_size=1000,
    )
