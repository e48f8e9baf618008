"""Celery tasks: building one image, and expiring old builds."""

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from celery import shared_task
from celery.signals import worker_init
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from builds import imagebuilder as ib
from builds.models import SYSUPGRADE_TYPES, Build, Step

log = logging.getLogger(__name__)


@worker_init.connect
def _prepare_worker(**kwargs) -> None:
    # Logged once when the worker starts; the forked pool processes inherit the answer.
    ib.sandbox()
    ib.remove_stale_working_copies(_lost_after())


def _lost_after() -> float:
    """Seconds after which a started build can no longer be running: Celery's hard time
    limit (ASU_BUILD_TIMEOUT + 120) has killed it by then."""
    return settings.ASU_BUILD_TIMEOUT + 600


@shared_task(bind=True, acks_late=True)
def build(self, pk: int) -> str:
    """Build the image of Build `pk`. A redelivered or repeated task finds the row no
    longer queued and does nothing."""
    claimed = Build.objects.filter(pk=pk, status=Build.Status.QUEUED).update(
        status=Build.Status.STARTED,
        started_at=timezone.now(),
        task_id=self.request.id or "",
        imagebuilder_status=Step.INIT,
    )
    if claimed != 1:
        log.info("Build %s is gone or taken by another worker", pk)
        return "skipped"
    row = Build.objects.filter(pk=pk).first()
    if row is None:
        return "skipped"
    deadline = time.monotonic() + settings.ASU_BUILD_TIMEOUT
    steps = StepTimes()
    try:
        fields = _reuse(row) or _build(row, deadline, steps)
    except ib.BuildError as exc:
        steps.start("finish")
        _finish(pk, failed=True, detail=exc.message, stdout=exc.stdout, stderr=exc.stderr)
        log.info("Build %s failed in %s: %s", pk, steps.summary(), exc.message)
        return "failed"
    except Exception:
        log.exception("Build %s failed on the server", pk)
        _finish(
            pk,
            failed=True,
            detail="The server failed while building this image; its log has the details",
        )
        return "failed"
    steps.start("finish")
    _finish(pk, failed=False, **fields)
    log.info("Build %s done in %s", pk, steps.summary())
    return "done"


