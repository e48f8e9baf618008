"""The upstream catalogue: what the OpenWrt downloads server offers.

Rows are written from the downloads server by the steps of `targets.sync`, which
`packages.sync` runs with the package indexes, and read by the JSON
documents and by build validation. Maintainers only switch branches on and off.
"""

import re
from collections.abc import Iterable

from django.db import models
from django.db.models import Q


def version_sort_key(name: str) -> tuple:
    """Sort key, newest first when sorted in reverse: releases by number, a final
    release after its release candidates, the branch snapshot last."""
    number, _, suffix = name.partition("-")
    numbers = tuple(int(part) if part.isdigit() else 0 for part in number.split("."))
    if name.endswith("SNAPSHOT"):
        # Among snapshots (sorted only for steady output), the main one first.
        return (0, numbers if suffix else (999999,))
    if not suffix:
        return (1, numbers, 1, ())
    pieces = tuple(
        (0, int(piece), "") if piece.isdigit() else (1, 0, piece)
        for piece in re.findall(r"\d+|[^\d]+", suffix)
    )
    return (1, numbers, 0, pieces)


def newest_first(names: Iterable[str]) -> list[str]:
    return sorted(names, key=version_sort_key, reverse=True)


class Branch(models.Model):
    name = models.CharField(max_length=32, unique=True)  # "24.10", "SNAPSHOT"
    # Folder on the downloads server with the version filled in: "releases/{version}".
    path = models.CharField(max_length=100)
    snapshot = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    branch_off_rev = models.PositiveIntegerField(null=True, blank=True)
    # Newest branches first in every listing.
    order = models.IntegerField(default=0, help_text="Higher sorts first.")

    class Meta:
        ordering = ["-order", "-name"]
        verbose_name_plural = "branches"

    def __str__(self) -> str:
        return self.name


class Version(models.Model):
    branch = models.ForeignKey(Branch, on_delete=models.CASCADE, related_name="versions")
    name = models.CharField(max_length=32, unique=True)  # "24.10.1", "24.10-SNAPSHOT"
    # Upstream .targets.json: {"ath79/generic": "mips_24kc", ...}, kept as last read.
    targets_digest = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["branch", "-name"]

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> str:
        """The version's folder on the downloads server: "releases/24.10.1"."""
        return self.branch.path.format(version=self.name)

    @property
    def is_snapshot(self) -> bool:
        return self.name.endswith("SNAPSHOT")


class Target(models.Model):
    """One target of one version, as its profiles.json describes it."""

    version = models.ForeignKey(Version, on_delete=models.CASCADE, related_name="targets")
    name = models.CharField(max_length=64)  # "ath79/generic"
    arch_packages = models.CharField(max_length=64)  # "mips_24kc"
    version_code = models.CharField(max_length=64, blank=True)  # revision "r28427-6df0e3d02a"
    version_number = models.CharField(max_length=32, blank=True)
    source_date_epoch = models.BigIntegerField(null=True, blank=True)
    metadata_version = models.IntegerField(null=True, blank=True)
    default_packages = models.JSONField(default=list, blank=True)
    linux_kernel = models.JSONField(default=dict, blank=True)  # version, release, vermagic
    # Every other top-level key of profiles.json (imagebuilder, sdk, git_commit, ...).
    extra = models.JSONField(default=dict, blank=True)
    # Digest of the last profiles.json read, so an unchanged file costs no writes.
    profiles_digest = models.CharField(max_length=64, blank=True)
    # HTTP validators of the last profiles.json read, for a conditional GET.
    profiles_etag = models.CharField(max_length=200, blank=True)
    profiles_last_modified = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Serves every lookup of a request's target.
            models.UniqueConstraint(fields=["version", "name"], name="target_unique_per_version"),
        ]
        ordering = ["version", "name"]

    def __str__(self) -> str:
        return f"{self.version.name} {self.name}"

    @property
    def kmods_dir(self) -> str:
        """The kmods folder name: LINUX_VERSION-LINUX_RELEASE-LINUX_VERMAGIC, or ""."""
        kernel = self.linux_kernel or {}
        if not all(kernel.get(key) for key in ("version", "release", "vermagic")):
            return ""
        return f"{kernel['version']}-{kernel['release']}-{kernel['vermagic']}"


