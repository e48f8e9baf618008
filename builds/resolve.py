"""From a validated build request to the effective build it asks for.

The version, target and profile are looked up in the catalogue (a missing piece is read
from upstream once), the package-change rules are applied, the PACKAGES list for
`make image` is computed and the package names are checked against the target's indexes.
Identical effective requests, however they are spelled, hash alike and share one build;
identical effective builds share one store folder (`bin_dir`).
"""

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q

from builds.errors import BuildRejected
from builds.memory import memory
from builds.repositories import repository_allowed
from packages.changes import apply_package_changes
from packages.models import Package, PackageIndex, without_abi_suffixes
from packages.sync import refresh_target
from targets.models import Branch, Profile, Target, Version, image_defaults
from targets.sync import (
    read_targets_json,
    read_versions_list,
    refresh_version,
    snapshot_version_name,
)
from targets.upstream import fetch, upstream_url

log = logging.getLogger(__name__)

KNOWN_DISTROS = {"openwrt"}
# Installed by every ImageBuilder from its own folder, absent from some feed indexes.
ALWAYS_AVAILABLE = frozenset({"kernel", "libc", "libgcc", "libgcc1"})
# Upstream's lists of versions and targets are read at most once per this many seconds
# for the whole server, and a listed piece once per name, so that requests for names
# the catalogue lacks cannot hammer the downloads server (see `_refresh`).
REFRESH_THROTTLE_SECONDS = 60


@dataclass
class EffectiveRequest:
    """What a request asks the ImageBuilder for, after the catalogue and the rules."""

    spec: dict  # every input of the build; its digest is the request hash
    echo: dict  # the request as clients see it echoed back
    packages: list[str]  # the PACKAGES list given to make
    rules: list[dict]  # the package-change rules that fired

    @property
    def request_hash(self) -> str:
        return digest(self.spec)

    @property
    def bin_dir(self) -> str:
        # The files do not depend on what the manifest is checked against.
        return digest({k: v for k, v in self.spec.items() if k != "packages_versions"})

    def build_fields(self) -> dict:
        """The columns of a new `Build` for this request."""
        return {
            "request": self.echo,
            "version": self.echo["version"],
            "target": self.echo["target"],
            "profile": self.echo["profile"],
            "packages": self.packages,
            "package_changes_applied": self.rules,
            "client": self.echo["client"] or "",
            "bin_dir": self.bin_dir,
        }


def check_server_allows(data: dict) -> None:
    """Refuse what this server's settings do not offer, before any catalogue lookup."""
    if data["distro"] not in KNOWN_DISTROS:
        raise BuildRejected(f"Unsupported distro: {data['distro']}. Only openwrt is known.")
    if data["defaults"] and not settings.ASU_ALLOW_DEFAULTS:
        raise BuildRejected("Handling `defaults` not enabled on server")
    for url in data["repositories"].values():
        if not repository_allowed(url, settings.ASU_REPOSITORY_ALLOW_LIST):
            raise BuildRejected(f"Repository not allowed: {url}")


def effective_request(data: dict, profile: Profile, user_agent: str = "") -> EffectiveRequest:
    """The effective build of a validated request for the resolved `profile`."""
    target = profile.target
    version = target.version
    # packages_versions, when given, names the packages and pins what the manifest must show.
    requested = normalise_packages(list(data["packages_versions"]) or data["packages"])
    abi_names = target_abi_names(target, [*requested, *data["packages_versions"]])
    plain = without_abi_suffixes(requested, abi_names)
    changed, rules = apply_package_changes(plain, version, target, profile)
    changed = normalise_packages(changed)
    packages = effective_packages(changed, target, profile, data["diff_packages"])
    if not data["repositories"]:
        # Extra feeds may bring names the catalogue has never seen: let the ImageBuilder judge.
        check_package_names(changed, target, profile)
    pinned = {
        abi_names.get(name, name): v
        for name, v in ((pkg.removeprefix("+"), v) for pkg, v in data["packages_versions"].items())
    }
    spec = {
        "distro": data["distro"],
        "version": version.name,
        "revision": target.version_code,
        "version_code": data["version_code"],
        "target": target.name,
        "profile": profile.name,
        "packages": packages,
        "packages_versions": pinned,
        "defaults": data["defaults"],
        "rootfs_size_mb": data["rootfs_size_mb"],
        "filesystem": data["filesystem"],
        "repositories": data["repositories"],
        "repositories_mode": data["repositories_mode"],
        "repository_keys": sorted(data["repository_keys"]),
    }
    echo = {
        **data,
        "version": version.name,
        "target": target.name,
        "profile": profile.name,
        "packages": sorted(set(requested)),
        "packages_versions": pinned,
        "client": data["client"] or client_from_user_agent(user_agent) or None,
    }
    return EffectiveRequest(spec, echo, packages, rules)


