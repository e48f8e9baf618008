"""The json/v1 documents that list packages: a target's index.json, an architecture's
{arch}-index.json, and overview.json, branches.json and latest.json, which publish each
branch's package changes.

No request waits on upstream: everything comes from the ORM in a few queries. All of
them are kept per process under the catalogue's shared generation (`targets.generation`,
one primary-key query per request), which every write to the branches, versions,
targets and package-change rules moves on in any process: an edit in the admin or a sync
shows in the next answer. The package indexes, the largest documents, are also cached
(shared by the processes of a host with a shared cache) under a key that holds the
version's `synced_at`, which every sync write moves on.
"""

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

from asuproject.api_views import safe_methods_only
from asuproject.lib.prepared import fetch_prepared
from packages.changes import published_changes
from packages.models import Package, PackageIndex
from targets import generation
from targets.models import Branch, Target, Version, newest_first, version_sort_key
from targets.views import not_found

CACHE_SECONDS = 24 * 3600  # the key changes with the data; this only bounds memory use
INDEX_BYTES = 32 * 1024 * 1024  # per process: ~100 target indexes of 300 KB


# overview.json, branches.json, latest.json -----------------------------------------------


def catalogue_branches() -> list[dict]:
    """The enabled branches that have versions with targets, as overview.json lists
    them, in the branches' order (newest first). Two queries plus package changes."""
    branches = list(Branch.objects.filter(enabled=True))
    rows = (
        Target.objects.filter(version__branch__enabled=True)
        .order_by()  # sorted below; the models' default ordering would add joins
        .values_list("version__branch_id", "version__name", "name", "arch_packages")
    )
    versions: dict[int, set[str]] = {}
    targets: dict[int, dict[str, str]] = {}
    # Oldest version first, so the newest version's architecture wins for a target.
    for branch_id, version, target, arch in sorted(rows, key=lambda r: version_sort_key(r[1])):
        versions.setdefault(branch_id, set()).add(version)
        targets.setdefault(branch_id, {})[target] = arch
    return [
        {
            "name": branch.name,
            "path": branch.path,
            "enabled": branch.enabled,
            "snapshot": branch.snapshot,
            "path_packages": "DEPRECATED",
            "branch_off_rev": branch.branch_off_rev,
            "package_changes": published_changes(branch),
            "versions": newest_first(versions[branch.pk]),
            "targets": dict(sorted(targets[branch.pk].items())),
        }
        for branch in branches
        if targets.get(branch.pk)
    ]


def latest_versions(branches: list[dict]) -> list[str]:
    """The newest release of each branch, newest first; a release candidate only when
    its branch has no final release yet."""
    latest = []
    for branch in branches:
        releases = [v for v in branch["versions"] if not v.endswith("SNAPSHOT")]
        finals = [v for v in releases if "-" not in v]
        if finals or releases:
            latest.append((finals or releases)[0])
    return newest_first(latest)


_documents: dict[str, tuple[tuple, bytes]] = {}


def _catalogue_document(name: str, build: Callable[[], object]) -> HttpResponse:
    """The JSON of `build()`, kept under the catalogue generation (read before the rows
    `build()` reads) and the settings the documents show."""
    key = (
        generation.current().catalogue,
        settings.ASU_UPSTREAM_URL,
        settings.ASU_SERVER_VERSION,
        settings.ASU_CONTACT,
        settings.ASU_ALLOW_DEFAULTS,
        tuple(settings.ASU_REPOSITORY_ALLOW_LIST),
        settings.ASU_MAX_ROOTFS_SIZE_MB,
        settings.ASU_MAX_DEFAULTS_LENGTH,
    )
    kept = _documents.get(name)
    if kept is not None and kept[0] == key:
        body = kept[1]
    else:
        body = json.dumps(build(), separators=(",", ":")).encode()
        _documents[name] = (key, body)
    return HttpResponse(body, content_type="application/json")


def _overview() -> dict:
    branches = catalogue_branches()
    return {
        "latest": latest_versions(branches),
        "branches": {branch["name"]: branch for branch in branches},
        "upstream_url": settings.ASU_UPSTREAM_URL,
        "server": {
            "version": settings.ASU_SERVER_VERSION,
            "contact": settings.ASU_CONTACT,
            "allow_defaults": settings.ASU_ALLOW_DEFAULTS,
            "repository_allow_list": settings.ASU_REPOSITORY_ALLOW_LIST,
            "max_custom_rootfs_size_mb": settings.ASU_MAX_ROOTFS_SIZE_MB,
            "max_defaults_length": settings.ASU_MAX_DEFAULTS_LENGTH,
        },
    }


@safe_methods_only
def overview(request: HttpRequest) -> HttpResponse:
    return _catalogue_document("overview", _overview)


@safe_methods_only
def branches(request: HttpRequest) -> HttpResponse:
    return _catalogue_document("branches", catalogue_branches)


@safe_methods_only
def latest(request: HttpRequest) -> HttpResponse:
    return _catalogue_document("latest", lambda: {"latest": latest_versions(catalogue_branches())})


# index.json and {arch}-index.json ------------------------------------------------------


