"""What an upgrade would change on a router, worked out from the catalogue alone.

A router names its version, target, device and installed packages. For the newest
version of its own branch and of each newer enabled release branch (or only the version
it asks about), the answer is the package list a build would use once the package-change
rules ran, and how that differs from what is installed: versions that move, packages
added or removed and why, packages no longer offered anywhere (a build would fail).
Nothing is read from upstream: only the database, so the check is as quick as
validating a build request.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from builds.memory import memory, newest_versions
from builds.resolve import ALWAYS_AVAILABLE, target_abi_names
from packages.changes import apply_package_changes
from packages.models import Package, without_abi_suffixes
from packages.versions import compare_versions
from targets.models import Branch, Profile, Target, Version, version_sort_key
from targets.sync import branch_of


class UpgradeCheckRejected(Exception):
    """A request the catalogue cannot answer; the message says why, for the router owner."""


@dataclass
class Router:
    """What the router said about itself, with its names as the catalogue spells them."""

    version: str
    version_code: str
    target: str
    profile: str
    installed: dict[str, str]  # {name: version}, ABI suffixes as the router reported them
    branch: Branch
    current: Version | None  # the router's version, when the catalogue still has it
    current_target: Target | None = None  # its target there
    current_profile: Profile | None = None  # the device there
    # Packages that came with the router's own image (its defaults and device packages).
    current_base: set[str] = field(default_factory=set)


def upgrade_check(request: dict) -> dict:
    """The answer to a validated upgrade-check request (see `UpgradeCheckSerializer`)."""
    # Every version with its branch: a handful of rows, read once for all the steps.
    versions = list(Version.objects.select_related("branch"))
    router = find_router(request, versions)
    candidates = candidate_versions(router, versions, request.get("target_version") or "")
    upgrades = [check_version(router, version) for version in candidates]
    supported = [upgrade for upgrade in upgrades if upgrade["supported"]]
    return {
        "version": router.version,
        "version_code": router.version_code or None,
        "target": router.target,
        "profile": router.profile,
        # Nothing to compare with (the device is built nowhere) is not "up to date".
        "up_to_date": bool(supported) and all(upgrade["up_to_date"] for upgrade in supported),
        "upgrades": upgrades,
    }


def find_router(request: dict, versions: list[Version]) -> Router:
    """The router's branch, and its version's catalogue rows when they are still there
    (a router may run a point release the downloads server no longer lists)."""
    name = request["version"]
    current = next((version for version in versions if version.name == name), None)
    branch = current.branch if current is not None else branch_of(name, Branch.objects.all())
    if branch is None:
        raise UpgradeCheckRejected(
            f"Unsupported version: {name}. It belongs to no OpenWrt branch this server knows."
        )
    router = Router(
        version=name,
        version_code=request.get("version_code") or "",
        target=request["target"],
        profile=request["profile"],
        installed=dict(request["installed"]),
        branch=branch,
        current=current,
    )
    if current is not None:
        found = _profile_in(current, router.target, router.profile)
        if found is not None:
            router.current_target, router.current_profile = found.target, found
            router.current_base = base_packages(found.target, found)
    return router


def candidate_versions(
    router: Router, versions: list[Version], target_version: str
) -> list[Version]:
    """`target_version` alone, or the newest version of the router's branch (a snapshot
    for a snapshot, a release for a release) and the newest release of each newer
    enabled branch, oldest branch first."""
    if target_version:
        version = next((version for version in versions if version.name == target_version), None)
        if version is None or not version.branch.enabled:
            raise UpgradeCheckRejected(
                f"Unsupported version: {target_version}. It is not offered by this server."
            )
        return [version]
    newest: dict[int, Version] = {}
    router_snapshot = router.version.endswith("SNAPSHOT")
    for version in versions:
        if not version.branch.enabled or version.branch.order < router.branch.order:
            continue
        own_branch = version.branch_id == router.branch.pk
        if own_branch and version.is_snapshot != router_snapshot:
            continue
        if not own_branch and (version.branch.snapshot or version.is_snapshot):
            continue  # a release is never offered a newer branch's snapshot unasked
        best = newest.get(version.branch_id)
        if best is None or version_sort_key(version.name) > version_sort_key(best.name):
            newest[version.branch_id] = version
    return sorted(newest.values(), key=lambda version: version.branch.order)


def check_version(router: Router, version: Version) -> dict:
    """What building `version` for the router would change."""
    if router.current is not None and version.pk == router.current.pk:
        found = router.current_profile
    else:
        found = _profile_in(version, router.target, router.profile)
    if found is None:
        return _unsupported(router, version)
    target = found.target
    plan = UpgradePlan(router, version, target, found)
    plan.apply_rules()
    plan.look_up_versions()
    plan.add_base_packages()
    plan.compare_versions()
    return plan.answer()


def base_packages(target: Target, profile: Profile) -> set[str]:
    """What an image of the profile has without asking: defaults and device packages."""
    device = profile.device_packages or []
    base = set(target.default_packages or []) | {p for p in device if not p.startswith("-")}
    return base - {p[1:] for p in device if p.startswith("-")}


def _profile_in(version: Version, target_name: str, profile_name: str) -> Profile | None:
    """The profile of the version's target answering to the name (one query), or the
    target's only `generic` profile (x86/64 builds it whatever the board is called)."""
    profiles = Profile.objects.filter(target__version=version, target__name=target_name)
    found = profiles.select_related("target").answering_to(profile_name)
    if found is None:
        only = list(profiles.select_related("target")[:2])
        found = only[0] if len(only) == 1 and only[0].name == "generic" else None
    if found is not None:
        found.target.version = version
    return found


