"""Builds: one row per distinct effective build request."""

import json
import re
from datetime import UTC

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Step:
    """The steps a build reports in `imagebuilder_status`, as the clients spell them:
    LuCI throws on any other value, so nothing else is ever reported."""

    INIT = "init"
    DOWNLOAD_IMAGEBUILDER = "download_imagebuilder"
    UNPACK_IMAGEBUILDER = "unpack_imagebuilder"
    CONTAINER_SETUP = "container_setup"
    VALIDATE_REVISION = "validate_revision"
    VALIDATE_MANIFEST = "validate_manifest"
    CALCULATE_PACKAGES_HASH = "calculate_packages_hash"
    BUILDING_IMAGE = "building_image"
    SIGNING_IMAGES = "signing_images"
    DONE = "done"
    FAILED = "failed"

    ALL = frozenset(
        {
            INIT,
            DOWNLOAD_IMAGEBUILDER,
            UNPACK_IMAGEBUILDER,
            CONTAINER_SETUP,
            VALIDATE_REVISION,
            VALIDATE_MANIFEST,
            CALCULATE_PACKAGES_HASH,
            BUILDING_IMAGE,
            SIGNING_IMAGES,
            DONE,
            FAILED,
        }
    )


# A request hash, or the start of one long enough to mean something (6 hex digits).
HASH_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")

# A request hash, or any other long hexadecimal run that could name one.
HEX_RUN = re.compile(r"\b[0-9a-fA-F]{16,}\b")

# Image types a router can flash with sysupgrade (profiles.json `images[].type`).
SYSUPGRADE_TYPES = frozenset({"sysupgrade", "combined", "combined-efi", "sdcard"})


class BuildQuerySet(models.QuerySet):
    def queued(self) -> "BuildQuerySet":
        """The builds waiting for a worker: queued, and their task sent to the broker."""
        return self.filter(status=Build.Status.QUEUED, sent_at__isnull=False)

    def unsent(self) -> "BuildQuerySet":
        """Queued builds whose task never reached the broker (it was down): real work
        for no worker until they are sent."""
        return self.filter(status=Build.Status.QUEUED, sent_at__isnull=True)

    def matching(self, search: str) -> "BuildQuerySet":
        """Builds whose profile holds `search`, that asked for or installed a package of
        that name, or, for 6 to 64 hex digits, whose request hash starts with it."""
        search = search.strip()
        # has_key and the quoted name in the list's JSON text are exact names, and work
        # on SQLite and PostgreSQL alike.
        match = (
            Q(profile__icontains=search)
            | Q(manifest__has_key=search)
            | Q(packages__icontains=json.dumps(search))
        )
        if HASH_PREFIX.match(search.lower()):
            match |= Q(request_hash__startswith=search.lower())
        return self.filter(match)

    def recent_failures(self, count: int) -> "BuildQuerySet":
        """The `count` builds that failed last, newest first."""
        failed = self.filter(status=Build.Status.FAILED, finished_at__isnull=False)
        return failed.order_by("-finished_at", "-pk")[:count]

    def error_log(self, count: int) -> str:
        """The build-error log as openwrt/asu publishes it: a summary, then one line per
        failure (`Build.error_line`), newest first."""
        lines = [build.error_line() for build in self.recent_failures(count)]
        if not lines:
            return "No build errors recorded."
        header = [
            f"Build Errors: {len(lines)} entries",
            f"Time range: {lines[-1][:19]} to {lines[0][:19]}",
            "",
            "Recent errors:",
            "-" * 60,
        ]
        return "\n".join(header + lines)


class Build(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        STARTED = "started"
        DONE = "done"
        FAILED = "failed"

    # sha256 over the normalised effective request; what clients poll with.
    request_hash = models.CharField(max_length=64, unique=True)
    request = models.JSONField(default=dict)  # the normalised request, echoed back to clients
    version = models.CharField(max_length=32)
    target = models.CharField(max_length=64)
    profile = models.CharField(max_length=128)  # resolved ImageBuilder profile id
    packages = models.JSONField(default=list)  # the effective PACKAGES list given to make
    package_changes_applied = models.JSONField(default=list, blank=True)
    client = models.CharField(max_length=200, blank=True)

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    imagebuilder_status = models.CharField(max_length=32, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    enqueued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # When the task was last handed to the broker; None until a send succeeded.
    sent_at = models.DateTimeField(null=True, blank=True)
    # A failure of the server, not of the request (worker killed or lost, server error):
    # not kept for ASU_FAILURE_TTL, asking again builds again.
    server_fault = models.BooleanField(default=False)

    # Results
    bin_dir = models.CharField(max_length=128, blank=True)  # the folder under the store
    result = models.JSONField(default=dict, blank=True)  # profiles.json top level + profile
    manifest = models.JSONField(default=dict, blank=True)  # {package: version}
    images = models.JSONField(default=list, blank=True)
    build_cmd = models.JSONField(default=list, blank=True)
    stdout = models.TextField(blank=True)
    stderr = models.TextField(blank=True)
    detail = models.TextField(blank=True)  # error text of a failed build

    objects = BuildQuerySet.as_manager()

    # What a failed build queued again starts from: no trace of the last attempt.
    QUEUED_AFRESH = {
        "status": Status.QUEUED,
        "imagebuilder_status": "",
        "started_at": None,
        "finished_at": None,
        "expires_at": None,
        "result": {},
        "manifest": {},
        "images": [],
        "build_cmd": [],
        "stdout": "",
        "stderr": "",
        "detail": "",
        "sent_at": None,
        "server_fault": False,
    }

    class Meta:
        indexes = [
            # Serves the queue position and the pending-jobs limit.
            models.Index(fields=["status", "enqueued_at"], name="build_status_enqueued"),
            # Serves the files shared by identical builds.
            models.Index(fields=["bin_dir"], name="build_bin_dir"),
            # Serves the image browser, newest first.
            models.Index(fields=["-enqueued_at"], name="build_enqueued_desc"),
        ]
        ordering = ["-enqueued_at"]

    def __str__(self) -> str:
        return f"{self.version} {self.target} {self.profile} ({self.status})"

    def error_line(self) -> str:
        """One line for the build-error log: UTC time, version:target:profile and the
        error on one line, cut to 200 characters, with request hashes masked (the log is
        public; a hash would lead to the request and its defaults script)."""
        moment = self.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        error = HEX_RUN.sub("<hash>", " ".join(self.detail.split()))[:200]
        return f"{moment} {self.version}:{self.target}:{self.profile} {error}"

    def is_unsent(self) -> bool:
        """Queued, but its task never reached the broker."""
        return self.status == Build.Status.QUEUED and self.sent_at is None

    def reported_step(self) -> str:
        """The step of a running build as the clients spell it (`Step.ALL`)."""
        return self.imagebuilder_status if self.imagebuilder_status in Step.ALL else Step.INIT
