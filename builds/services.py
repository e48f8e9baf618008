"""From a validated build request to a `Build` row and one queued task.

`request_build()` normalises the request, resolves version, target and profile in the
catalogue (refreshing a missing piece from upstream once), applies the package-change
rules, computes the effective PACKAGES list, checks the package names (against this
process's copy of the target's names), and finds or creates the `Build` keyed by the hash
of the effective request. Identical effective requests, however they are spelled, share
one row; identical effective builds share one store folder (`bin_dir`).

What each process remembers between requests, each entry checked or keyed so that it is
never served stale: the shortcut of a request seen before (checked by one prepared query
per request), the package names of a target (keyed by its version's sync time), and the
answers of finished builds (until they expire).
"""

import functools
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import DEFERRED, Q
from django.utils import timezone

from asuproject.lib.prepared import fetch_prepared
from builds.models import Build, Step
from packages.changes import apply_package_changes
from packages.models import Package, PackageChange, PackageIndex
from targets.models import Branch, Profile, ProfileName, Target, Version, profile_name_key

log = logging.getLogger(__name__)

KNOWN_DISTROS = {"openwrt"}
# Installed by every ImageBuilder from its own folder, absent from some feed indexes.
ALWAYS_AVAILABLE = frozenset({"kernel", "libc", "libgcc", "libgcc1"})
# A name that is not in the catalogue triggers at most one upstream refresh per this
# many seconds, so that bogus requests cannot hammer the downloads server.
REFRESH_THROTTLE_SECONDS = 60


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
    if state is not None and _parse_state(state)[:8] == _state_of(profile):
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
    """Refuse names that none of the target's indexes has: a set difference against
    this process's copy of the names the target can install (`installable_names`),
    or one query for a catalogue the sync did not write."""
    known = set(target.default_packages or []) | {
        p.lstrip("-") for p in profile.device_packages or []
    }
    names = {p for p in packages if not p.startswith("-")} - known - ALWAYS_AVAILABLE
    if not names:
        return
    installable = installable_names(target)
    if installable is not None:
        found = names & installable
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


# Every write of a package index happens in a sync transaction that also moves its
# version's `synced_at` (targets.sync._lock_and_bump), so the names a target can install
# are the same for as long as (target, architecture, version.synced_at) is. A request
# that read the old `synced_at` before a sync committed may fill the old key with new
# names; no later request looks that key up, so nothing stale is ever served.
INSTALLABLE_LIMIT = 64  # targets; the full catalogue's largest set is about 8 500 names
_installable: dict[tuple, frozenset[str]] = {}
_installable_lock = threading.Lock()


def installable_names(target: Target) -> frozenset[str] | None:
    """Every package name `target` can install, read once per process and catalogue
    generation. None when the version has no generation (rows not written by the sync,
    as in tests that build the catalogue by hand): the caller asks the database."""
    if not Target.version.is_cached(target) or target.version.synced_at is None:
        return None
    key = (target.pk, target.arch_packages, target.version.synced_at)
    names = _installable.get(key)
    if names is None:
        names = frozenset(
            Package.objects.for_target(target).values_list("name", flat=True).distinct()
        )
        with _installable_lock:
            # One entry per target: an older generation is never asked for again.
            for old in [k for k in _installable if k[0] == target.pk]:
                del _installable[old]
            if len(_installable) >= INSTALLABLE_LIMIT:
                del _installable[next(iter(_installable))]  # the oldest entry
            _installable[key] = names
    return names


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


# The columns a status answer needs: these for a queued or running build ...
STATUS_COLUMNS = (
    "id",
    "request_hash",
    "status",
    "imagebuilder_status",
    "enqueued_at",
    "finished_at",
    "expires_at",
)
# ... and these too for a finished or failed one.
RESULT_COLUMNS = (
    "profile",
    "bin_dir",
    "detail",
    "result",
    "manifest",
    "images",
    "build_cmd",
    "stdout",
    "stderr",
    "request",
    "package_changes_applied",
)
_JSON_COLUMNS = frozenset(
    {"result", "manifest", "images", "build_cmd", "request", "package_changes_applied"}
)
_TIME_COLUMNS = frozenset({"enqueued_at", "finished_at", "expires_at"})
_ATTNAMES = [field.attname for field in Build._meta.concrete_fields]