def resolve_profile(version: str, target: str, profile: str) -> tuple[Profile, bool]:
    """The catalogue's profile for a request, with its target, version and branch loaded,
    and whether it was found by one of its names (not as a target's only `generic`).

    `profile` may be a board name (`tplink,archer-c7-v5`); a target whose only profile
    is `generic` builds that. A missing version or target is refreshed from upstream
    once before the request is refused.
    """
    refreshed: set[str] = set()
    while True:
        found = _lookup_profile(version, target, profile)
        if found is not None:
            _check_branch(found.target.version)
            return found, True

        version_row = Version.objects.select_related("branch").filter(name=version).first()
        if version_row is None:
            if "version" not in refreshed:
                refreshed.add("version")
                _refresh("version", version)
                continue
            raise BuildRejected(f"Unsupported version: {version}")
        _check_branch(version_row)

        target_row = Target.objects.filter(version=version_row, name=target).first()
        if target_row is not None:
            target_row.version = version_row
            # x86/64 and friends build `generic` whatever the board is called.
            generic = _only_generic_profile(target_row)
            if generic is not None:
                return generic, False
        if "target" not in refreshed:
            # A new target, or new profiles in a known one (snapshots add devices).
            refreshed.add("target")
            if _refresh("target", version_row, target):
                continue
        raise _unknown(version, target, profile, target_row is None)


def _unknown(version: str, target: str, profile: str, target_missing: bool) -> BuildRejected:
    if target_missing:
        return BuildRejected(
            f"Unsupported target: {target}. It is not built for {version}: it may have "
            "been dropped, or its files are not yet published. Check the version's "
            "targets on the downloads server, or try again later."
        )
    return BuildRejected(
        f"Unsupported profile: {profile}. {target} in {version} has no device of that "
        "name: it may have been renamed or dropped. Use the profile name or board name "
        "listed in the target's profiles.json."
    )


def _lookup_profile(version: str, target: str, profile: str) -> Profile | None:
    """The hot path: one query from names to profile, target, version and branch."""
    return (
        Profile.objects.filter(target__version__name=version, target__name=target)
        .select_related("target__version__branch")
        .answering_to(profile)
    )


def _only_generic_profile(target: Target) -> Profile | None:
    profiles = list(target.profiles.all()[:2])
    if len(profiles) == 1 and profiles[0].name == "generic":
        profiles[0].target = target
        return profiles[0]
    return None


def _check_branch(version: Version) -> None:
    if not version.branch.enabled:
        raise BuildRejected(
            f"Unsupported branch: {version.name}. Builds for the {version.branch.name} "
            "branch are switched off on this server."
        )


def _refresh(kind: str, *args: object) -> bool:
    """Read one missing piece of the catalogue from upstream; True if it was attempted.

    Names cost a client nothing, so an unknown name must not cost an upstream read of its
    own. A version or target is read only if upstream lists it, and those lists are read
    at most once per REFRESH_THROTTLE_SECONDS for the whole server (through the cache): a
    real new release or target is found at most that much later, however many bogus
    names arrive meanwhile. New profiles of a known target cannot be listed without
    reading the target, so all of them share one such read per interval.
    """
    if kind == "version":
        (name,) = args
        listed = name in _upstream_versions()
        key = f"asu:refresh:version:{name}"
    else:
        version, name = args
        if Target.objects.filter(version=version, name=name).exists():
            listed, key = True, "asu:refresh:profiles"
        else:
            listed = name in _upstream_targets(version)
            key = f"asu:refresh:target:{version}:{name}"
    # Per listed name as well: a listed piece upstream fails to serve is not read again
    # and again.
    if not listed or not cache.add(key, True, timeout=REFRESH_THROTTLE_SECONDS):
        return False
    try:
        if kind == "version":
            refresh_version(*args)
        else:
            refresh_target(*args)
    except Exception:
        # Upstream down or the file broken: the request is refused with the catalogue's
        # words, and the sync task keeps the last good data.
        log.warning("could not refresh %s %s from upstream", kind, args, exc_info=True)
    return True


