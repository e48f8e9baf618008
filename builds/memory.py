"""What each web process remembers between requests, so that a repeat costs little.

- Shortcuts: a request seen before maps to the build it resolved to and to the catalogue
  rows that resolution depended on (the target's revision and default packages, the
  profile's device packages and names, the branch, the package-change rules). One
  prepared query reads the build together with those rows; if any changed, the request
  takes the full path again, so an edited rule or a new revision never serves an old build.
- Bodies: a router sends the very same bytes each time; bytes answered before map to their
  shortcut, which spares parsing them again.
- Answers of finished builds: a done row is never written again and is deleted after its
  `expires_at`, so its rendered answer is kept until then, within a memory budget.
- Installable names of a target, and its ABI-suffixed names, per catalogue generation
  (`Version.synced_at`).

`memory` owns all of it; `memory.clear()` forgets everything (tests, another process).
"""

import functools
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.conf import settings

from asuproject.lib.prepared import fetch_prepared
from builds.models import Build
from builds.queue import RESULT_COLUMNS, STATUS_COLUMNS, build_from_row
from packages.models import Package, PackageChange
from packages.versions import compare_versions
from targets.models import Branch, Profile, ProfileName, Target

SHORTCUT_LIMIT = 20000
ANSWER_CACHE_BYTES = 32 * 1024 * 1024
INSTALLABLE_LIMIT = 64  # targets, each a set of some thousands of names


class Shortcut(NamedTuple):
    """Where a request seen before led, and what that depended on."""

    request_hash: str
    profile_id: int
    branch_id: int
    profile_key: str  # the requested profile or board name, as ProfileName stores it
    depends_on: tuple  # the row of `_dependencies_sql`, as the database returned it


class KeptAnswer(NamedTuple):
    expires: float  # time.time() at the build's `expires_at`
    answer: Any  # the view's rendered answer, opaque here
    size: int  # bytes, counted against ANSWER_CACHE_BYTES


class TargetNames(NamedTuple):
    installable: frozenset[str]  # every package name the target can install
    abi_names: dict[str, str]  # {"libubox20230523": "libubox"}
    versions: dict[str, str]  # {"libubox": "2024.03.29~eb9bcb64-r1"}, the newest offered


class RequestMemory:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shortcuts: dict[str, Shortcut] = {}
        self.bodies: dict[str, str] = {}
        self.answers: OrderedDict[str, KeptAnswer] = OrderedDict()
        self.answers_size = 0
        # Keyed by (target id, architecture, version.synced_at): every write of a package
        # index happens in a sync transaction that also moves its version's `synced_at`.
        # A request that read the old `synced_at` before a sync committed may fill the old
        # key with new names; no later request looks that key up, so nothing stale is served.
        self.installable: dict[tuple, TargetNames] = {}

    def clear(self) -> None:
        with self.lock:
            self.shortcuts.clear()
            self.bodies.clear()
            self.answers.clear()
            self.answers_size = 0
            self.installable.clear()

    # Shortcuts and bodies

    def remember_shortcut(self, key: str, shortcut: Shortcut) -> None:
        with self.lock:
            _trim_oldest(self.shortcuts, SHORTCUT_LIMIT)
            self.shortcuts[key] = shortcut

    def shortcut_of_body(self, key: str) -> str | None:
        """The shortcut key of a body whose bytes were answered before, if still known."""
        shortcut = self.bodies.get(key)
        return shortcut if shortcut in self.shortcuts else None

    def remember_body(self, key: str, shortcut: str | None) -> None:
        """Note that the bytes under `key` are a valid request with this shortcut, once
        the request was answered by its build."""
        if shortcut is None or shortcut not in self.shortcuts or key in self.bodies:
            return
        with self.lock:
            _trim_oldest(self.bodies, SHORTCUT_LIMIT)
            self.bodies[key] = shortcut

    # Answers of finished builds

    def finished_answer(self, request_hash: str) -> Any | None:
        """The answer kept for a finished build, unless it expired."""
        entry = self.answers.get(request_hash)
        if entry is None:
            return None
        if time.time() >= entry.expires:
            self.drop_answer(request_hash)
            return None
        with self.lock:
            if request_hash in self.answers:
                self.answers.move_to_end(request_hash)
        return entry.answer

    def keep_answer(self, build: Build, answer: Any, size: int) -> None:
        """Keep the answer of a finished build until the build expires."""
        if build.status != Build.Status.DONE or build.expires_at is None:
            return
        expires = build.expires_at.timestamp()
        if expires <= time.time() or size > ANSWER_CACHE_BYTES // 16:
            return  # expired already; or one huge build log pushing out everything else
        with self.lock:
            self._pop_answer(build.request_hash)
            while self.answers and self.answers_size + size > ANSWER_CACHE_BYTES:
                self.answers_size -= self.answers.popitem(last=False)[1].size
            self.answers[build.request_hash] = KeptAnswer(expires, answer, size)
            self.answers_size += size

    def drop_answer(self, request_hash: str) -> None:
        """Forget a kept answer: its build expired, or its row is no longer finished."""
        with self.lock:
            self._pop_answer(request_hash)

    def _pop_answer(self, request_hash: str) -> None:
        old = self.answers.pop(request_hash, None)
        if old is not None:
            self.answers_size -= old.size

    # Installable package names

    def target_names(self, target: Target) -> TargetNames | None:
        """The package names `target` can install, read once per catalogue generation.
        None when the version has no generation (rows not written by the sync, as in
        tests that build the catalogue by hand): the caller asks the database."""
        if not Target.version.is_cached(target) or target.version.synced_at is None:
            return None
        key = (target.pk, target.arch_packages, target.version.synced_at)
        names = self.installable.get(key)
        if names is None:
            rows = Package.objects.for_target(target).values_list("name", "abi_version", "version")
            names = TargetNames(
                frozenset(name for name, _, _ in rows),
                {name + abi: name for name, abi, _ in rows if abi},
                newest_versions((name, version) for name, _, version in rows),
            )
            with self.lock:
                # One entry per target: an older generation is never asked for again.
                for old in [k for k in self.installable if k[0] == target.pk]:
                    del self.installable[old]
                _trim_oldest(self.installable, INSTALLABLE_LIMIT, share=INSTALLABLE_LIMIT)
                self.installable[key] = names
        return names