def build_by_hash(request_hash: str, results: bool = True) -> Build | None:
    """The build clients poll, by its unique key; without `results`, only its
    STATUS_COLUMNS are read (the others are deferred).

    A cursor, not the ORM: polls are the busiest request of all, and compiling a query,
    or mapping the columns of a raw one, costs more than running it.
    """
    columns = STATUS_COLUMNS + RESULT_COLUMNS if results else STATUS_COLUMNS
    with connection.cursor() as cursor:
        cursor.execute(_by_hash_sql(columns), [request_hash])
        row = cursor.fetchone()
    return _build_from_row(columns, row) if row else None


@functools.cache
def _by_hash_sql(columns: tuple[str, ...]) -> str:
    return f"SELECT {', '.join(columns)} FROM {Build._meta.db_table} WHERE request_hash = %s"


def _build_from_row(columns: tuple[str, ...], values: tuple) -> Build:
    """A Build from the columns of a cursor row, converted as the ORM would; the
    columns not read, and the result columns of a queued or running build, are deferred."""
    row = dict(zip(columns, values, strict=True))
    if row["status"] in (Build.Status.QUEUED, Build.Status.STARTED):
        # Nothing but the status columns goes into its answer: decode none of the rest.
        for column in RESULT_COLUMNS:
            row.pop(column, None)
    for column in _JSON_COLUMNS.intersection(row):
        if isinstance(row[column], str | bytes):
            row[column] = json.loads(row[column])  # PostgreSQL's jsonb and SQLite's text
    for column in _TIME_COLUMNS.intersection(row):
        if row[column] is not None:
            row[column] = _aware(row[column])
    return Build.from_db(
        connection.alias, _ATTNAMES, [row.get(name, DEFERRED) for name in _ATTNAMES]
    )


def _aware(value: datetime | str) -> datetime:
    """A datetime column as the ORM returns it: SQLite gives naive UTC text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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


_POSITION_SQL = (
    "SELECT COUNT(*) FROM {} WHERE status = %s "
    "AND (enqueued_at < %s OR (enqueued_at = %s AND id < %s))"
)


def imagebuilder_step(build: Build) -> str:
    """The step of a running build as the contract spells it; LuCI throws on anything else."""
    return build.imagebuilder_status if build.imagebuilder_status in Step.ALL else Step.INIT


def _get_or_create_build(
    request_hash: str, bin_dir: str, echo: dict, packages: list[str], rules: list[dict]
) -> tuple[Build, bool]:
    # The result columns are not needed when this process has the answer already.
    build = build_by_hash(request_hash, results=finished_answer(request_hash) is None)
    if build is not None:
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
    return (
        Profile.objects.filter(target__version__name=version, target__name=target)
        .select_related("target__version__branch")
        .answering_to(wanted)
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
def _state_sql(build_columns: tuple[str, ...] = ()) -> str:
    """Everything resolution depends on for one profile, read by both paths with the same
    SQL so that the values compare alike on every database, after the `build_columns`
    of the build when there are any. Primary-key lookups and scalar subqueries only,
    prepared once per connection (`fetch_prepared`).
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
    if build_columns:
        selected = ", ".join(f"b.{column}" for column in build_columns)
        return (
            f"SELECT {selected}, {columns} FROM {Build._meta.db_table} b, {tables} "
            "WHERE b.request_hash = %s AND p.id = %s AND t.id = p.target_id"
        )
    return f"SELECT {columns} FROM {tables} WHERE p.id = %s AND t.id = p.target_id"


def _limits() -> list:
    """The settings that validating a request depends on."""
    return [
        settings.ASU_ALLOW_DEFAULTS,
        settings.ASU_MAX_DEFAULTS_LENGTH,
        settings.ASU_MAX_ROOTFS_SIZE_MB,
        list(settings.ASU_REPOSITORY_ALLOW_LIST),
    ]


