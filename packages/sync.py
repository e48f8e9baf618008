"""The upstream sync: the catalogue (`targets.sync`) and its package indexes together.

For each version, `.targets.json` names the targets; each target has a `profiles.json`,
a `packages/` index and (24.10 and later) a `kmods/<kernel>/` index; each package
architecture has the feeds of its `feeds.conf`.

Every file is read before anything is written, and each target (with its package
indexes) and each architecture's feeds are written in one transaction, so a broken or
unreachable upstream leaves the last good catalogue in place and is reported as
"URL: reason". An unchanged file (HTTP 304, or the same sha256) costs no database
write. Every write bumps `Version.synced_at`, which the JSON documents use as their
cache key.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from packages.indexes import IndexRead, parse_feeds_conf, read_index, save_index
from packages.models import PackageIndex
from targets import sync as catalogue
from targets.models import Branch, Target, Version, version_sort_key
from targets.sync import SyncReport, SyncRun, TargetRead, Writer
from targets.upstream import NotFound, UpstreamError, fetch, upstream_url

logger = logging.getLogger(__name__)

FEED = PackageIndex.Kind.FEED
TARGET = PackageIndex.Kind.TARGET
KMODS = PackageIndex.Kind.KMODS

# The recorded indexes of a version by identity: (feed, arch, name), (target, t), (kmods, t).
Indexes = dict[tuple, PackageIndex]


# The public entry points --------------------------------------------------------------


def sync_upstream(
    version: str | None = None,
    target: str | None = None,
    stdout: Writer | None = None,
    thorough: bool = False,
) -> SyncReport:
    """Bring the catalogue and its package indexes up to date with upstream; optionally
    only one version and/or one target ("ath79/generic"). Progress goes to `stdout`, one
    line per version, feed set and target. Upstream failures are in the report, never
    raised.

    Releases do not change once published: in a full run, a release whose
    .targets.json is unchanged has only the targets and feeds it lacks read again.
    Snapshots, a run for one version or target, and `thorough` check every file.
    """
    run = SyncRun(out=stdout)
    branches = list(Branch.objects.filter(enabled=True))
    complete = version is None and target is None
    trust_releases = complete and not thorough

    if version is not None:
        wanted = catalogue.only_version(run, version)
        if wanted is None:
            return run.report
    else:
        wanted, listed = catalogue.wanted_versions(run, branches)
        complete = complete and listed

    kept = set()
    for name, branch, optional in sorted(
        wanted, key=lambda item: version_sort_key(item[0]), reverse=True
    ):
        if _sync_version(run, name, branch, target, optional, trust_releases):
            kept.add(name)

    if complete:
        catalogue.remove_versions(run, branches, kept)
    run.say(f"Done: {run.report.summary()}")
    return run.report


def refresh_target(version: Version, target_name: str) -> Target | None:
    """Read one target of `version` from upstream (a build request for a target or
    profile not in the catalogue): its profiles, packages, kmods, and its
    architecture's feeds if the catalogue has none yet. Returns None if upstream does
    not offer it; if upstream cannot be read, the catalogue's copy (or None)."""
    run = SyncRun()
    try:
        fetched = fetch(upstream_url(f"{version.path}/.targets.json"))
        targets_map = catalogue.read_targets_json(fetched)
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


