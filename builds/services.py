"""From a validated build request to a `Build` row and one queued task.

`request_build()` normalises the request, resolves version, target and profile in the
catalogue (refreshing a missing piece from upstream once), applies the package-change
rules, computes the effective PACKAGES list, checks the package names in one query, and
finds or creates the `Build` keyed by the hash of the effective request. Identical
effective requests, however they are spelled, share one row; identical effective builds
share one store folder (`bin_dir`).
"""

import functools
import hashlib
import json
import logging
import threading
import uuid
from datetime import timedelta
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from builds.models import Build
from packages.changes import apply_package_changes
from packages.models import Package, PackageChange, PackageIndex
from targets.models import Branch, Profile, ProfileName, Target, Version

log = logging.getLogger(__name__)

KNOWN_DISTROS = {"openwrt"}
# Installed by every ImageBuilder from its own folder, absent from some feed indexes.
ALWAYS_AVAILABLE = frozenset({"kernel", "libc", "libgcc", "libgcc1"})
# A name that is not in the catalogue triggers at most one upstream refresh per this
# many seconds, so that bogus requests cannot hammer the downloads server.
REFRESH_THROTTLE_SECONDS = 60

STEPS = frozenset(
    {
        "init",
        "container_setup",
        "validate_revision",
        "validate_manifest",
        "calculate_packages_hash",
        "building_image",
        "signing_images",
        "done",
        "failed",
        "download_imagebuilder",
        "unpack_imagebuilder",
    }
)