def _unsupported(router: Router, version: Version) -> dict:
    return {
        "version": version.name,
        "branch": version.branch.name,
        "supported": False,
        "detail": (
            f"{version.name} has no image for {router.profile} ({router.target}): the "
            "device or its target is not built there."
        ),
        "up_to_date": False,
    }


class UpgradePlan:
    """The package list of one candidate version, worked out step by step."""

    def __init__(self, router: Router, version: Version, target: Target, profile: Profile):
        self.router = router
        self.version = version
        self.target = target
        self.profile = profile
        names = list(router.installed)
        abi_names = target_abi_names(target, names)
        if router.current_target is not None:
            # Names of the router's own release (libubox20230523 in 23.05) map there.
            abi_names = {**target_abi_names(router.current_target, names), **abi_names}
        abi_names = {**_guessed_abi_names(target, names), **abi_names}
        # {plain name: installed version}, as the catalogue and the rules spell names.
        self.installed = {
            plain: router.installed[name]
            for name, plain in zip(names, without_abi_suffixes(names, abi_names), strict=True)
        }
        self.packages: list[str] = sorted(self.installed)
        self.rules: list[dict] = []
        self.added: dict[str, dict] = {}
        self.removed: dict[str, dict] = {}
        self.kept_out: list[str] = []
        self.changed: list[dict] = []
        self.available: dict[str, str] = {}

    def apply_rules(self) -> None:
        """The package-change rules of the candidate, as a build request would run them."""
        self.packages, self.rules = apply_package_changes(
            self.packages, self.version, self.target, self.profile
        )
        for rule in self.rules:
            source, new = rule.get("source"), rule.get("target")
            reason = {"reason": "rule", "rule": rule["id"], "note": rule.get("note") or ""}
            if source and source in self.installed and source not in self.packages:
                self.removed[source] = {
                    **reason,
                    "version": self.installed[source],
                    "replaced_by": new,
                }
            if new and new not in self.installed:
                self.added[new] = {**reason, "replaces": source}

    def look_up_versions(self) -> None:
        """The candidate's version of every package the image may get (one query)."""
        names = {p for p in self.packages if not p.startswith("-")} | set(self.added)
        names |= base_packages(self.target, self.profile)
        self.available = _catalogue_versions(self.target, names)

    def add_base_packages(self) -> None:
        """Defaults and device packages the router lacks come with the image, unless the
        router's owner removed them from its own image: those stay out ("-pkg"). A name
        no package has (`nftables`, provided by `nftables-json`) is left to its provider."""
        wanted = {p for p in self.packages if not p.startswith("-")}
        base = {
            name
            for name in base_packages(self.target, self.profile)
            if name in self.available or name in ALWAYS_AVAILABLE
        }
        self.kept_out = sorted((base & self.router.current_base) - wanted)
        defaults = set(self.target.default_packages or [])
        for name in sorted(base - wanted - set(self.kept_out)):
            self.added.setdefault(name, {"reason": "default" if name in defaults else "device"})

    def compare_versions(self) -> None:
        """The candidate's versions against the router's: what moves, up or down."""
        image = {p for p in self.packages if not p.startswith("-")} | set(self.added)
        for name in sorted(image):
            new = self.available.get(name)
            if name in self.added:
                self.added[name]["version"] = new
            old = self.installed.get(name)
            if old is None or new is None or old == new:
                continue
            direction = compare_versions(old, new)
            if direction:
                change = "upgrade" if direction < 0 else "downgrade"
                self.changed.append({"name": name, "from": old, "to": new, "change": change})

    def answer(self) -> dict:
        image = {p for p in self.packages if not p.startswith("-")} | set(self.added)
        # The ImageBuilder's own defaults and device packages are its to resolve.
        known = set(self.available) | ALWAYS_AVAILABLE | base_packages(self.target, self.profile)
        unavailable = sorted(image - known)
        packages = sorted(image) + [f"-{name}" for name in self.kept_out]
        version_changed = self.version.name != self.router.version
        revision = self.target.version_code or None
        revision_changed = bool(
            self.router.version_code and revision and revision != self.router.version_code
        )
        up_to_date = not (
            version_changed
            or revision_changed
            or self.changed
            or self.added
            or self.removed
            or unavailable
        )
        return {
            "version": self.version.name,
            "branch": self.version.branch.name,
            "supported": True,
            "version_code": revision,
            "version_changed": version_changed,
            "revision_changed": revision_changed,
            "profile": self.profile.name,
            "up_to_date": up_to_date,
            "buildable": not unavailable,
            "packages": packages,
            "package_changes_applied": self.rules,
            "changed": self.changed,
            "added": [{"name": name, **entry} for name, entry in sorted(self.added.items())],
            "removed": [{"name": name, **entry} for name, entry in sorted(self.removed.items())],
            "unavailable": unavailable,
            "detail": _detail(unavailable),
            "build_request": {
                "version": self.version.name,
                "target": self.target.name,
                "profile": self.profile.name,
                "packages": packages,
                "diff_packages": False,
            },
        }