class StepTimes:
    """How long each step of one build took, for a line in the worker's log: where a
    build's time goes, in production as in the benchmarks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._step = "claim"  # the claim, reading the row and looking for files to reuse
        self._since = time.monotonic()

    def start(self, step: str) -> None:
        """End the current step and start `step`."""
        now = time.monotonic()
        self.seconds[self._step] = self.seconds.get(self._step, 0.0) + now - self._since
        self._step, self._since = step, now

    def summary(self) -> str:
        """The total and each step, the current one included: "0.712 s (claim 0.004 s, ...)"."""
        self.start(self._step)
        parts = ", ".join(f"{step} {seconds:.3f} s" for step, seconds in self.seconds.items())
        return f"{sum(self.seconds.values()):.3f} s ({parts})"


def _step(pk: int, step: str) -> None:
    """Report progress; clients poll it as `imagebuilder_status`."""
    Build.objects.filter(pk=pk).update(imagebuilder_status=step)


def _finish(pk: int, failed: bool, detail: str = "", **fields) -> None:
    now = timezone.now()
    ttl = settings.ASU_FAILURE_TTL if failed else settings.ASU_BUILD_TTL
    for name in ("stdout", "stderr"):
        if name in fields:
            fields[name] = ib.bounded(fields[name] or "")
    # Only a row still STARTED: one the expiry sweep gave up on stays as it was left.
    Build.objects.filter(pk=pk, status=Build.Status.STARTED).update(
        status=Build.Status.FAILED if failed else Build.Status.DONE,
        imagebuilder_status=Step.FAILED if failed else Step.DONE,
        finished_at=now,
        expires_at=now + timedelta(seconds=ttl),
        detail=f"Error: {detail}" if failed else "",
        **fields,
    )


def _reuse(row: Build) -> dict | None:
    """The results of an earlier identical build whose files are still in the store."""
    if not row.bin_dir:
        return None
    earlier = (
        Build.objects.filter(bin_dir=row.bin_dir, status=Build.Status.DONE)
        .exclude(pk=row.pk)
        .order_by("-finished_at")
        .first()
    )
    if earlier is None or not earlier.images:
        return None
    wanted_revision = row.request.get("version_code")
    if wanted_revision and earlier.result.get("version_code") != wanted_revision:
        return None
    if not all(default_storage.exists(f"{row.bin_dir}/{i['name']}") for i in earlier.images):
        return None
    # One folder serves requests that differ only in the versions they expect.
    if ib.check_packages_versions(earlier.manifest, _expected_versions(row)):
        return None  # a fresh build gives the exact answer
    log.info("Build %s reuses the files of build %s in %s", row.pk, earlier.pk, row.bin_dir)
    return {
        "result": {**earlier.result, "request": row.request},
        "manifest": earlier.manifest,
        "images": earlier.images,
        "build_cmd": earlier.build_cmd,
        "stdout": earlier.stdout,
        "stderr": earlier.stderr,
    }


def _build(row: Build, deadline: float, steps: StepTimes) -> dict:
    """Run the ImageBuilder for `row`; return the fields to record. Raises BuildError."""
    request = row.request
    profile = row.profile
    requested = request.get("version_code") or ""

    def step(name: str) -> None:
        steps.start(name)
        _step(row.pk, name)

    with ib.working_copy(row.version, row.target, deadline, step, requested) as workspace:
        workdir = workspace.path
        ib.point_feeds_at_upstream(workdir)
        if request.get("repositories"):
            ib.add_repositories(
                workdir,
                request["repositories"],
                request.get("repositories_mode") or "append",
                request.get("repository_keys") or [],
            )
        network = ib.needs_network(workdir)
        files = ib.write_defaults(workdir, request["defaults"]) if request.get("defaults") else None

        step(Step.VALIDATE_REVISION)
        # The output of the cache's first `make info`; listing profiles needs no network.
        run = workspace.info or ib.run_make(workdir, ["make", "info"], deadline)
        if run.returncode:
            raise ib.BuildError(
                "The ImageBuilder could not list its profiles (make info failed)",
                run.stdout,
                run.stderr,
            )
        info = ib.parse_make_info(run.stdout)
        if requested and info.revision and info.revision != requested:
            raise ib.BuildError(
                f"Received incorrect version {info.revision} (requested {requested})",
                run.stdout,
                run.stderr,
            )
        if info.profile_packages and profile not in info.profile_packages:
            raise ib.BuildError(
                f"Profile {profile} is not known to the ImageBuilder of {row.version} {row.target}",
                run.stdout,
                run.stderr,
            )

        packages = list(row.packages)
        if request.get("diff_packages"):
            # The ImageBuilder's own defaults are the truth for the -pkg list.
            defaults = set(info.default_packages) | {
                p for p in info.profile_packages.get(profile, []) if not p.startswith("-")
            }
            packages = ib.diff_packages(packages, defaults)

        step(Step.VALIDATE_MANIFEST)
        run = ib.run_make(
            workdir,
            [
                "make",
                "manifest",
                f"PROFILE={profile}",
                f"PACKAGES={' '.join(packages)}",
                "STRIP_ABI=1",
            ],
            deadline,
            network,
        )
        if run.returncode:
            errors = ib.parse_package_errors(run.stderr)
            detail = errors.detail if errors else _make_failed("make manifest", run)
            raise ib.BuildError(detail, run.stdout, run.stderr)
        manifest = ib.parse_manifest(run.stdout)
        if problem := ib.check_packages_versions(manifest, _expected_versions(row)):
            raise ib.BuildError(problem, run.stdout, run.stderr)

        step(Step.CALCULATE_PACKAGES_HASH)
        extra_name = ib.packages_hash(manifest)

        step(Step.BUILDING_IMAGE)
        bin_dir = workdir / "asu-bin"
        cmd = ib.image_command(
            profile,
            packages,
            extra_name,
            bin_dir,
            files=files,
            rootfs_size_mb=request.get("rootfs_size_mb"),
            filesystem=request.get("filesystem"),
        )
        run = ib.run_make(workdir, cmd, deadline, network)
        if ib.image_too_big(run.stderr):
            raise ib.BuildError("Selected packages exceed device storage", run.stdout, run.stderr)
        if f'Profile "{profile}" does not exist' in run.stdout:
            raise ib.BuildError(
                f"Profile {profile} is not known to the ImageBuilder", run.stdout, run.stderr
            )
        if run.returncode:
            raise ib.BuildError(_make_failed("make image", run), run.stdout, run.stderr)
        try:
            profiles_json = ib.read_profiles_json(bin_dir, profile)
        except ib.BuildError as exc:
            raise ib.BuildError(exc.message, run.stdout, run.stderr) from None
        merged = ib.merge_profile(profiles_json, profile)
        images = merged.get("images") or []
        _check_images(images, bin_dir, request.get("filesystem"), run)
        for image in images:
            # Newer profiles.json files carry it; the pages show it for older ones too.
            image.setdefault("size", (bin_dir / image["name"]).stat().st_size)
        steps.start("store_files")
        ib.store_files(bin_dir, row.bin_dir)
        steps.start("remove_working_copy")

    stdout, stderr = ib.bounded(run.stdout), ib.bounded(run.stderr)
    result = {
        **merged,
        "bin_dir": row.bin_dir,
        "build_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "manifest": manifest,
        "build_cmd": cmd,
        "stdout": stdout,
        "stderr": stderr,
        "request": request,
    }
    return {
        "result": result,
        "manifest": manifest,
        "images": images,
        "build_cmd": cmd,
        "stdout": stdout,
        "stderr": stderr,
    }


def _expected_versions(row: Build) -> dict[str, str]:
    """The versions the client expects, less the packages a package-change rule replaced
    (the client named them by their old names)."""
    replaced = {
        rule.get("source")
        for rule in row.package_changes_applied or []
        if isinstance(rule, dict) and rule.get("target")
    }
    expected = row.request.get("packages_versions") or {}
    return {name: version for name, version in expected.items() if name not in replaced}


def _make_failed(what: str, run: ib.MakeResult) -> str:
    return (
        f"The ImageBuilder failed ({what} exited with status {run.returncode}); "
        "the log below shows why"
    )


def _check_images(images: list[dict], bin_dir: Path, filesystem: str | None, run) -> None:
    for image in images:
        if not (bin_dir / image.get("name", "")).is_file():
            raise ib.BuildError(
                f"The ImageBuilder listed {image.get('name')} but did not make it",
                run.stdout,
                run.stderr,
            )
    if filesystem and any("filesystem" in image for image in images):
        if not any(
            image.get("filesystem") == filesystem and image.get("type") in SYSUPGRADE_TYPES
            for image in images
        ):
            raise ib.BuildError(
                f"The ImageBuilder made no sysupgrade image with the {filesystem} file system "
                "for this device; choose another file system",
                run.stdout,
                run.stderr,
            )


@shared_task
def expire_builds() -> int:
    """Delete builds past their expiry, and their files when no live build shares them.
    Builds a lost worker left running are failed first, so that they expire too."""
    now = timezone.now()
    lost = now - timedelta(seconds=_lost_after())
    Build.objects.filter(status=Build.Status.STARTED, started_at__lt=lost).update(
        status=Build.Status.FAILED,
        imagebuilder_status=Step.FAILED,
        finished_at=now,
        expires_at=now + timedelta(seconds=settings.ASU_FAILURE_TTL),
        detail="Error: The build was interrupted on the server (its worker stopped)",
    )
    expired = Build.objects.filter(expires_at__lt=now).exclude(
        status__in=[Build.Status.QUEUED, Build.Status.STARTED]
    )
    bin_dirs = set(expired.values_list("bin_dir", flat=True))
    count, _ = expired.delete()
    still_used = set(Build.objects.filter(bin_dir__in=bin_dirs).values_list("bin_dir", flat=True))
    for bin_dir in bin_dirs - still_used:
        ib.delete_stored_files(bin_dir)
    ib.remove_stale_working_copies(_lost_after())
    if count:
        log.info("Expired %d builds", count)
    return count