def device_title(titles: list | None) -> str:
    """A profile's titles as people say them: "TP-Link Archer C7 v5 / Archer C7 v4"."""
    names = []
    for title in titles or []:
        if not isinstance(title, dict):
            continue
        if title.get("title"):
            names.append(str(title["title"]))
        else:
            parts = (title.get(key) for key in ("vendor", "model", "variant"))
            names.append(" ".join(str(part) for part in parts if part))
    return " / ".join(name for name in names if name)


def image_defaults(default_packages: list | None, device_packages: list | None) -> list[str]:
    """The packages a profile's image has unless asked otherwise, sorted: the target's
    defaults and the profile's device packages, less the device's `-pkg` removals."""
    device = device_packages or []
    base = set(default_packages or []) | {p for p in device if not p.startswith("-")}
    return sorted(base - {p[1:] for p in device if p.startswith("-")})


def profile_name_key(name: str) -> str:
    """A profile id or board name as `ProfileName` stores it: "tplink,archer-c7-v5" and
    "tplink_archer-c7-v5" are the same device."""
    return name.replace(",", "_")


class ProfileQuerySet(models.QuerySet):
    def answering_to(self, name: str) -> "Profile | None":
        """The profile of these whose id is `name` or whose supported devices include it
        (one indexed query through `ProfileName`); the exact id wins over a device alias."""
        key = profile_name_key(name)
        candidates = list(self.filter(names__name=key).order_by("name")[:8])
        return min(candidates, key=lambda profile: profile.name != key, default=None)

    def titled(self, search: str) -> "ProfileQuerySet":
        """Profiles whose device title or id holds every word of `search`, in any case.
        On PostgreSQL trigram indexes on both serve each word (migration 0004)."""
        profiles = self
        for word in search.split():
            profiles = profiles.filter(Q(title__icontains=word) | Q(name__icontains=word))
        return profiles


class Profile(models.Model):
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="profiles")
    name = models.CharField(max_length=128)  # "tplink_archer-c7-v5"
    titles = models.JSONField(default=list, blank=True)
    # `device_title(titles)`, kept for the device search.
    title = models.CharField(max_length=255, blank=True)
    device_packages = models.JSONField(default=list, blank=True)
    supported_devices = models.JSONField(default=list, blank=True)
    image_prefix = models.CharField(max_length=255, blank=True)
    images = models.JSONField(default=list, blank=True)
    # Every other key of the profile's entry (file_size_limits, ...).
    extra = models.JSONField(default=dict, blank=True)

    objects = ProfileQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["target", "name"], name="profile_unique_per_target"),
        ]
        ordering = ["target", "name"]

    def __str__(self) -> str:
        return f"{self.target} {self.name}"

    def save(self, *args, **kwargs) -> None:
        # The sync writes in bulk and sets the title itself; this covers single rows.
        self.title = device_title(self.titles)[:255]
        super().save(*args, **kwargs)

    def as_profiles_json(self) -> dict:
        """The profile's entry as profiles.json has it."""
        return {
            "device_packages": self.device_packages,
            "image_prefix": self.image_prefix,
            "images": self.images,
            "supported_devices": self.supported_devices,
            "titles": self.titles,
            **self.extra,
        }


class ProfileName(models.Model):
    """A name a request may use for a profile: its id and each supported device.

    Stored with "," replaced by "_", as requests are normalised, so that a board
    name from `ubus call system board` resolves with one indexed query.
    """

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="profile_names")
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="names")
    name = models.CharField(max_length=128)

    class Meta:
        indexes = [
            # Serves profile resolution: WHERE target_id = ? AND name = ?
            models.Index(fields=["target", "name"], name="profilename_target_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} -> {self.profile.name}"


class Generation(models.Model):
    """A value that moves on with every committed write of one scope, on every host: the
    web processes compare it to know whether what they kept is still true
    (`targets.generation`). Database triggers move it, in the writing transaction, so no
    write path can forget it: bulk writes, `QuerySet.update()`, the admin, a shell."""

    CATALOGUE = 1  # branches, versions, targets, profiles, profile names, package changes
    BUILDS = 2  # a finished build deleted or made unfinished (queued again)

    id = models.PositiveSmallIntegerField(primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"generation {self.id}: {self.value}"
