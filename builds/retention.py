"""How long builds, their files and cached ImageBuilders are kept.

The rules, from the row's own fields (so they hold for rows written by any version):

- a build in progress (queued or started) is never deleted;
- a snapshot build (its version ends in SNAPSHOT) goes at the first 00:00 UTC after it
  finished: snapshot ImageBuilders change daily, so yesterday's image is stale;
- a build with a `defaults` first-boot script goes ASU_DEFAULTS_TTL seconds after it
  finished: the script may hold passwords, and its images are public under /store/;
- a failed build goes after ASU_FAILURE_TTL, any other build after ASU_BUILD_TTL;
- a build whose recorded `expires_at` passed goes too (the answer it promised);
- the files of a build (its `bin_dir`) go with the last build that uses them;
- an unpacked ImageBuilder no build used for ASU_CACHE_MAX_AGE_DAYS is removed.

Each `*_due` function only says what would go, so a dry run is the same call without
`apply`.
"""

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import filelock
from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce

from builds.imagebuilder import CURRENT, cache_entries, remove_stale_working_copies
from builds.models import Build
from builds.reconcile import abandoned_builds, fail_abandoned
from builds.store import delete_stored_files

log = logging.getLogger(__name__)

IN_PROGRESS = (Build.Status.QUEUED, Build.Status.STARTED)


@dataclass
class Expiry:
    """What one sweep deletes (or, in a dry run, would delete)."""

    lost: list[Build] = field(default_factory=list)  # started builds no worker runs any more
    builds: list[Build] = field(default_factory=list)
    bin_dirs: list[str] = field(default_factory=list)  # store folders no remaining build uses
    cache_entries: list[Path] = field(default_factory=list)  # unused unpacked ImageBuilders