class KeptBytes:
    """The newest index documents of this process, within a memory budget, in front of
    the cache: the local-memory cache pickles, a copy of 100-300 KB per request. Keys
    hold the version's `synced_at`, so an entry is never stale, only unused."""

    def __init__(self, budget: int) -> None:
        self.budget, self.size = budget, 0
        self.entries: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        body = self.entries.get(key)
        if body is not None:
            with self.lock:
                if key in self.entries:
                    self.entries.move_to_end(key)
        return body

    def put(self, key: str, body: bytes) -> None:
        with self.lock:
            old = self.entries.pop(key, None)
            self.size -= len(old) if old is not None else 0
            while self.entries and self.size + len(body) > self.budget:
                self.size -= len(self.entries.popitem(last=False)[1])
            self.entries[key] = body
            self.size += len(body)


_index_bytes = KeptBytes(INDEX_BYTES)


def _cached_document(key: str, build: Callable[[], object | None]) -> bytes | None:
    """The JSON of `build()`, kept in this process and in the cache under `key`; None
    if build() found nothing."""
    body = _index_bytes.get(key)
    if body is not None:
        return body
    body = cache.get(key)
    if body is None:
        document = build()
        if document is None:
            return None
        body = json.dumps(document, separators=(",", ":")).encode()
        cache.set(key, body, CACHE_SECONDS)
    _index_bytes.put(key, body)
    return body


_located: dict[tuple, tuple[int, list[tuple]]] = {}
LOCATED_LIMIT = 4096


def _locate(sql: str, params: list[str]) -> list[tuple]:
    """The rows of a locating query, kept under the catalogue generation (read before
    them): one primary-key query per request instead of the three-table one."""
    catalogue = generation.current().catalogue
    key = (sql, *params)
    kept = _located.get(key)
    if kept is not None and kept[0] == catalogue:
        return kept[1]
    rows = fetch_prepared(sql, params)
    if len(_located) >= LOCATED_LIMIT:
        _located.clear()  # a crawler asking for every folder; the next requests refill it
    _located[key] = (catalogue, rows)
    return rows


def _generation(synced_at: object) -> str:
    """A version's `synced_at` as a cache key part: a datetime, or text on SQLite."""
    return str(synced_at).replace(" ", "T") if synced_at else "-"


def _in_folder(rows: list[tuple], directory: str) -> tuple | None:
    """The row whose version folder (its branch path with the version name, the last two
    columns) is `directory`: "releases/24.10.1" names the version, "snapshots" the branch."""
    return next((r for r in rows if r[-1].format(version=r[-2]) == directory), None)


@functools.cache
def _locate_sql() -> str:
    """A target of an enabled version, by target name and version folder (`_in_folder`)."""
    return (
        f"SELECT t.id, t.arch_packages, v.synced_at, v.name, br.path "
        f"FROM {Target._meta.db_table} t, {Version._meta.db_table} v, "
        f"{Branch._meta.db_table} br "
        "WHERE t.version_id = v.id AND v.branch_id = br.id AND br.enabled AND t.name = %s "
        "AND (v.name = %s OR br.path = %s)"
    )


@functools.cache
def _locate_version_sql() -> str:
    """An enabled version by its folder (`_in_folder`)."""
    return (
        f"SELECT v.id, v.synced_at, v.name, br.path "
        f"FROM {Version._meta.db_table} v, {Branch._meta.db_table} br "
        "WHERE v.branch_id = br.id AND br.enabled AND (v.name = %s OR br.path = %s)"
    )


@safe_methods_only
def target_index(request: HttpRequest, directory: str, target: str, subtarget: str) -> HttpResponse:
    """index.json of a target: its own packages and kmods, {name: version}.

    owut and auc fetch it on every upgrade check: the target and its version's `synced_at`
    are kept under the catalogue generation, the document in this process's memory."""
    name = f"{target}/{subtarget}"
    rows = _locate(_locate_sql(), [name, directory.rsplit("/", 1)[-1], directory])
    found = _in_folder(rows, directory)
    if found is None:
        return not_found(f"unknown version folder or target: {directory} {name}")
    pk, arch, synced_at = found[:3]
    body = _cached_document(
        f"asu:target-index:{pk}:{_generation(synced_at)}",
        lambda: {
            "architecture": arch,
            "packages": dict(
                Package.objects.of_target(Target(pk=pk))
                .order_by("name", "index_id")
                .values_list("name", "version")
            ),
        },
    )
    return HttpResponse(body, content_type="application/json")


@safe_methods_only
def arch_index(request: HttpRequest, directory: str, arch: str) -> HttpResponse:
    """{arch}-index.json: the packages of every feed of an architecture, {name: version}.
    As index.json: the version is kept under the catalogue generation, the document in memory."""
    rows = _locate(_locate_version_sql(), [directory.rsplit("/", 1)[-1], directory])
    found = _in_folder(rows, directory)
    if found is None:
        return not_found(f"unknown version folder: {directory}")
    version = Version(pk=found[0], name=found[2])

    def build() -> dict | None:
        packages = dict(
            Package.objects.of_arch_feeds(version, arch)
            .order_by("name", "index_id")
            .values_list("name", "version")
        )
        if (
            not packages
            and not PackageIndex.objects.filter(
                version=version, kind=PackageIndex.Kind.FEED, arch_packages=arch
            ).exists()
        ):
            return None
        return packages

    body = _cached_document(f"asu:arch-index:{version.pk}:{arch}:{_generation(found[1])}", build)
    if body is None:
        return not_found(f"version {version} has no packages for architecture {arch}")
    return HttpResponse(body, content_type="application/json")
