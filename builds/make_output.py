"""What `make` prints, as data: `make info`, the package manifest, opkg's and apk's
package errors, and the profiles.json `make image` writes. The formats are described
in openwrt-formats.md."""

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from builds.errors import BuildError

OUTPUT_LIMIT = 64 * 1024  # characters of stdout and stderr kept with a build


def bounded(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """The end of `text`, where errors are, at most `limit` characters."""
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} earlier characters left out]\n" + text[-limit:]


@dataclass
class ImageBuilderInfo:
    """What `make info` says."""

    revision: str = ""  # "r28427-6df0e3d02a"; "" on ImageBuilders that do not print it
    default_packages: list[str] = field(default_factory=list)
    profile_packages: dict[str, list[str]] = field(default_factory=dict)  # may hold -pkg


def parse_make_info(stdout: str) -> ImageBuilderInfo:
    """Parse `make info`: revision, default packages, and each profile's packages."""
    info = ImageBuilderInfo()
    if match := re.search(r'^Current Revision: "(r[^"]+)"', stdout, re.MULTILINE):
        info.revision = match.group(1)
    if match := re.search(r"^Default Packages:(.*)$", stdout, re.MULTILINE):
        info.default_packages = match.group(1).split()
    _, _, profiles = stdout.partition("Available Profiles:")
    profile = None
    for line in profiles.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            profile = line.strip().removesuffix(":") if line.rstrip().endswith(":") else None
            if profile:
                info.profile_packages[profile] = []
            continue
        if profile is None:
            continue
        key, sep, value = line.strip().partition(":")
        if sep and key == "Packages":
            info.profile_packages[profile] = value.split()
    return info


def parse_manifest(text: str) -> dict[str, str]:
    """Parse a package manifest into {name: version}.

    opkg and newer apk print `name - version`, older apk `name version`; lines that are
    neither (stray log lines) are skipped.
    """
    separated = " - " in text
    manifest: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if separated:
            name, sep, version = line.partition(" - ")
        else:
            name, sep, version = line.partition(" ")
        if sep and name and version and " " not in name and " " not in version.strip():
            manifest[name] = version.strip()
    return manifest


@dataclass
class PackageErrors:
    missing: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.conflicts)

    @property
    def detail(self) -> str:
        """The contract's text: `Impossible package selection: missing (a, b) conflicts (c, d)`."""
        text = "Impossible package selection"
        parts = []
        if self.missing:
            parts.append(f"missing ({', '.join(self.missing)})")
        if self.conflicts:
            parts.append(f"conflicts ({', '.join(self.conflicts)})")
        return f"{text}: {' '.join(parts)}" if parts else text


def parse_package_errors(stderr: str) -> PackageErrors:
    """Find missing and conflicting packages in opkg's or apk's error output
    (openwrt-formats.md §1.5)."""
    missing = set(re.findall(r"Cannot install package ([^ \n]+)\.", stderr))  # opkg
    missing |= set(re.findall(r"^ +([^ \n]+) \(no such package\):", stderr, re.MULTILINE))  # apk
    conflicts: set[str] = set()
    # apk groups a conflict under the package: "  A:\n    conflicts: B[...]"
    for name, other in re.findall(r"^ +([^ :\n]+):\n +conflicts: ([^\[\s]+)", stderr, re.MULTILINE):
        conflicts.update((name, other))
    conflicts.update(re.findall(r"ERROR: ([^ :\n]+): trying to overwrite", stderr))
    conflicts.update(re.findall(r"trying to overwrite \S+ owned by ([^ .\n]+)", stderr))
    # opkg: conflicts_for lists, file clashes between two packages
    conflicts.update(re.findall(r"The following packages conflict with ([^ :\n]+):", stderr))
    conflicts.update(re.findall(r"\* check_conflicts_for:\s+([^ \n]+) \*$", stderr, re.MULTILINE))
    conflicts.update(re.findall(r"check_data_file_clashes: Package ([^ \n]+) wants", stderr))
    conflicts.update(
        re.findall(r"already provided by package\s+\* ([^ \n]+)$", stderr, re.MULTILINE)
    )
    # opkg says "Cannot install package" for conflicting packages too.
    missing -= conflicts
    return PackageErrors(missing=sorted(missing), conflicts=sorted(conflicts))


def check_packages_versions(manifest: dict[str, str], packages_versions: dict[str, str]) -> str:
    """Compare the versions a client expects with the manifest; "" when they agree."""
    missing = sorted(name for name in packages_versions if name not in manifest)
    if missing:
        return PackageErrors(missing=missing).detail
    differing = [
        f"{name} {manifest[name]} (requested {version})"
        for name, version in sorted(packages_versions.items())
        if version and manifest[name] != version
    ]
    if differing:
        return "Impossible package selection: other versions available: " + ", ".join(differing)
    return ""


def diff_packages(packages: list[str], default_packages: set[str]) -> list[str]:
    """The PACKAGES list of an absolute package list: every default package the list
    lacks becomes `-pkg` so the ImageBuilder leaves it out; explicit `-pkg` entries stay."""
    wanted = [p for p in packages if not p.startswith("-")]
    removed = {p[1:] for p in packages if p.startswith("-")}
    removed |= default_packages - set(wanted)
    removed = {p for p in removed if p and not p.startswith("-")}
    return sorted(f"-{p}" for p in removed) + wanted


def packages_hash(manifest: dict[str, str]) -> str:
    """A short hash of the installed packages, for EXTRA_IMAGE_NAME."""
    return hashlib.sha256(" ".join(sorted(manifest)).encode()).hexdigest()[:12]


def image_too_big(stderr: str) -> bool:
    return "is too big" in stderr or "out of space?" in stderr


def read_profiles_json(bin_dir: Path, profile: str) -> dict:
    """The profiles.json `make image` wrote; BuildError if it or the profile is missing."""
    path = bin_dir / "profiles.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError(
            "The ImageBuilder made no images (no profiles.json); the log below shows why"
        ) from None
    except ValueError as exc:
        raise BuildError(f"The ImageBuilder wrote an unreadable profiles.json: {exc}") from None
    if profile not in (data.get("profiles") or {}):
        raise BuildError(f"The ImageBuilder made no images for profile {profile}")
    return data


def merge_profile(profiles_json: dict, profile: str) -> dict:
    """profiles.json's top level merged with the profile's entry, as clients read it."""
    top = {key: value for key, value in profiles_json.items() if key != "profiles"}
    return {**top, **profiles_json["profiles"][profile], "id": profile}