class BuildRejected(Exception):
    """A request the server will not build. `status` is the HTTP code to answer with."""

    def __init__(
        self,
        detail: str,
        status: int = 400,
        title: str = "Bad Request",
        unknown_packages: list[str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.title = title
        self.unknown_packages = unknown_packages or []


def request_build(
    data: dict, user_agent: str = "", shortcut: str | None = None
) -> tuple[Build, bool]:
    """Find or create the build for a validated request (see `BuildRequestSerializer`).

    Return the `Build` and whether this call queued it (a new build, or a failed one
    tried again after its failure TTL). Raise `BuildRejected` for requests the catalogue
    or the server's settings refuse. `shortcut` is the request's `shortcut_key()`: the
    answer is remembered under it for `known_build()`.
    """
    if data["distro"] not in KNOWN_DISTROS:
        raise BuildRejected(f"Unsupported distro: {data['distro']}. Only openwrt is known.")
    if data["defaults"] and not settings.ASU_ALLOW_DEFAULTS:
        raise BuildRejected("Handling `defaults` not enabled on server")
    for url in data["repositories"].values():
        if not repository_allowed(url, settings.ASU_REPOSITORY_ALLOW_LIST):
            raise BuildRejected(f"Repository not allowed: {url}")

    profile, by_name = _resolve(data["version"], data["target"], data["profile"])
    target = profile.target
    version = target.version
    # Read before the rules are applied: a change after this misses the shortcut later.
    name = profile_name_key(data["profile"])
    state = _catalogue_state(profile, name) if shortcut and by_name else None

    # packages_versions, when given, names the packages and pins what the manifest must show.
    requested = _normalise_packages(list(data["packages_versions"]) or data["packages"])
    changed, rules = apply_package_changes(requested, version, target, profile)
    changed = _normalise_packages(changed)
    packages = effective_packages(changed, target, profile, data["diff_packages"])
    if not data["repositories"]:
        # Extra feeds may bring names the catalogue has never seen: let the ImageBuilder judge.
        check_package_names(changed, target, profile)

    effective = {
        "distro": data["distro"],
        "version": version.name,
        "revision": target.version_code,
        "version_code": data["version_code"],
        "target": target.name,
        "profile": profile.name,
        "packages": packages,
        "packages_versions": {
            pkg.removeprefix("+"): v for pkg, v in data["packages_versions"].items()
        },
        "defaults": data["defaults"],
        "rootfs_size_mb": data["rootfs_size_mb"],
        "filesystem": data["filesystem"],
        "repositories": data["repositories"],
        "repositories_mode": data["repositories_mode"],
        "repository_keys": sorted(data["repository_keys"]),
    }
    request_hash = _digest(effective)
    # The files do not depend on what the manifest is checked against.
    bin_dir = _digest({k: v for k, v in effective.items() if k not in ("packages_versions",)})

    echo = {
        **data,
        "version": version.name,
        "target": target.name,
        "profile": profile.name,
        "packages": sorted(set(requested)),
        "packages_versions": effective["packages_versions"],
        "client": data["client"] or client_from_user_agent(user_agent) or None,
    }
    build, queued = _get_or_create_build(request_hash, bin_dir, echo, packages, rules)
    if state is not None and state[:8] == _state_of(profile):
        branch_id = version.branch_id
        _remember(shortcut, (request_hash, profile.pk, branch_id, name, state))
    return build, queued


def resolve_profile(version: str, target: str, profile: str) -> Profile:
    """The catalogue's profile for a request, with its target, version and branch loaded.

    `profile` may be a board name (`tplink,archer-c7-v5`); a target whose only profile
    is `generic` builds that. A missing version or target is refreshed from upstream
    once before the request is refused.
    """
    return _resolve(version, target, profile)[0]


def _resolve(version: str, target: str, profile: str) -> tuple[Profile, bool]:
    """`resolve_profile`, and whether the profile was found by one of its names (not as
    the `generic` fallback)."""
    wanted = profile_name_key(profile)
    refreshed: set[str] = set()
    while True:
        found = _lookup_profile(version, target, wanted)
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
        if target_row is None:
            raise BuildRejected(
                f"Unsupported target: {target}. It is not built for {version}: it may have "
                "been dropped, or its files are not yet published. Check the version's "
                "targets on the downloads server, or try again later."
            )
        raise BuildRejected(
            f"Unsupported profile: {profile}. {target} in {version} has no device of that "
            "name: it may have been renamed or dropped. Use the profile name or board name "
            "listed in the target's profiles.json."
        )


def profile_name_key(profile: str) -> str:
    """A requested profile or board name as `ProfileName` stores it."""
    return profile.replace(",", "_")


def effective_packages(
    requested: list[str], target: Target, profile: Profile, diff_packages: bool
) -> list[str]:
    """The PACKAGES list given to `make image`, in one canonical order.

    With `diff_packages` the request lists every package the image should have: default
    and device packages it leaves out are removed with `-pkg` (openwrt-formats.md §1.3).
    Order does not change what the ImageBuilder installs, so both parts are sorted, and
    the same selection spelled in another order gives the same list.
    """
    requested_sorted = sorted(set(requested))
    if not diff_packages:
        return requested_sorted
    device = profile.device_packages or []
    base = set(target.default_packages or []) | {p for p in device if not p.startswith("-")}
    base -= {p[1:] for p in device if p.startswith("-")}
    wanted = {p for p in requested if not p.startswith("-")}
    removals = sorted("-" + p for p in base - wanted)
    return removals + [p for p in requested_sorted if p not in removals]


def check_package_names(packages: list[str], target: Target, profile: Profile) -> None:
    """Refuse names that none of the target's indexes has, in one query."""
    known = set(target.default_packages or []) | {
        p.lstrip("-") for p in profile.device_packages or []
    }
    names = {p for p in packages if not p.startswith("-")} - known - ALWAYS_AVAILABLE
    if not names:
        return
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


def repository_allowed(url: str, allow_list: list[str]) -> bool:
    """True if `url` lies under one of the allowed URLs.

    Compared as parsed scheme, host, port and path segments, never as string prefixes:
    `https://allowed.example.com.evil.net/`, `https://allowed.example.com@evil.net/` and
    `https://allowed.example.com/feed/../../other` are all refused.
    """
    candidate = _url_parts(url)
    if candidate is None:
        return False
    for allowed in allow_list:
        parts = _url_parts(allowed)
        if parts is None:
            continue
        scheme, host, port, segments = parts
        if candidate[:3] == (scheme, host, port) and candidate[3][: len(segments)] == segments:
            return True
    return False


def client_from_user_agent(user_agent: str) -> str:
    """auc names itself only in its User-Agent: "auc (0.3.2-1)" becomes "auc/0.3.2-1"."""
    if user_agent.startswith("auc"):
        return user_agent.replace(" (", "/").replace(")", "")[:200]
    return ""


def build_by_hash(request_hash: str) -> Build | None:
    """The build clients poll, by its unique key.

    Raw SQL because polls are the busiest request of all and compiling the ORM query
    costs more than running it.
    """
    rows = list(Build.objects.raw(_BY_HASH_SQL.format(Build._meta.db_table), [request_hash]))
    return rows[0] if rows else None


def queue_position(build: Build) -> int:
    """How many queued builds were enqueued before this one (one count on the
    (status, enqueued_at) index; raw SQL for the same reason as `build_by_hash`)."""
    # Stored as the database stores it (SQLite compares datetimes as text).
    enqueued_at = connection.ops.adapt_datetimefield_value(build.enqueued_at)
    with connection.cursor() as cursor:
        cursor.execute(
            _POSITION_SQL.format(Build._meta.db_table),
            [Build.Status.QUEUED, enqueued_at, enqueued_at, build.pk],
        )
        return cursor.fetchone()[0]


_BY_HASH_SQL = "SELECT * FROM {} WHERE request_hash = %s"
_POSITION_SQL = (
    "SELECT COUNT(*) FROM {} WHERE status = %s "
    "AND (enqueued_at < %s OR (enqueued_at = %s AND id < %s))"
)


def imagebuilder_step(build: Build) -> str:
    """The step of a running build as the contract spells it; LuCI throws on anything else."""
    return build.imagebuilder_status if build.imagebuilder_status in STEPS else "init"


def _get_or_create_build(
    request_hash: str, bin_dir: str, echo: dict, packages: list[str], rules: list[dict]
) -> tuple[Build, bool]:
    try:
        build = Build.objects.get(request_hash=request_hash)
    except Build.DoesNotExist:
        pass
    else:
        if build.status != Build.Status.FAILED:
            return build, False
        try:
            return build, _retry_failed(build)
        except Build.DoesNotExist:
            pass  # expired and deleted meanwhile: create it anew

    _check_queue_room()
    task_id = str(uuid.uuid4())
    # The unique request_hash makes concurrent identical requests one row; get_or_create
    # retries the read when another request won the insert.
    build, created = Build.objects.get_or_create(
        request_hash=request_hash,
        defaults={
            "request": echo,
            "version": echo["version"],
            "target": echo["target"],
            "profile": echo["profile"],
            "packages": packages,
            "package_changes_applied": rules,
            "client": echo["client"] or "",
            "bin_dir": bin_dir,
            "task_id": task_id,
        },
    )
    if created:
        _enqueue(build)
    return build, created


def _retry_failed(build: Build) -> bool:
    """Queue a failed build again once its failure TTL has passed; True if this call did.
    `build` is refreshed to its current state either way."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.ASU_FAILURE_TTL)
    if (build.finished_at or build.enqueued_at) > cutoff:
        return False
    _check_queue_room()
    task_id = str(uuid.uuid4())
    # The conditional update lets exactly one of many concurrent requests re-queue it.
    claimed = (
        Build.objects.filter(pk=build.pk, status=Build.Status.FAILED)
        .filter(Q(finished_at__lte=cutoff) | Q(finished_at__isnull=True, enqueued_at__lte=cutoff))
        .update(
            status=Build.Status.QUEUED,
            imagebuilder_status="",
            task_id=task_id,
            enqueued_at=now,
            started_at=None,
            finished_at=None,
            expires_at=None,
            result={},
            manifest={},
            images=[],
            build_cmd=[],
            stdout="",
            stderr="",
            detail="",
        )
    )
    build.refresh_from_db()
    if not claimed:
        return False  # another request queued it again; answer its state now
    _enqueue(build)
    return True


def _check_queue_room() -> None:
    limit = settings.ASU_MAX_PENDING_JOBS
    # Counting at most `limit` rows keeps this cheap however long the queue grows.
    waiting = Build.objects.queued().values("pk")[:limit].count()
    if waiting >= limit:
        raise BuildRejected(
            f"server overload, queue contains too many build requests: {waiting}. "
            "Please try again in a few minutes.",
            status=529,
            title="Server overloaded",
        )


def _enqueue(build: Build) -> None:
    """Send the build task once the row is committed, under the id stored on the row."""
    from asuproject.celery import app

    # The queue is read from the settings now, not when Celery was configured.
    queue = settings.CELERY_TASK_DEFAULT_QUEUE

    def send() -> None:
        # By name, so the web process needs no import of the worker's code.
        app.send_task("builds.tasks.build", args=[build.pk], task_id=build.task_id, queue=queue)

    transaction.on_commit(send)


def _lookup_profile(version: str, target: str, wanted: str) -> Profile | None:
    """The hot path: one query from names to profile, target, version and branch."""
    rows = list(
        ProfileName.objects.filter(
            profile__target__version__name=version, profile__target__name=target, name=wanted
        )
        .select_related("profile__target__version__branch")
        .order_by("profile__name")[:8]
    )
    if not rows:
        return None
    # A board name may alias several profiles; the profile of that exact name wins.
    exact = [row.profile for row in rows if row.profile.name == wanted]
    return exact[0] if exact else rows[0].profile


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
    """Read one missing piece of the catalogue from upstream; True if it was attempted."""
    key = "asu:refresh:" + ":".join(str(a) for a in (kind, *args))
    if not cache.add(key, True, timeout=REFRESH_THROTTLE_SECONDS):
        return False
    try:
        from targets import sync

        if kind == "version":
            sync.refresh_version(*args)
        else:
            sync.refresh_target(*args)
    except Exception:
        # Upstream down or the file broken: the request is refused with the catalogue's
        # words, and the sync task keeps the last good data.
        log.warning("could not refresh %s %s from upstream", kind, args, exc_info=True)
    return True


def _has_indexes(target: Target) -> bool:
    return PackageIndex.objects.filter(
        Q(target=target)
        | Q(version_id=target.version_id, target__isnull=True, arch_packages=target.arch_packages)
    ).exists()


def _normalise_packages(packages: list[str]) -> list[str]:
    """Strip a leading "+", drop empty names and repeats, keep the order given."""
    seen: dict[str, None] = {}
    for name in packages:
        name = name.strip().removeprefix("+")
        if name:
            seen.setdefault(name, None)
    return list(seen)


def _digest(data: dict) -> str:
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _url_parts(url: str) -> tuple[str, str, int, list[str]] | None:
    """Scheme, host, port and unquoted path segments of an http(s) URL, or None if it
    is not one or its path steps outside itself."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return None
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if any(s in (".", "..") or "/" in s or "\\" in s for s in segments):
        return None
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default_port, segments


# The shortcut for repeated requests ---------------------------------------------------------
#
# A request seen before maps, in this process, to the hash it resolved to and to the state
# of everything that resolution read: the target's revision and default packages, the
# profile's device packages and names, the branch, and the package-change rules. One query
# reads the build together with that state; if anything changed, the request takes the
# full path again, so an edited rule or a new revision never serves an old build.

SHORTCUT_LIMIT = 20000
_shortcuts: dict[str, tuple[str, int, int, str, tuple]] = {}
_shortcuts_lock = threading.Lock()


@functools.cache
def _state_sql(with_build: bool) -> str:
    """Everything resolution depends on for one profile, read by both paths with the same
    SQL so that the values compare alike on every database. Primary-key lookups and
    scalar subqueries only: the statement is planned in a fraction of a millisecond.
    Parameters: branch id (4 times), profile name, [request hash], profile id."""
    branch = Branch._meta.db_table
    rules = PackageChange._meta.db_table
    names = ProfileName._meta.db_table
    columns = ", ".join(
        [
            "t.version_code AS s_revision",
            "t.default_packages AS s_defaults",
            "p.device_packages AS s_device",
            *(
                f"(SELECT br.{column} FROM {branch} br WHERE br.id = %s) AS s_{alias}"
                for column, alias in (
                    ("enabled", "enabled"),
                    ("branch_off_rev", "branch_off"),
                    ('"order"', "order"),
                    ("snapshot", "snapshot"),
                )
            ),
            f"(SELECT COUNT(*) FROM {names} n WHERE n.target_id = t.id AND n.profile_id = p.id"
            " AND n.name = %s) AS s_named",
            f"(SELECT COUNT(*) FROM {rules} r WHERE r.enabled) AS s_rules",
            f"(SELECT MAX(r.updated_at) FROM {rules} r WHERE r.enabled) AS s_rules_newest",
        ]
    )
    tables = f"{Profile._meta.db_table} p, {Target._meta.db_table} t"
    if with_build:
        return (
            f"SELECT b.*, {columns} FROM {Build._meta.db_table} b, {tables} "
            "WHERE b.request_hash = %s AND p.id = %s AND t.id = p.target_id"
        )
    return f"SELECT {columns} FROM {tables} WHERE p.id = %s AND t.id = p.target_id"


_STATE_NAMES = (
    "s_revision",
    "s_defaults",
    "s_device",
    "s_enabled",
    "s_branch_off",
    "s_order",
    "s_snapshot",
    "s_named",
    "s_rules",
    "s_rules_newest",
)


def shortcut_key(raw: object) -> str | None:
    """A key for a raw request body, with the settings that validating it depends on."""
    if not isinstance(raw, dict):
        return None
    body = {key: value for key, value in raw.items() if key != "client"}
    limits = (
        settings.ASU_ALLOW_DEFAULTS,
        settings.ASU_MAX_DEFAULTS_LENGTH,
        settings.ASU_MAX_ROOTFS_SIZE_MB,
        list(settings.ASU_REPOSITORY_ALLOW_LIST),
    )
    try:
        text = json.dumps([body, limits], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def known_build(raw: object, shortcut: str | None) -> Build | None:
    """The build a request seen before resolved to, if nothing it depends on changed since;
    None sends the request the full way. One query (failed builds always go the full way,
    which decides whether to try them again)."""
    known = _shortcuts.get(shortcut) if shortcut else None
    if known is None:
        return None
    client = raw.get("client") if isinstance(raw, dict) else None
    if client is not None and not (isinstance(client, str) and len(client) <= 200):
        return None  # the serializer would refuse it
    request_hash, profile_id, branch_id, name, state = known
    params = [branch_id] * 4 + [name, request_hash, profile_id]
    rows = list(Build.objects.raw(_state_sql(True), params))
    if not rows or _parse_state([getattr(rows[0], n) for n in _STATE_NAMES]) != state:
        _shortcuts.pop(shortcut, None)
        return None
    build = rows[0]
    return None if build.status == Build.Status.FAILED else build


def forget_shortcuts() -> None:
    """Drop this process's shortcuts (tests start from a clean slate)."""
    _shortcuts.clear()


def _catalogue_state(profile: Profile, name: str) -> tuple | None:
    params = [profile.target.version.branch_id] * 4 + [name, profile.pk]
    with connection.cursor() as cursor:
        cursor.execute(_state_sql(False), params)
        row = cursor.fetchone()
    return _parse_state(row) if row else None


def _state_of(profile: Profile) -> tuple:
    """The catalogue part of the state as the full path read it, to check that nothing
    changed between that read and `_catalogue_state`."""
    target = profile.target
    branch = target.version.branch
    return (
        target.version_code or "",
        target.default_packages,
        profile.device_packages,
        bool(branch.enabled),
        branch.branch_off_rev,
        branch.order,
        bool(branch.snapshot),
        True,
    )


def _parse_state(values: list | tuple) -> tuple:
    revision, defaults, device, enabled, branch_off, order, snapshot, named, rules, newest = values
    return (
        revision or "",
        json.loads(defaults) if isinstance(defaults, str) else defaults,
        json.loads(device) if isinstance(device, str) else device,
        bool(enabled),
        branch_off,
        order,
        bool(snapshot),
        bool(named),
        rules,
        str(newest),
    )


def _remember(shortcut: str, known: tuple[str, int, int, str, tuple]) -> None:
    with _shortcuts_lock:
        if len(_shortcuts) >= SHORTCUT_LIMIT:
            # Oldest first: dicts keep insertion order.
            for key in list(_shortcuts)[: SHORTCUT_LIMIT // 10]:
                del _shortcuts[key]
        _shortcuts[shortcut] = known
