"""What each web process remembers between requests, so that a repeat costs little.

- Shortcuts: a request seen before maps to the build it resolved to, under the catalogue
  generation (`targets.generation`) read before the resolution read the catalogue. Any
  write to the catalogue or the package-change rules, in any process on any host, moves
  the generation on, and the shortcut is not taken any more: an edited rule or a new
  revision never serves an old build.
- Bodies: a router sends the very same bytes each time; bytes answered before map to their
  shortcut, which spares parsing them again.
- Answers of finished builds: a done row is never written again until it is deleted
  (after its `expires_at`, or by the admin) or queued again from the admin; both move the
  builds' generation on. So its rendered answer is kept until then, within a memory budget.
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
from django.core.signals import setting_changed

from builds.models import Build
from builds.queue import STATUS_COLUMNS, build_by_hash, build_from_row
from packages.models import Package
from packages.versions import compare_versions
from targets import generation
from targets.models import Target

SHORTCUT_LIMIT = 20000
ANSWER_CACHE_BYTES = 32 * 1024 * 1024
INSTALLABLE_LIMIT = 64  # targets, each a set of some thousands of names


class Shortcut(NamedTuple):
    """Where a request seen before led, and under which catalogue generation."""

    request_hash: str
    catalogue: int  # `generation.current().catalogue` read before the resolution


class KeptAnswer(NamedTuple):
    expires: float  # time.time() at the build's `expires_at`
    answer: Any  # the view's rendered answer, opaque here
    size: int  # bytes, counted against ANSWER_CACHE_BYTES
    build: Build  # its status columns only
    builds: int  # `generation.current().builds` read before the row was
    # Request shape -> the status line and headers Django answered it with (builds.fastpath)
    wire: dict


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
        """The answer kept for a finished build, unless it expired, or some process
        deleted or re-queued a finished build since (one cheap query per request)."""
        entry = self.kept_entry(request_hash)
        return None if entry is None else entry.answer

    def kept_entry(self, request_hash: str) -> KeptAnswer | None:
        # Read first even when nothing is kept: an answer kept later in this request is
        # kept under the generation read before its row was (`keep_answer`).
        return self.kept_under(request_hash, generation.current().builds)

    def kept_for_body(self, key: str, generations: generation.Generations) -> KeptAnswer | None:
        """The kept answer to the request whose bytes have `body_key` `key`, if the
        catalogue is still at the generation its shortcut was taken under."""
        shortcut_key = self.shortcut_of_body(key)
        shortcut = self.shortcuts.get(shortcut_key) if shortcut_key else None
        if shortcut is None or shortcut.catalogue != generations.catalogue:
            return None
        return self.kept_under(shortcut.request_hash, generations.builds)

    def kept_under(self, request_hash: str, builds: int) -> KeptAnswer | None:
        """The answer kept for a finished build, unless it expired or the builds'
        generation is no longer `builds`."""
        entry = self.answers.get(request_hash)
        if entry is None:
            return None
        if time.time() >= entry.expires or entry.builds != builds:
            self.drop_answer(request_hash)
            return None
        with self.lock:
            if request_hash in self.answers:
                self.answers.move_to_end(request_hash)
        return entry

    def keep_answer(self, build: Build, answer: Any, size: int) -> None:
        """Keep the answer of a finished build until the build expires, or any finished
        build is deleted or queued again. In a request, the builds' generation is the one
        read before the row was (`generation.current()` keeps it for the request)."""
        if build.status != Build.Status.DONE or build.expires_at is None:
            return
        expires = build.expires_at.timestamp()
        if expires <= time.time() or size > ANSWER_CACHE_BYTES // 16:
            return  # expired already; or one huge build log pushing out everything else
        status = build_from_row(STATUS_COLUMNS, [getattr(build, c) for c in STATUS_COLUMNS])
        entry = KeptAnswer(expires, answer, size, status, generation.current().builds, {})
        with self.lock:
            self._pop_answer(build.request_hash)
            while self.answers and self.answers_size + size > ANSWER_CACHE_BYTES:
                self.answers_size -= self.answers.popitem(last=False)[1].size
            self.answers[build.request_hash] = entry
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


@functools.cache
def _limits_bytes() -> bytes:
    """`_limits()` as `body_key` appends it: computed once per settings change."""
    return b"\0" + json.dumps(_limits(), separators=(",", ":")).encode()


def _settings_changed(setting: str, **kwargs: object) -> None:
    if setting.startswith("ASU_"):
        _limits_bytes.cache_clear()


setting_changed.connect(_settings_changed, dispatch_uid="builds.memory.settings")


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
    return hashlib.blake2b(body + _limits_bytes(), digest_size=20).hexdigest()


def known_build(raw: object, key: str | None) -> Build | None:
    """The build a request seen before resolved to, if the catalogue did not change since;
    None sends the request the full way. One query for the generations, none more when
    this process kept the finished build's answer, one for the build otherwise (failed
    builds always go the full way, which decides whether to try them again). `raw` is
    None for bytes seen before."""
    shortcut = memory.shortcuts.get(key) if key else None
    if shortcut is None:
        return None
    client = raw.get("client") if isinstance(raw, dict) else None
    if client is not None and not (isinstance(client, str) and len(client) <= 200):
        return None  # the serializer would refuse it
    if shortcut.catalogue != generation.current().catalogue:
        memory.shortcuts.pop(key, None)
        return None
    kept = memory.kept_entry(shortcut.request_hash)
    build = kept.build if kept is not None else build_by_hash(shortcut.request_hash)
    if build is None or build.status == Build.Status.FAILED:
        return None
    return build


def remember_resolution(key: str, request_hash: str, catalogue: int) -> None:
    """Take the shortcut for `key` from now on, while the catalogue stays at the
    generation `catalogue` read before the request was resolved."""
    memory.remember_shortcut(key, Shortcut(request_hash, catalogue))