def _sync_version(
    run: SyncRun,
    name: str,
    branch: Branch,
    only_target: str | None,
    optional: bool,
    trust: bool = False,
) -> bool:
    """Read one version, its feeds and its targets; False if upstream does not have it
    (an optional snapshot that answers 404), so that a complete run removes it. With
    `trust`, an unchanged release has only the targets and feeds it lacks read."""
    try:
        listing = catalogue.read_version(name, branch)
    except NotFound as exc:
        if optional:
            run.say(f"{name}: not published ({exc.url} not found)")
            return False
        run.fail(exc, name)
        return True
    except UpstreamError as exc:
        run.fail(exc, name)
        return True
    run.report.versions += 1
    version = listing.version
    names = sorted(listing.targets)
    if only_target is not None:
        if only_target not in listing.targets:
            run.fail(UpstreamError(listing.url, f"does not list target {only_target}"), name)
            return True
        names = [only_target]
    known_targets = {t.name: t for t in Target.objects.filter(version=version)}
    indexes = _known_indexes(PackageIndex.objects.filter(version=version).select_related("target"))
    names, archs = _to_read(run, listing, names, known_targets, indexes, trust)
    for arch in archs:
        _sync_feeds(run, version, arch, indexes)
    for target_name in names:
        arch = listing.targets[target_name]
        _sync_target(run, version, target_name, arch, known_targets.get(target_name), indexes)
    if only_target is None:
        _remove_targets(run, version, listing.targets, known_targets, indexes)
    return True


def _to_read(
    run: SyncRun,
    listing: catalogue.VersionRead,
    names: list[str],
    known_targets: dict[str, Target],
    indexes: Indexes,
    trust: bool,
) -> tuple[list[str], list[str]]:
    """The targets and package architectures of a version to read in this run.

    A trusted release whose .targets.json is unchanged skips the targets already read
    with the same architecture and the architectures whose feeds are recorded."""
    version, targets_map = listing.version, listing.targets
    archs = sorted({targets_map[t] for t in names})
    path = version.path
    if not (trust and listing.unchanged and not version.is_snapshot):
        run.say(f"{version}: {len(names)} targets, {len(archs)} package architectures ({path})")
        return names, archs
    read = [
        t for t in names if getattr(known_targets.get(t), "arch_packages", None) == targets_map[t]
    ]
    names = [t for t in names if t not in read]
    archs = [a for a in archs if not any(k[:2] == (FEED, a) for k in indexes)]
    run.say(
        f"{version}: release unchanged, {len(read)} targets already read, {len(names)} "
        f"targets and {len(archs)} package architectures to read ({path})"
    )
    return names, archs


def _remove_targets(
    run: SyncRun,
    version: Version,
    targets_map: dict[str, str],
    known_targets: dict[str, Target],
    indexes: Indexes,
) -> None:
    """Delete the targets, and the feeds of architectures, no longer offered upstream."""
    gone = [t for name, t in known_targets.items() if name not in targets_map]
    archs = set(targets_map.values())
    stale_feeds = [i for key, i in indexes.items() if key[0] == FEED and key[1] not in archs]
    if not gone and not stale_feeds:
        return
    with transaction.atomic():
        catalogue.lock_and_bump(version)
        Target.objects.filter(pk__in=[t.pk for t in gone]).delete()
        PackageIndex.objects.filter(pk__in=[i.pk for i in stale_feeds]).delete()
    run.report.removed += len(gone)
    if gone:
        run.say(f"{version}: removed targets {', '.join(sorted(t.name for t in gone))}")


# Feeds -------------------------------------------------------------------------------------


def _known_indexes(queryset) -> Indexes:
    """Recorded indexes by identity: (feed, arch, name), (target, t), (kmods, t)."""
    known = {}
    for index in queryset:
        if index.kind == FEED:
            known[(FEED, index.arch_packages, index.name)] = index
        elif index.target is not None:
            known[(index.kind, index.target.name)] = index
    return known


def _read_feeds(version: Version, arch: str, indexes: Indexes) -> dict[str, IndexRead]:
    """Read feeds.conf of one package architecture and each feed it names, by feed
    name. Raises UpstreamError."""
    base = f"{version.path}/packages/{arch}"
    conf = fetch(upstream_url(f"{base}/feeds.conf"))
    feeds = parse_feeds_conf(conf.text())
    if not feeds:
        raise UpstreamError(conf.url, "lists no feeds")
    return {
        feed: read_index(upstream_url(f"{base}/{feed}"), indexes.get((FEED, arch, feed)))
        for feed in feeds
    }