def last_midnight(now: datetime) -> datetime:
    """The latest 00:00 UTC at or before `now`."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def expires_at(version: str, request: dict, failed: bool, finished_at: datetime) -> datetime:
    """When a build finished at `finished_at` goes, by the rules above: the value to
    record as its `expires_at`, so that answers kept until then never outlive it."""
    ttl = settings.ASU_FAILURE_TTL if failed else settings.ASU_BUILD_TTL
    if request.get("defaults"):
        ttl = min(ttl, settings.ASU_DEFAULTS_TTL)
    deadline = finished_at + timedelta(seconds=ttl)
    if is_snapshot(version):
        deadline = min(deadline, last_midnight(finished_at) + timedelta(days=1))
    return deadline


def is_snapshot(version: str) -> bool:
    return version.upper().endswith("SNAPSHOT")


def builds_due(now: datetime) -> QuerySet:
    """The finished builds the rules delete at `now`."""

    def finished_before(seconds: int) -> Q:
        return Q(finished__lt=now - timedelta(seconds=seconds))

    with_defaults = (
        Q(request__has_key="defaults") & ~Q(request__defaults=None) & ~Q(request__defaults="")
    )
    due = (
        Q(expires_at__lt=now)
        | (Q(status=Build.Status.FAILED) & finished_before(settings.ASU_FAILURE_TTL))
        | (Q(status=Build.Status.DONE) & finished_before(settings.ASU_BUILD_TTL))
        | (with_defaults & finished_before(settings.ASU_DEFAULTS_TTL))
        | (Q(version__iendswith="snapshot") & Q(finished__lt=last_midnight(now)))
    )
    return (
        Build.objects.exclude(status__in=IN_PROGRESS)
        .alias(finished=Coalesce("finished_at", "enqueued_at"))
        .filter(due)
        .order_by("pk")
    )


def lost_after() -> float:
    """Seconds after which a started build can no longer be running: Celery's hard time
    limit (ASU_BUILD_TIMEOUT + 120) has killed it by then."""
    return settings.ASU_BUILD_TIMEOUT + 600


def orphaned_bin_dirs(builds: list[Build]) -> list[str]:
    """The store folders of `builds` that no other build uses."""
    bin_dirs = {build.bin_dir for build in builds if build.bin_dir}
    leaving = [build.pk for build in builds]
    still_used = set(
        Build.objects.filter(bin_dir__in=bin_dirs)
        .exclude(pk__in=leaving)
        .values_list("bin_dir", flat=True)
    )
    return sorted(bin_dirs - still_used)


def cache_entries_due(now: float) -> list[Path]:
    """Unpacked ImageBuilders no build has used for ASU_CACHE_MAX_AGE_DAYS (their folder's
    modification time, which each working copy made from it renews)."""
    cutoff = now - settings.ASU_CACHE_MAX_AGE_DAYS * 86400
    due = []
    for entry in cache_entries():
        try:
            if entry.stat().st_mtime < cutoff:
                due.append(entry)
        except FileNotFoundError:
            pass
    return due


def trim_local_cache(now: float, every: float = 3600) -> list[Path]:
    """Remove this host's unused ImageBuilders, at most once per `every` seconds. Each
    worker keeps a cache of its own, which the sweep, run by one worker, cannot see: so
    every worker trims its own after its builds (the mark's age says when it last did)."""
    mark = Path(settings.ASU_CACHE_DIR) / ".trimmed"
    try:
        if now - mark.stat().st_mtime < every:
            return []
    except FileNotFoundError:
        mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    return [entry for entry in cache_entries_due(now) if remove_cache_entry(entry)]


def find_expired(now: datetime) -> Expiry:
    """Everything a sweep at `now` deletes; deletes nothing."""
    lost = list(Build.objects.filter(pk__in=abandoned_builds(now)))
    builds = list(builds_due(now).defer("stdout", "stderr", "result", "manifest"))
    return Expiry(
        lost=lost,
        builds=builds,
        bin_dirs=orphaned_bin_dirs(builds),
        cache_entries=cache_entries_due(now.timestamp()),
    )


def expire(now: datetime) -> Expiry:
    """Fail the lost builds, then delete what the rules say; return what went."""
    # Failed first (as the reconciliation does), so that they expire like any failed build.
    lost = list(Build.objects.filter(pk__in=abandoned_builds(now)))
    fail_abandoned(now)
    expiry = find_expired(now)
    expiry.lost = lost
    expiry.builds, expiry.bin_dirs = delete_builds(expiry.builds)
    expiry.cache_entries = [e for e in expiry.cache_entries if remove_cache_entry(e)]
    remove_stale_working_copies(lost_after())
    return expiry


def delete_builds(builds: list[Build]) -> tuple[list[Build], list[str]]:
    """Delete the finished builds of `builds`, and the store folders no remaining build
    uses; return the builds deleted and the folders. A build queued or running by now
    stays (a finished one may have been queued again since it was read)."""
    going = Build.objects.filter(pk__in=[b.pk for b in builds]).exclude(status__in=IN_PROGRESS)
    gone = set(going.values_list("pk", flat=True))
    going.filter(pk__in=gone).delete()
    deleted = [build for build in builds if build.pk in gone]
    bin_dirs = orphaned_bin_dirs(deleted)
    for bin_dir in bin_dirs:
        delete_stored_files(bin_dir)
    return deleted, bin_dirs


def describe(expiry: Expiry) -> list[str]:
    """One line per thing a sweep touches, for the operator; completed by "would " in a
    dry run."""
    lines = [f"fail lost build {build.pk} ({build})" for build in expiry.lost]
    for build in expiry.builds:
        finished = build.finished_at or build.enqueued_at
        lines.append(f"delete build {build.pk} ({build}, finished {finished:%Y-%m-%d %H:%M} UTC)")
    lines += [f"delete store folder {bin_dir}" for bin_dir in expiry.bin_dirs]
    lines += [f"remove unused ImageBuilder {entry}" for entry in expiry.cache_entries]
    return lines


def remove_cache_entry(entry: Path) -> bool:
    """Remove an unpacked ImageBuilder unless a build is copying from it right now (its
    target folder's lock is held); True if it went."""
    lock = filelock.FileLock(str(entry.parent / ".lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    try:
        shutil.rmtree(entry, ignore_errors=True)
        # current.json names the entry: without it the next build fetches afresh anyway.
        if not any(p.is_dir() and not p.name.startswith(".") for p in entry.parent.iterdir()):
            (entry.parent / CURRENT).unlink(missing_ok=True)
    finally:
        lock.release()
    log.info("Removed the unused ImageBuilder %s", entry)
    return not entry.exists()