def _detail(unavailable: list[str]) -> str:
    if not unavailable:
        return ""
    return (
        f"A build would fail: {', '.join(unavailable)} "
        f"{'is' if len(unavailable) == 1 else 'are'} not offered for this target and version "
        "and no package-change rule replaces them. Remove them before upgrading."
    )


def _guessed_abi_names(target: Target, names: list[str]) -> dict[str, str]:
    """{"libubox20240329": "libubox"} for names the target lacks whose name without a
    trailing number it has: indexes read from index.json v2 (24.10) carry no ABI
    versions, yet `opkg list-installed` shows the suffixed names."""
    known = memory.target_names(target)
    if known is None:
        return {}
    guessed = {}
    for name in names:
        if name[-1:].isdigit() and name not in known.installable:
            plain = name.rstrip("0123456789")
            if plain in known.installable:
                guessed[name] = plain
    return guessed


def _catalogue_versions(target: Target, names: Iterable[str]) -> dict[str, str]:
    """{name: newest version} of the named packages the target can install: from this
    process's copy of the target's packages, or one query."""
    known = memory.target_names(target)
    if known is not None:
        return {name: known.versions[name] for name in names if name in known.versions}
    rows = Package.objects.for_target(target).filter(name__in=list(names))
    return newest_versions(rows.values_list("name", "version"))


# What a person pastes on the /upgrade/ page

# `apk list --installed`: "busybox-1.37.0-r5 aarch64_cortex-a53 {busybox} (GPL-2.0) [installed]"
APK_LIST_LINE = re.compile(r"(?P<name>\S+?)-(?P<version>\d[^\s-]*(?:-r\d+)?)(?:\s|$)")


def parse_board(text: str) -> dict[str, str]:
    """The fields of `ubus call system board` an upgrade check needs."""
    try:
        board = json.loads(text)
    except ValueError:
        raise UpgradeCheckRejected(
            "The board information is not JSON: paste the whole output of `ubus call system board`."
        ) from None
    release = board.get("release") if isinstance(board, dict) else None
    if not isinstance(release, dict):
        raise UpgradeCheckRejected(
            "The board information has no release: paste the output of `ubus call system board`."
        )
    fields = {
        "version": release.get("version"),
        "version_code": release.get("revision") or "",
        "target": release.get("target"),
        "profile": board.get("board_name"),
    }
    missing = [name for name in ("version", "target", "profile") if not fields[name]]
    if missing:
        raise UpgradeCheckRejected(f"The board information lacks {', '.join(missing)}.")
    return {name: str(value) for name, value in fields.items()}


def parse_installed(text: str) -> dict[str, str]:
    """{name: version} from `opkg list-installed` ("name - version"), `apk list
    --installed` ("name-version arch {origin} (license) [installed]") or a manifest
    ("name version")."""
    installed: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "WARNING")):
            continue
        if " - " in line:
            name, _, rest = line.partition(" - ")
            installed[name.strip()] = rest.split(" - ")[0].strip()
        elif "[installed]" in line or "{" in line:
            match = APK_LIST_LINE.match(line)
            if match is None:
                raise UpgradeCheckRejected(f"Cannot read this line of the installed list: {line}")
            installed[match["name"]] = match["version"]
        else:
            name, _, version = line.partition(" ")
            installed[name] = version.strip()
    if not installed:
        raise UpgradeCheckRejected("The installed list is empty.")
    return installed
