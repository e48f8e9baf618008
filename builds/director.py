"""The build of one image, step by step.

A BuildDirector holds one build: its row, its deadline, the time each step took, its
working copy of the ImageBuilder and what each step found out for the next one. `run()`
lists the steps; each is one small method. A step that fails raises BuildError with the
text the requester reads.
"""

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from builds import configure, retention, signing, stats, store
from builds.errors import BuildError
from builds.imagebuilder import Workspace, working_copy
from builds.make import MakeResult, image_command, run_make
from builds.make_output import (
    ImageBuilderInfo,
    bounded,
    check_packages_versions,
    diff_packages,
    image_too_big,
    merge_profile,
    packages_hash,
    parse_make_info,
    parse_manifest,
    parse_package_errors,
    read_profiles_json,
)
from builds.models import SYSUPGRADE_TYPES, Build, Step
from targets.models import Version

# The build task's own name: its log lines (the timing line above all) keep the logger
# name they have always had, which log filters select on.
log = logging.getLogger("builds.tasks")

SERVER_FAILED = "The server failed while building this image; its log has the details"


class BuildDirector:
    """Runs one claimed build from its working copy to its recorded result."""

    def __init__(self, row: Build) -> None:
        self.row = row
        self.request: dict[str, Any] = row.request
        self.profile = row.profile
        self.deadline = time.monotonic() + settings.ASU_BUILD_TIMEOUT
        self.timings = Timings()
        # Set by the steps, in order.
        self.workspace: Workspace
        self.network = False  # whether make must reach remote feeds
        self.files: Path | None = None  # the FILES folder holding the first-boot script
        self.info: ImageBuilderInfo
        self.packages: list[str] = list(row.packages)
        self.manifest: dict[str, str] = {}
        self.image_run: MakeResult  # `make image`: its output is stored with the build
        self.build_cmd: list[str] = []
        self.merged_profile: dict[str, Any] = {}
        self.images: list[dict] = []
        self.signature: dict[str, Any] = {}

    @classmethod
    def claim(cls, pk: int, task_id: str, redelivered: bool = False) -> "BuildDirector | None":
        """Take Build `pk` if it is still queued; None if it is gone or already taken.
        A redelivered task (its worker died mid-build and the broker handed the message
        out again) takes over its own started build: same task id, nobody else runs it."""
        claimable = Q(status=Build.Status.QUEUED)
        if redelivered and task_id:
            claimable |= Q(status=Build.Status.STARTED, task_id=task_id)
        claimed = Build.objects.filter(claimable, pk=pk).update(
            status=Build.Status.STARTED,
            started_at=timezone.now(),
            task_id=task_id,
            imagebuilder_status=Step.INIT,
        )
        if claimed != 1:
            log.info("Build %s is gone or taken by another worker", pk)
            return None
        if redelivered:
            log.info("Build %s taken over by its redelivered task %s", pk, task_id)
        row = Build.objects.filter(pk=pk).first()
        return cls(row) if row is not None else None

    def run(self) -> str:
        """Build the image, or reuse an identical build's files, and record the outcome:
        "done" or "failed"."""
        try:
            fields = self.reuse_earlier_files() or self.build()
        except BuildError as exc:
            self.timings.start("finish")
            self.fail(exc.message, stdout=exc.stdout, stderr=exc.stderr)
            log.info("Build %s failed in %s: %s", self.row.pk, self.timings.summary(), exc.message)
            return "failed"
        except Exception:
            log.exception("Build %s failed on the server", self.row.pk)
            self.fail(SERVER_FAILED, server_fault=True)
            return "failed"
        self.timings.start("finish")
        self.finish(**fields)
        log.info("Build %s done in %s", self.row.pk, self.timings.summary())
        return "done"

    def build(self) -> dict[str, Any]:
        """Run the ImageBuilder; return the fields to record."""
        with working_copy(
            self.row.version,
            version_path(self.row.version),
            self.row.target,
            self.deadline,
            self.report,
            self.request.get("version_code") or "",
        ) as self.workspace:
            self.prepare_working_copy()
            self.validate_revision()
            self.validate_manifest()
            self.build_image()
            self.check_images()
            self.sign_images()
            self.store_files()
            self.timings.start("remove_working_copy")
        return self.results()

    # The steps, in the order they run.

    def reuse_earlier_files(self) -> dict[str, Any] | None:
        """The results of an earlier identical build whose files are still in the store."""
        earlier = self._earlier_identical_build()
        if earlier is None:
            return None
        # One folder serves requests that differ only in the versions they expect.
        if check_packages_versions(earlier.manifest, self.expected_versions()):
            return None  # a fresh build gives the exact answer
        log.info(
            "Build %s reuses the files of build %s in %s", self.row.pk, earlier.pk, self.row.bin_dir
        )
        return {
            "result": {**earlier.result, "request": self.request},
            "manifest": earlier.manifest,
            "images": earlier.images,
            "build_cmd": earlier.build_cmd,
            "stdout": earlier.stdout,
            "stderr": earlier.stderr,
        }

    def prepare_working_copy(self) -> None:
        """Point the feeds at upstream, add the requested repositories, write the
        first-boot script."""
        workdir = self.workspace.path
        configure.point_feeds_at_upstream(workdir)
        if self.request.get("repositories"):
            configure.add_repositories(
                workdir,
                self.request["repositories"],
                self.request.get("repositories_mode") or "replace",
                self.request.get("repository_keys") or [],
            )
        self.network = configure.needs_network(workdir)
        if self.request.get("defaults"):
            self.files = configure.write_defaults(workdir, self.request["defaults"])

    def validate_revision(self) -> None:
        """`make info`: the ImageBuilder is of the requested revision and knows the profile."""
        self.report(Step.VALIDATE_REVISION)
        # The output of the cache's first `make info`; listing profiles needs no network.
        run = self.workspace.info or run_make(self.workspace.path, ["make", "info"], self.deadline)
        if run.returncode:
            raise _failure("The ImageBuilder could not list its profiles (make info failed)", run)
        self.info = parse_make_info(run.stdout)
        requested = self.request.get("version_code") or ""
        if requested and self.info.revision and self.info.revision != requested:
            raise _failure(
                f"Received incorrect version {self.info.revision} (requested {requested})", run
            )
        if self.info.profile_packages and self.profile not in self.info.profile_packages:
            raise _failure(
                f"Profile {self.profile} is not known to the ImageBuilder of "
                f"{self.row.version} {self.row.target}",
                run,
            )
        if self.request.get("diff_packages"):
            self.packages = diff_packages(self.packages, self._default_packages())

    def validate_manifest(self) -> None:
        """`make manifest`: the packages can be installed together, in the versions the
        client expects."""
        self.report(Step.VALIDATE_MANIFEST)
        run = run_make(
            self.workspace.path,
            [
                "make",
                "manifest",
                f"PROFILE={self.profile}",
                f"PACKAGES={' '.join(self.packages)}",
                "STRIP_ABI=1",
            ],
            self.deadline,
            self.network,
        )
        if run.returncode:
            errors = parse_package_errors(run.stderr)
            raise _failure(errors.detail if errors else _make_failed("make manifest", run), run)
        self.manifest = parse_manifest(run.stdout)
        if problem := check_packages_versions(self.manifest, self.expected_versions()):
            raise _failure(problem, run)

    def build_image(self) -> None:
        """`make image`, named after the packages it installs."""
        self.report(Step.CALCULATE_PACKAGES_HASH)
        extra_name = packages_hash(self.manifest)
        self.report(Step.BUILDING_IMAGE)
        self.build_cmd = image_command(
            self.profile,
            self.packages,
            extra_name,
            self.bin_dir,
            files=self.files,
            rootfs_size_mb=self.request.get("rootfs_size_mb"),
            filesystem=self.request.get("filesystem"),
        )
        run = self.image_run = run_make(
            self.workspace.path, self.build_cmd, self.deadline, self.network
        )
        if image_too_big(run.stderr):
            raise _failure("Selected packages exceed device storage", run)
        if f'Profile "{self.profile}" does not exist' in run.stdout:
            raise _failure(f"Profile {self.profile} is not known to the ImageBuilder", run)
        if run.returncode:
            raise _failure(_make_failed("make image", run), run)

    def check_images(self) -> None:
        """profiles.json lists the images, `make image` made each of them, and one is a
        sysupgrade image of the requested file system."""
        try:
            profiles_json = read_profiles_json(self.bin_dir, self.profile)
        except BuildError as exc:
            raise _failure(exc.message, self.image_run) from None
        self.merged_profile = merge_profile(profiles_json, self.profile)
        self.images = self.merged_profile.get("images") or []
        for image in self.images:
            if not (self.bin_dir / image.get("name", "")).is_file():
                raise _failure(
                    f"The ImageBuilder listed {image.get('name')} but did not make it",
                    self.image_run,
                )
        filesystem = self.request.get("filesystem")
        if filesystem and not _has_sysupgrade_image(self.images, filesystem):
            raise _failure(
                f"The ImageBuilder made no sysupgrade image with the {filesystem} file system "
                "for this device; choose another file system",
                self.image_run,
            )
        for image in self.images:
            # Newer profiles.json files carry it; the pages show it for older ones too.
            image.setdefault("size", (self.bin_dir / image["name"]).stat().st_size)

    def sign_images(self) -> None:
        """Replace the sysupgrade images' signatures with the server key's, so that
        routers trusting that key accept them; without a key, leave them as built."""
        key = signing.signing_key()
        if key is None:
            self.signature = {"signed": False, "detail": signing.UNSIGNED}
            return
        self.report(Step.SIGNING_IMAGES)
        signed = []
        for image in self.images:
            if image.get("type") in SYSUPGRADE_TYPES:
                image["sha256"] = signing.sign_image(self.bin_dir / image["name"], key)
                image["size"] = (self.bin_dir / image["name"]).stat().st_size
                signed.append(image["name"])
        signing.update_sha256sums(self.bin_dir, self.images)
        self.signature = {"signed": bool(signed), "key": key.fingerprint, "images": signed}

    def store_files(self) -> None:
        """Copy the images to the store (a bucket, maybe): every file the answer names is
        stored before the build is reported done."""
        self.timings.start("store_files")
        stored = set(store.store_files(self.bin_dir, self.row.bin_dir))
        missing = [image["name"] for image in self.images if image["name"] not in stored]
        if missing:
            raise RuntimeError(f"The store did not take {', '.join(missing)}")

    def results(self) -> dict[str, Any]:
        """The fields to record; the result repeats them as clients read it."""
        stdout, stderr = bounded(self.image_run.stdout), bounded(self.image_run.stderr)
        result = {
            **self.merged_profile,
            "bin_dir": self.row.bin_dir,
            "build_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "manifest": self.manifest,
            "build_cmd": self.build_cmd,
            "stdout": stdout,
            "stderr": stderr,
            "request": self.request,
            "signature": self.signature,
        }
        return {
            "result": result,
            "manifest": self.manifest,
            "images": self.images,
            "build_cmd": self.build_cmd,
            "stdout": stdout,
            "stderr": stderr,
        }

    def finish(self, **fields: Any) -> None:
        """Record the build as done, with `fields`."""
        self._record(failed=False, **fields)

    def fail(self, detail: str, **fields: Any) -> None:
        """Record the build as failed, with `detail` and `fields` (stdout, stderr)."""
        self._record(failed=True, detail=detail, **fields)

    # Helpers of the steps.

    def report(self, step: str) -> None:
        """Start `step`: time it, and report it to clients, who poll it as
        `imagebuilder_status`."""
        self.timings.start(step)
        Build.objects.filter(pk=self.row.pk).update(imagebuilder_status=step)

    @property
    def bin_dir(self) -> Path:
        """Where `make image` puts the images, inside the working copy."""
        return self.workspace.path / "asu-bin"

    def expected_versions(self) -> dict[str, str]:
        """The versions the client expects, less the packages a package-change rule
        replaced (the client named them by their old names)."""
        replaced = {
            rule.get("source")
            for rule in self.row.package_changes_applied or []
            if isinstance(rule, dict) and rule.get("target")
        }
        expected = self.request.get("packages_versions") or {}
        return {name: version for name, version in expected.items() if name not in replaced}

    def _default_packages(self) -> set[str]:
        # The ImageBuilder's own defaults are the truth for the -pkg list.
        profile_packages = self.info.profile_packages.get(self.profile, [])
        return set(self.info.default_packages) | {
            p for p in profile_packages if not p.startswith("-")
        }

    def _earlier_identical_build(self) -> Build | None:
        """The newest done build of the same folder whose files are all still stored and
        whose revision is the requested one."""
        if not self.row.bin_dir:
            return None
        earlier = (
            Build.objects.filter(bin_dir=self.row.bin_dir, status=Build.Status.DONE)
            .exclude(pk=self.row.pk)
            .order_by("-finished_at")
            .first()
        )
        if earlier is None or not earlier.images:
            return None
        wanted_revision = self.request.get("version_code")
        if wanted_revision and earlier.result.get("version_code") != wanted_revision:
            return None
        if not all(
            default_storage.exists(f"{self.row.bin_dir}/{i['name']}") for i in earlier.images
        ):
            return None
        return earlier

    def _record(self, failed: bool, detail: str = "", **fields: Any) -> None:
        now = timezone.now()
        for name in ("stdout", "stderr"):
            if name in fields:
                fields[name] = bounded(fields[name] or "")
        # Only a row still STARTED: one the expiry sweep gave up on stays as it was left.
        # Counted in the same transaction: the statistics show a build when clients do.
        with transaction.atomic():
            recorded = Build.objects.filter(pk=self.row.pk, status=Build.Status.STARTED).update(
                status=Build.Status.FAILED if failed else Build.Status.DONE,
                imagebuilder_status=Step.FAILED if failed else Step.DONE,
                finished_at=now,
                # When the retention sweep deletes it: kept answers never outlive the row.
                expires_at=retention.expires_at(self.row.version, self.request, failed, now),
                detail=f"Error: {detail}" if failed else "",
                **fields,
            )
            if recorded:
                self._count(failed, detail, now)

    def _count(self, failed: bool, detail: str, now: datetime) -> None:
        """The build in the statistics; a failure to count never loses the result."""
        try:
            with transaction.atomic():
                stats.record_build(self.row, failed, detail, now)
        except Exception:
            log.exception("Build %s was not counted in the statistics", self.row.pk)


