"""Package indexes read from the downloads server, and the package-change rules."""

import re
from collections.abc import Iterator

from django.core.exceptions import ValidationError
from django.db import models

from asuproject.input import TARGET_RE
from targets.models import Branch, Target, Version


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

    def abi_names(self) -> dict[str, str]:
        """{"libubox20230523": "libubox"}: the ABI-suffixed names of these packages."""
        rows = self.exclude(abi_version="").values_list("name", "abi_version").distinct()
        return {name + abi: name for name, abi in rows}

    def of_arch_feeds(self, version: Version, arch_packages: str) -> "PackageQuerySet":
        """The architecture's feeds of a version: its {arch}-index.json."""
        return self.filter(
            index__version=version, index__target__isnull=True, index__arch_packages=arch_packages
        )


class Package(models.Model):
    index = models.ForeignKey(PackageIndex, on_delete=models.CASCADE, related_name="packages")
    name = models.CharField(max_length=200)  # ABI version stripped, as clients name it
    version = models.CharField(max_length=200)
    # The opkg index's ABIVersion: the package is also called name + abi_version
    # ("libubox20230523"), the name some clients and tools report.
    abi_version = models.CharField(max_length=64, blank=True)

    objects = PackageQuerySet.as_manager()

    class Meta:
        indexes = [
            # Serves name checks of a build request: index_id IN (...) AND name IN (...)
            models.Index(fields=["index", "name"], name="package_index_name"),
            models.Index(fields=["name"], name="package_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def without_abi_suffixes(names: list[str], abi_names: dict[str, str]) -> list[str]:
    """The names as the catalogue and STRIP_ABI manifests spell them: an ABI-suffixed
    name ("libubox20230523", also "-libubox20230523") becomes its plain name."""
    plain = []
    for name in names:
        sign = "-" if name.startswith("-") else ""
        bare = name.removeprefix("-")
        plain.append(sign + abi_names.get(bare, bare))
    return plain


# A package name as requests and indexes spell it, optionally with one "*" making a
# pattern ("luci-i18n-opkg-*"). No leading "-": that is the removal syntax of a request.
PACKAGE_PATTERN_RE = re.compile(r"^[A-Za-z0-9_.+][\w.+-]*\*?[\w.+-]*$|^\*[\w.+-]+$")
PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_.+][\w.+-]*$")
PROFILE_RE = re.compile(r"^[\w.-]+$")


class PackageChange(models.Model):
    """A rule maintainers edit: a package renamed, replaced, added or removed between releases.

    `apply_package_changes` (packages/changes.py) applies the enabled rules in scope to
    a build request's package list; `published_changes` hands the plain revision rules
    to clients in overview.json and branches.json as `source`/`target` pairs.
    """

    class Kind(models.TextChoices):
        RENAME = "rename", "rename or replace"
        ADD = "add", "add"
        REMOVE = "remove", "remove"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    # The package that goes away (rename, remove) and the one that comes in (rename,
    # add), as clients read them in `package_changes`. One "*" makes a pattern.
    source = models.CharField(
        max_length=200,
        blank=True,
        help_text="The package that goes away (rename, remove). One * makes a pattern: "
        "luci-i18n-opkg-*.",
    )
    target = models.CharField(
        max_length=200,
        blank=True,
        help_text="The package that comes in (rename, add). A renamed pattern needs one * "
        "too: luci-i18n-package-manager-*.",
    )
    mandatory = models.BooleanField(
        default=False, help_text="Clients must apply it: the old package is gone."
    )
    revision = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="In effect from this revision number (r28056 is 28056). A release counts "
        "as its branch's branch-off revision, a snapshot as its target's revision.",
    )
    branch = models.ForeignKey(
        Branch,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="package_changes",
        help_text="In effect in this branch: 24.10 covers 24.10.x and 24.10-SNAPSHOT.",
    )
    later_branches = models.BooleanField(
        default=False, help_text="Also in every branch newer than the one chosen."
    )
    targets = models.JSONField(
        default=list, blank=True, help_text="Only for these targets; empty: every target."
    )
    profiles = models.JSONField(
        default=list, blank=True, help_text="Only for these profiles; empty: every profile."
    )
    only_if = models.CharField(
        max_length=200, blank=True, help_text="Only when this package is in the list."
    )
    apply_on_build = models.BooleanField(
        default=True, help_text="The server applies it to build requests."
    )
    publish = models.BooleanField(
        default=False,
        help_text="Published to clients (owut, auc) in overview.json and branches.json. "
        "Needs a revision, and no pattern, target, profile or condition.",
    )
    order = models.IntegerField(
        default=100, help_text="Rules run from the lowest order up, then by id."
    )
    note = models.TextField(blank=True)
    link = models.URLField(
        max_length=500, blank=True, help_text="The upstream commit, or the discussion."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Moves with every save; with the row count it tells each process that its cached
    # rules are stale (packages/changes.py).
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]
        indexes = [
            # Serves the cache check of every build request: MAX(updated_at), COUNT(*).
            models.Index(fields=["updated_at"], name="packagechange_updated"),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.RENAME:
            what = f"{self.source} → {self.target}"
        elif self.kind == self.Kind.ADD:
            what = f"add {self.target}"
        else:
            what = f"remove {self.source}"
        return f"{what} ({self.scope_label()})"

    def clean(self) -> None:
        for field in ("source", "target", "only_if"):
            setattr(self, field, (getattr(self, field) or "").strip())
        errors: dict[str, list[str]] = {}
        for check in (
            self._check_names_for_kind,
            self._check_package_names,
            self._check_patterns,
            self._check_scope,
            self._check_publishable,
        ):
            for field, message in check():
                errors.setdefault(field, []).append(message)
        if errors:
            raise ValidationError(errors)

    # Each check yields (field, message) for what is wrong; `clean` gathers them all, so
    # the admin form shows every problem at once.

    def _check_names_for_kind(self) -> Iterator[tuple[str, str]]:
        """A rename names both packages, an addition only `target`, a removal only `source`."""
        if self.kind == self.Kind.RENAME:
            if not self.source:
                yield "source", "A rename needs the package that goes away."
            if not self.target:
                yield "target", "A rename needs the package that comes in."
            if self.source and self.source == self.target:
                yield "target", "Source and target are the same package."
        elif self.kind == self.Kind.ADD:
            if not self.target:
                yield "target", "Name the package to add here."
            if self.source:
                yield "source", "An addition has no source: put the package in target."
        elif self.kind == self.Kind.REMOVE:
            if not self.source:
                yield "source", "Name the package to remove here."
            if self.target:
                yield "target", "A removal has no target: put the package in source."

    def _check_package_names(self) -> Iterator[tuple[str, str]]:
        for field in ("source", "target"):
            value = getattr(self, field)
            if value and not PACKAGE_PATTERN_RE.fullmatch(value):
                yield (
                    field,
                    f"{value!r} is not a package name: letters, digits and . _ + - only, "
                    "not starting with -, with at most one * for a pattern.",
                )

    def _check_patterns(self) -> Iterator[tuple[str, str]]:
        if self.kind == self.Kind.ADD and "*" in self.target:
            yield "target", "A pattern cannot be added: name one package."
        if self.kind == self.Kind.RENAME and ("*" in self.source) != ("*" in self.target):
            yield "target", "A renamed pattern needs one * in both source and target."

    def _check_scope(self) -> Iterator[tuple[str, str]]:
        if self.only_if and not PACKAGE_NAME_RE.fullmatch(self.only_if):
            yield "only_if", f"{self.only_if!r} is not a package name."
        if not isinstance(self.targets, list) or not all(
            isinstance(t, str) and TARGET_RE.fullmatch(t) for t in self.targets
        ):
            yield "targets", "Targets are written like ath79/generic."
        if not isinstance(self.profiles, list) or not all(
            isinstance(p, str) and PROFILE_RE.fullmatch(p) for p in self.profiles
        ):
            yield "profiles", "Profiles are ImageBuilder profile names like tplink_archer-c7-v5."
        if self.later_branches and not self.branch_id:
            yield "later_branches", "Choose the branch the later ones follow."

    def _check_publishable(self) -> Iterator[tuple[str, str]]:
        """Clients (owut, auc) read only a plain revision rule: two names and a revision."""
        if not self.publish:
            return
        if self.revision is None:
            yield "publish", "Clients compare revisions: a published rule needs one."
        if "*" in self.source or "*" in self.target:
            yield "publish", "Clients cannot read patterns: do not publish this rule."
        if self.targets or self.profiles or self.only_if:
            yield (
                "publish",
                "Clients read no target, profile or condition: do not publish this rule.",
            )

    def scope_label(self) -> str:
        """Where the rule is in effect, in a few words: "25.12, kirkwood/generic, 5 profiles"."""
        parts = []
        if self.revision is not None:
            parts.append(f"from r{self.revision}")
        if self.branch_id:
            parts.append(f"{self.branch.name}{' and later' if self.later_branches else ''}")
        if self.targets:
            parts.append(
                ", ".join(self.targets)
                if len(self.targets) <= 2
                else f"{len(self.targets)} targets"
            )
        if self.profiles:
            parts.append(
                self.profiles[0] if len(self.profiles) == 1 else f"{len(self.profiles)} profiles"
            )
        if self.only_if:
            parts.append(f"if {self.only_if} is present")
        return ", ".join(parts) or "everywhere"

    def branches_in_scope(self) -> list[Branch]:
        """The enabled branches the rule can act in, newest first."""
        branches = list(Branch.objects.filter(enabled=True))
        if self.branch_id:
            return [
                b
                for b in branches
                if b.pk == self.branch_id or (self.later_branches and b.order > self.branch.order)
            ]
        if self.revision is not None:
            return [
                b
                for b in branches
                if b.snapshot or not b.branch_off_rev or b.branch_off_rev >= self.revision
            ]
        return branches

    def missing_from_indexes(self) -> list[str]:
        """Branches whose package indexes lack the package the rule brings in.

        Only branches whose indexes were read count: an empty catalogue proves nothing.
        A pattern counts as present when some package starts with its fixed part.
        """
        name = self.target if self.kind in (self.Kind.RENAME, self.Kind.ADD) else ""
        if not name:
            return []
        prefix, star, suffix = name.partition("*")
        missing = []
        for branch in self.branches_in_scope():
            packages = Package.objects.filter(index__version__branch=branch)
            if not packages.exists():
                continue
            if star:
                found = packages.filter(name__startswith=prefix, name__endswith=suffix).exists()
            else:
                found = packages.filter(name=name).exists()
            if not found:
                missing.append(branch.name)
        return missing