def newest_versions(rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    """{name: version}, the newest in OpenWrt's order where feeds offer a name twice."""
    versions: dict[str, str] = {}
    for name, version in rows:
        known = versions.get(name)
        if known is None or (known != version and compare_versions(version, known) > 0):
            versions[name] = version
    return versions


def _trim_oldest(entries: dict, limit: int, share: int = 10) -> None:
    """Make room for one more entry: drop the oldest 1/`share` once `limit` is reached
    (dicts keep insertion order)."""
    if len(entries) >= limit:
        for key in list(entries)[: max(1, limit // share)]:
            del entries[key]


memory = RequestMemory()


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


def body_key(body: bytes) -> str:
    """A key for the bytes of a request body, with the settings (as `shortcut_key`)."""
    limits = json.dumps(_limits(), separators=(",", ":")).encode()
    return hashlib.blake2b(body + b"\0" + limits, digest_size=20).hexdigest()


def known_build(raw: object, key: str | None) -> Build | None:
    """The build a request seen before resolved to, if nothing it depends on changed since;
    None sends the request the full way. One query (failed builds always go the full way,
    which decides whether to try them again). `raw` is None for bytes seen before."""
    shortcut = memory.shortcuts.get(key) if key else None
    if shortcut is None:
        return None
    client = raw.get("client") if isinstance(raw, dict) else None
    if client is not None and not (isinstance(client, str) and len(client) <= 200):
        return None  # the serializer would refuse it
    # The status columns suffice when this process has the finished build's answer.
    columns = STATUS_COLUMNS
    if memory.finished_answer(shortcut.request_hash) is None:
        columns += RESULT_COLUMNS
    params = [shortcut.branch_id] * 4 + [
        shortcut.profile_key,
        shortcut.request_hash,
        shortcut.profile_id,
    ]
    # Prepared: planning this statement costs more than running it (asuproject.lib.prepared).
    rows = fetch_prepared(_dependencies_sql(columns), params)
    row = rows[0] if rows else None
    # Compared as the database returns them, without decoding anything.
    if row is None or row[len(columns) :] != shortcut.depends_on:
        memory.shortcuts.pop(key, None)
        return None
    build = build_from_row(columns, row[: len(columns)])
    return None if build.status == Build.Status.FAILED else build


def read_dependencies(profile: Profile, profile_key: str) -> tuple | None:
    """The catalogue rows a resolution of `profile` depends on, as the shortcut compares
    them. Read before the rules are applied: a change after this read then misses the
    shortcut later, instead of being hidden by it."""
    params = [profile.target.version.branch_id] * 4 + [profile_key, profile.pk]
    rows = fetch_prepared(_dependencies_sql(), params)
    return rows[0] if rows else None


def remember_resolution(
    key: str, request_hash: str, profile: Profile, profile_key: str, depends_on: tuple | None
) -> None:
    """Take the shortcut for `key` from now on, if `depends_on` (`read_dependencies`) shows
    the catalogue rows the full path resolved with (nothing changed in between)."""
    if depends_on is None or _decoded(depends_on)[:8] != _as_resolved(profile):
        return
    shortcut = Shortcut(
        request_hash, profile.pk, profile.target.version.branch_id, profile_key, depends_on
    )
    memory.remember_shortcut(key, shortcut)


@functools.cache
def _dependencies_sql(build_columns: tuple[str, ...] = ()) -> str:
    """Everything resolution depends on for one profile, read by both paths with the same
    SQL so that the values compare alike on every database, after the `build_columns`
    of the build when there are any. Primary-key lookups and scalar subqueries only,
    prepared once per connection (`fetch_prepared`).
    Parameters: branch id (4 times), profile key, [request hash], profile id."""
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


def _as_resolved(profile: Profile) -> tuple:
    """The catalogue part of `_dependencies_sql` as the full path read it."""
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


def _decoded(values: tuple) -> tuple:
    """A row of `_dependencies_sql` decoded, to compare with `_as_resolved`."""
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