def _sync_feeds(run: SyncRun, version: Version, arch: str, indexes: Indexes) -> None:
    """Read the feeds of one package architecture; write the changed ones together."""
    context = f"  {version} packages/{arch}"
    try:
        reads = _read_feeds(version, arch, indexes)
    except UpstreamError as exc:
        run.fail(exc, context)
        return
    changed = {feed: read for feed, read in reads.items() if not read.unchanged}
    stale = [i for key, i in indexes.items() if key[:2] == (FEED, arch) and key[2] not in reads]
    if not changed and not stale:
        run.say(f"{context}: {len(reads)} feeds unchanged")
        return
    with transaction.atomic():
        catalogue.lock_and_bump(version)
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
    run.say(f"{context}: {len(changed)} of {len(reads)} feeds updated ({count} packages)")


# Targets -----------------------------------------------------------------------------------


@dataclass
class TargetIndexesRead:
    """A target's own package indexes as read: its packages and its kernel's kmods."""

    packages: IndexRead
    kmods: IndexRead | None  # None: the target's kernel has no kmods folder
    kmods_dir: str
    stale_kmods: bool  # kmods recorded for a kernel that no longer has a folder

    @property
    def changed(self) -> bool:
        kmods_changed = self.kmods is not None and not self.kmods.unchanged
        return not self.packages.unchanged or kmods_changed or self.stale_kmods


def _read_target_indexes(
    version: Version, target: TargetRead, indexes: Indexes
) -> TargetIndexesRead:
    """Read a target's packages and kmods indexes. Raises UpstreamError."""
    base = catalogue.target_folder(version, target.name)
    packages = read_index(upstream_url(f"{base}/packages"), indexes.get((TARGET, target.name)))
    kmods_dir = target.kmods_dir
    kmods = None
    if kmods_dir:
        kmods = read_index(
            upstream_url(f"{base}/kmods/{kmods_dir}"), indexes.get((KMODS, target.name))
        )
    stale_kmods = not kmods_dir and (KMODS, target.name) in indexes
    return TargetIndexesRead(packages, kmods, kmods_dir, stale_kmods)


def _sync_target(
    run: SyncRun,
    version: Version,
    name: str,
    arch: str,
    known: Target | None,
    indexes: Indexes,
) -> Target | None:
    """Read one target's profiles.json, packages and kmods; write what changed in one
    transaction. Returns the Target (the old one if upstream failed)."""
    run.report.targets += 1
    context = f"  {version} {name}"
    try:
        target_read = catalogue.read_target(version, name, arch, known)
        indexes_read = _read_target_indexes(version, target_read, indexes)
    except UpstreamError as exc:
        run.fail(exc, context)
        return known
    if not (target_read.changed or indexes_read.changed):
        run.say(f"{context}: unchanged")
        return known

    with transaction.atomic():
        catalogue.lock_and_bump(version)
        target = catalogue.save_target(target_read, version, run.now)
        written = _save_target_indexes(indexes_read, version, target, indexes, run.now)
    if target_read.profiles_changed:
        written.insert(0, f"{len(target_read.profiles)} profiles")
    run.report.targets_updated += 1
    run.say(f"{context}: updated ({', '.join(written) or 'architecture'})")
    return target


def _save_target_indexes(
    read: TargetIndexesRead, version: Version, target: Target, indexes: Indexes, now: datetime
) -> list[str]:
    """Write a target's changed packages and kmods indexes, inside its transaction;
    return what was written, in words."""
    written = []
    for kind, index_name, index_read, label in (
        (TARGET, "packages", read.packages, "target packages"),
        (KMODS, read.kmods_dir, read.kmods, "kmods"),
    ):
        if index_read is None or index_read.unchanged:
            continue
        indexes[(kind, target.name)] = save_index(
            index_read,
            version=version,
            kind=kind,
            arch_packages=target.arch_packages,
            name=index_name,
            target=target,
            known=indexes.get((kind, target.name)),
            now=now,
        )
        written.append(f"{len(index_read.packages)} {label}")
    if read.stale_kmods:
        indexes.pop((KMODS, target.name)).delete()
    return written