def shortcut_key(raw: object) -> str | None:
    """A key for a parsed request body, with the settings that validating it depends on:
    the same for every spelling of the same fields, whatever the client."""
    if not isinstance(raw, dict):
        return None
    body = {key: value for key, value in raw.items() if key != "client"}
    try:
        text = json.dumps([body, _limits()], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


# A router sends the very same bytes each time it asks. Bytes that were valid once map to
# their `shortcut_key`, which spares parsing and re-serialising the body on every repeat.
_bodies: dict[str, str] = {}


def body_key(body: bytes) -> str:
    """A key for the bytes of a request body, with the settings (as `shortcut_key`)."""
    limits = json.dumps(_limits(), separators=(",", ":")).encode()
    return hashlib.blake2b(body + b"\0" + limits, digest_size=20).hexdigest()


def known_body(key: str) -> str | None:
    """The `shortcut_key` of a body whose bytes were answered before, if still known."""
    shortcut = _bodies.get(key)
    return shortcut if shortcut in _shortcuts else None


def remember_body(key: str, shortcut: str | None) -> None:
    """Note that the bytes under `key` are a valid request with this shortcut, once the
    request was answered by its build."""
    if shortcut is None or shortcut not in _shortcuts or key in _bodies:
        return
    with _shortcuts_lock:
        if len(_bodies) >= SHORTCUT_LIMIT:
            for old in list(_bodies)[: SHORTCUT_LIMIT // 10]:
                del _bodies[old]
        _bodies[key] = shortcut


def known_build(raw: object, shortcut: str | None) -> Build | None:
    """The build a request seen before resolved to, if nothing it depends on changed since;
    None sends the request the full way. One query (failed builds always go the full way,
    which decides whether to try them again)."""
    known = _shortcuts.get(shortcut) if shortcut else None
    if known is None:
        return None
    # `raw` is None for bytes that passed this check before (`known_body`).
    client = raw.get("client") if isinstance(raw, dict) else None
    if client is not None and not (isinstance(client, str) and len(client) <= 200):
        return None  # the serializer would refuse it
    request_hash, profile_id, branch_id, name, state = known
    # The status columns suffice when this process has the finished build's answer.
    columns = STATUS_COLUMNS
    if finished_answer(request_hash) is None:
        columns += RESULT_COLUMNS
    params = [branch_id] * 4 + [name, request_hash, profile_id]
    # Prepared: planning this statement costs more than running it (asuproject.lib.prepared).
    rows = fetch_prepared(_state_sql(columns), params)
    row = rows[0] if rows else None
    # The state as the database returns it, compared without decoding anything.
    if row is None or row[len(columns) :] != state:
        _shortcuts.pop(shortcut, None)
        return None
    build = _build_from_row(columns, row[: len(columns)])
    return None if build.status == Build.Status.FAILED else build


def forget_shortcuts() -> None:
    """Drop what this process remembers between requests: the shortcuts, the answers of
    finished builds and the package names (tests start from a clean slate)."""
    _shortcuts.clear()
    _bodies.clear()
    forget_answers()
    _installable.clear()


def _catalogue_state(profile: Profile, name: str) -> tuple | None:
    params = [profile.target.version.branch_id] * 4 + [name, profile.pk]
    rows = fetch_prepared(_state_sql(), params)
    return rows[0] if rows else None


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


def _parse_state(values: tuple) -> tuple:
    """The state as the database returned it, decoded to compare with `_state_of`."""
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


# Answers of finished builds -----------------------------------------------------------------
#
# A finished build's answer never changes: nothing writes a done row again, and
# builds.tasks.expire_builds deletes it after its `expires_at`. So each process keeps the
# answers it rendered (the view's bytes, opaque here) until then, within a memory budget,
# the least recently used going first. Polls and repeated requests of a finished build
# then read no result columns, or no row at all.

ANSWER_CACHE_BYTES = 32 * 1024 * 1024
_answers: OrderedDict[str, tuple[float, Any, int]] = OrderedDict()
_answers_size = 0
_answers_lock = threading.Lock()


def finished_answer(request_hash: str) -> Any | None:
    """The answer `keep_answer` stored for a finished build, unless it expired."""
    entry = _answers.get(request_hash)
    if entry is None:
        return None
    if time.time() >= entry[0]:
        drop_answer(request_hash)
        return None
    with _answers_lock:
        if request_hash in _answers:
            _answers.move_to_end(request_hash)
    return entry[1]


def keep_answer(build: Build, answer: Any, size: int) -> None:
    """Remember the answer of a finished build until the build expires; `size` is
    what it weighs in bytes."""
    global _answers_size
    if build.status != Build.Status.DONE or build.expires_at is None:
        return
    expires = build.expires_at.timestamp()
    if expires <= time.time() or size > ANSWER_CACHE_BYTES // 16:
        return  # expired already; or one huge build log pushing out everything else
    with _answers_lock:
        old = _answers.pop(build.request_hash, None)
        if old is not None:
            _answers_size -= old[2]
        while _answers and _answers_size + size > ANSWER_CACHE_BYTES:
            _answers_size -= _answers.popitem(last=False)[1][2]
        _answers[build.request_hash] = (expires, answer, size)
        _answers_size += size


def drop_answer(request_hash: str) -> None:
    """Forget a kept answer: its build expired, or its row is no longer finished (deleted
    and requested again)."""
    global _answers_size
    with _answers_lock:
        old = _answers.pop(request_hash, None)
        if old is not None:
            _answers_size -= old[2]


def forget_answers() -> None:
    global _answers_size
    with _answers_lock:
        _answers.clear()
        _answers_size = 0