class Timings:
    """How long each phase of one build took, for a line in the worker's log: where a
    build's time goes, in production as in the benchmarks. The phases are the steps
    reported to clients and a few more (claim, store_files, remove_working_copy, finish)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.phase = "claim"  # the claim, reading the row and looking for files to reuse
        self.since = time.monotonic()

    def start(self, phase: str) -> None:
        """End the current phase and start `phase`."""
        now = time.monotonic()
        self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + now - self.since
        self.phase, self.since = phase, now

    def summary(self) -> str:
        """The total and each phase, the current one included: "0.712 s (claim 0.004 s, ...)"."""
        self.start(self.phase)
        parts = ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in self.seconds.items())
        return f"{sum(self.seconds.values()):.3f} s ({parts})"


def version_path(version: str) -> str:
    """The version's folder on the downloads server: "releases/24.10.1", "snapshots"."""
    row = Version.objects.select_related("branch").filter(name=version).first()
    if row is not None:
        return row.path
    # Not in the catalogue (yet): the downloads server's own convention.
    if version.upper() == "SNAPSHOT":
        return "snapshots"
    return f"releases/{version}"


def _failure(message: str, run: MakeResult) -> BuildError:
    """A BuildError carrying the output of the make run that shows why."""
    return BuildError(message, run.stdout, run.stderr)


def _make_failed(what: str, run: MakeResult) -> str:
    return (
        f"The ImageBuilder failed ({what} exited with status {run.returncode}); "
        "the log below shows why"
    )


def _has_sysupgrade_image(images: list[dict], filesystem: str) -> bool:
    """True if one of the images is a sysupgrade image of `filesystem`, or if
    profiles.json does not say which file system its images are (older ImageBuilders)."""
    if not any("filesystem" in image for image in images):
        return True
    return any(
        image.get("filesystem") == filesystem and image.get("type") in SYSUPGRADE_TYPES
        for image in images
    )
