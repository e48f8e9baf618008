"""Package indexes read from the downloads server, and the package-change rules."""

from django.db import models

from targets.models import Target, Version


class PackageIndex(models.Model):
    """One upstream index file: a feed of an architecture, a target's packages or its kmods."""

    class Kind(models.TextChoices):
        FEED = "feed", "architecture feed"
        TARGET = "target", "target packages"
        KMODS = "kmods", "kernel modules"

    version = models.ForeignKey(Version, on_delete=models.CASCADE, related_name="package_indexes")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    arch_packages = models.CharField(max_length=64)
    # Set for target and kmods indexes; feeds are shared by all targets of an architecture.
    target = models.ForeignKey(
        Target, on_delete=models.CASCADE, null=True, blank=True, related_name="package_indexes"
    )
    name = models.CharField(max_length=128)  # feed "base", "packages", or the kmods folder
    url = models.CharField(max_length=500, unique=True)
    digest = models.CharField(max_length=64, blank=True)
    etag = models.CharField(max_length=200, blank=True)
    last_modified = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "package indexes"
        indexes = [
            # Serves the architecture's feeds of a version: version_id = ? AND arch_packages = ?
            models.Index(fields=["version", "arch_packages"], name="pkgindex_version_arch"),
        ]

    def __str__(self) -> str:
        return f"{self.version.name} {self.kind} {self.arch_packages} {self.name}"


class PackageQuerySet(models.QuerySet):
    def for_target(self, target: Target) -> "PackageQuerySet":
        """All a build for `target` can install: its own packages and kmods, and the
        feeds of its architecture in its version."""
        return self.filter(
            models.Q(index__target=target)
            | models.Q(
                index__version_id=target.version_id,
                index__target__isnull=True,
                index__arch_packages=target.arch_packages,
            )
        )

    def of_target(self, target: Target) -> "PackageQuerySet":
        """The target's own packages and kmods: its index.json."""
        return self.filter(index__target=target)

    def of_arch_feeds(self, version: Version, arch_packages: str) -> "PackageQuerySet":
        """The architecture's feeds of a version: its {arch}-index.json."""
        return self.filter(
            index__version=version, index__target__isnull=True, index__arch_packages=arch_packages
        )


class Package(models.Model):
    index = models.ForeignKey(PackageIndex, on_delete=models.CASCADE, related_name="packages")
    name = models.CharField(max_length=200)  # ABI version stripped, as clients name it
    version = models.CharField(max_length=200)

    objects = PackageQuerySet.as_manager()

    class Meta:
        indexes = [
            # Serves name checks of a build request: index_id IN (...) AND name IN (...)
            models.Index(fields=["index", "name"], name="package_index_name"),
            models.Index(fields=["name"], name="package_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"