def _upstream_versions() -> set[str]:
    """The versions upstream offers: its release list, and each enabled branch's snapshot."""
    snapshots = {snapshot_version_name(b) for b in Branch.objects.filter(enabled=True)}
    return snapshots | _upstream_list("asu:upstream:versions", read_versions_list)


def _upstream_targets(version: Version) -> set[str]:
    """The targets upstream offers for `version` (its .targets.json)."""

    def read() -> list[str]:
        return list(read_targets_json(fetch(upstream_url(f"{version.path}/.targets.json"))))

    return _upstream_list(f"asu:upstream:targets:{version}", read)


def _upstream_list(key: str, read: Callable[[], list[str]]) -> set[str]:
    """`read()`, called at most once per REFRESH_THROTTLE_SECONDS for the whole server and
    kept in the cache; empty while another process reads it or when upstream failed."""
    names = cache.get(key)
    if names is None and cache.add(f"{key}:reading", True, timeout=REFRESH_THROTTLE_SECONDS):
        try:
            names = read()
        except Exception:
            log.warning("could not read %s from upstream", key, exc_info=True)
            names = []
        cache.set(key, names, timeout=REFRESH_THROTTLE_SECONDS)
    return set(names or ())


def effective_packages(
    requested: list[str], target: Target, profile: Profile, diff_packages: bool
) -> list[str]:
    """The PACKAGES list given to `make image`, in one canonical order.

    With `diff_packages` the request lists every package the image should have: default
    and device packages it leaves out are removed with `-pkg`. Order does not change what
    the ImageBuilder installs, so both parts are sorted, and the same selection spelled
    in another order gives the same list.
    """
    requested_sorted = sorted(set(requested))
    if not diff_packages:
        return requested_sorted
    base = set(image_defaults(target.default_packages, profile.device_packages))
    wanted = {p for p in requested if not p.startswith("-")}
    removals = sorted("-" + p for p in base - wanted)
    return removals + [p for p in requested_sorted if p not in removals]


def check_package_names(packages: list[str], target: Target, profile: Profile) -> None:
    """Refuse names that none of the target's indexes has: a set difference against
    this process's copy of the names the target can install, or one query for a
    catalogue the sync did not write."""
    known = set(target.default_packages or []) | {
        p.lstrip("-") for p in profile.device_packages or []
    }
    names = {p for p in packages if not p.startswith("-")} - known - ALWAYS_AVAILABLE
    if not names:
        return
    known_names = memory.target_names(target)
    if known_names is not None:
        found = names & known_names.installable
    else:
        found = set(
            Package.objects.for_target(target)
            .filter(name__in=names)
            .values_list("name", flat=True)
            .distinct()
        )
    missing = sorted(names - found)
    if not missing:
        return
    if not found and not _has_indexes(target):
        # The indexes of this target were never read: the ImageBuilder will tell.
        log.warning("no package index for %s, skipping the package pre-check", target)
        return
    raise BuildRejected(
        f"Impossible package selection: missing ({', '.join(missing)})",
        unknown_packages=missing,
    )


def target_abi_names(target: Target, names: list[str]) -> dict[str, str]:
    """{"libubox20230523": "libubox"} for the packages of `target`'s indexes that carry
    an ABI version (opkg releases): clients may name them either way."""
    known_names = memory.target_names(target)
    if known_names is not None:
        return known_names.abi_names
    if not any(name[-1:].isdigit() for name in names):
        return {}  # an ABI version ends in a digit: none of these names can carry one
    return Package.objects.for_target(target).abi_names()


def _has_indexes(target: Target) -> bool:
    return PackageIndex.objects.filter(
        Q(target=target)
        | Q(version_id=target.version_id, target__isnull=True, arch_packages=target.arch_packages)
    ).exists()


def client_from_user_agent(user_agent: str) -> str:
    """auc names itself only in its User-Agent: "auc (0.3.2-1)" becomes "auc/0.3.2-1"."""
    if user_agent.startswith("auc"):
        return user_agent.replace(" (", "/").replace(")", "")[:200]
    return ""


def normalise_packages(packages: list[str]) -> list[str]:
    """Strip a leading "+", drop empty names and repeats, keep the order given."""
    seen: dict[str, None] = {}
    for name in packages:
        name = name.strip().removeprefix("+")
        if name:
            seen.setdefault(name, None)
    return list(seen)


def digest(data: dict) -> str:
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
