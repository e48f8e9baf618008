"""The public HTML pages: what this server is, the images it built, and the catalogue.

Function views that read a few columns each and hand plain data to the templates;
every page costs a small, fixed number of queries (the tests pin them).
"""

import shlex
from datetime import timedelta
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from builds.models import HASH_PREFIX, SYSUPGRADE_TYPES, Build
from builds.queue import queue_position
from targets.models import (
    Branch,
    Profile,
    Target,
    Version,
    device_title,
    image_defaults,
    newest_first,
    version_sort_key,
)

PAGE_SIZE = 50
STDERR_TAIL_LINES = 80
FILTER_KEYS = ("version", "target", "profile", "status", "q")
# The columns the images table shows; the big ones (manifest, stdout) stay in the database.
LIST_COLUMNS = (
    "request_hash",
    "version",
    "target",
    "profile",
    "client",
    "status",
    "imagebuilder_status",
    "enqueued_at",
)
# Request fields in the order a person reads them; others are shown after these.
REQUEST_FIELDS = (
    "version",
    "version_code",
    "target",
    "profile",
    "packages",
    "packages_versions",
    "diff_packages",
    "filesystem",
    "rootfs_size_mb",
    "repositories",
    "repositories_mode",
    "repository_keys",
    "defaults",
    "client",
)
# What the device page's build form sends as `client`, so its builds are told apart.
WEB_CLIENT = "asu-web/1"
LATEST_IMAGES = 6
# Finished builds read to find LATEST_IMAGES distinct devices: one indexed read.
LATEST_SCAN = 100
SEARCH_LIMIT = 200


def home(request: HttpRequest) -> HttpResponse:
    counts = Build.objects.aggregate(
        done=Count("pk", filter=Q(status=Build.Status.DONE)),
        queued=Count("pk", filter=Q(status=Build.Status.QUEUED)),
        started=Count("pk", filter=Q(status=Build.Status.STARTED)),
    )
    branches = _enabled_branches()
    context = {
        "nav": "home",
        "counts": counts,
        "branches": branches,
        "version_count": sum(len(branch.version_names) for branch in branches),
        "latest": latest_images(LATEST_IMAGES),
        "server_url": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, "builds/home.html", context)


def latest_images(count: int) -> list[dict]:
    """The newest finished builds, one per device and version: many requests for one
    popular device differ only in their packages, and would fill the list alone."""
    rows = (
        Build.objects.filter(status=Build.Status.DONE)
        .order_by("-enqueued_at", "-pk")
        .values("request_hash", "version", "target", "profile", "finished_at", "result__titles")
    )[:LATEST_SCAN]
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = (row["version"], row["target"], row["profile"])
        if key not in latest:
            row["title"] = device_title(row.pop("result__titles")) or row["profile"]
            latest[key] = row
            if len(latest) == count:
                break
    return list(latest.values())


def build_list(request: HttpRequest) -> HttpResponse:
    filters = _list_filters(request.GET)
    builds = _filter_builds(Build.objects.only(*LIST_COLUMNS), filters)
    page = Paginator(builds.order_by("-enqueued_at", "-pk"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {
        "nav": "builds",
        "page": page,
        "filters": filters,
        "filtered": any(filters.values()),
        "statuses": Build.Status.choices,
        "versions": newest_first(Version.objects.values_list("name", flat=True)),
        "targets": Target.objects.order_by("name").values_list("name", flat=True).distinct(),
    }
    return render(request, "builds/build_list.html", context)


def build_detail(request: HttpRequest, request_hash: str) -> HttpResponse:
    build = get_object_or_404(Build.objects.defer("stdout"), request_hash=request_hash)
    ahead = queue_position(build) if build.status == Build.Status.QUEUED else None
    context = {
        "nav": "builds",
        "build": build,
        "device": device_title(build.result.get("titles") if build.result else None),
        "builds_ahead": ahead,
        "duration": _duration(build),
        "request_rows": _request_rows(build.request),
        "images": _image_rows(build),
        "manifest": sorted(build.manifest.items()) if build.manifest else [],
        "build_cmd": _command_line(build.build_cmd),
        "stderr_tail": _tail(build.stderr, STDERR_TAIL_LINES),
    }
    return render(request, "builds/build_detail.html", context)


def version_list(request: HttpRequest) -> HttpResponse:
    versions = Version.objects.annotate(target_count=Count("targets")).only("name", "branch_id")
    branches = list(
        Branch.objects.filter(enabled=True).prefetch_related(
            Prefetch("versions", queryset=versions)
        )
    )
    for branch in branches:
        branch.version_rows = sorted(
            branch.versions.all(), key=lambda v: version_sort_key(v.name), reverse=True
        )
    return render(request, "builds/version_list.html", {"nav": "targets", "branches": branches})


def target_list(request: HttpRequest, version: str) -> HttpResponse:
    version_row = get_object_or_404(
        Version.objects.select_related("branch"), name=version, branch__enabled=True
    )
    targets = list(
        version_row.targets.annotate(profile_count=Count("profiles"))
        .only("name", "arch_packages", "version_code", "version_id")
        .order_by("name")
    )
    for target in targets:
        board, _, subtarget = target.name.partition("/")
        target.url = (
            reverse("pages:profiles", args=[version_row.name, board, subtarget])
            if board and subtarget
            else ""
        )
    context = {"nav": "targets", "version": version_row, "targets": targets}
    return render(request, "builds/target_list.html", context)


def profile_list(request: HttpRequest, version: str, board: str, subtarget: str) -> HttpResponse:
    target = get_object_or_404(
        Target.objects.select_related("version__branch").defer(
            "default_packages", "linux_kernel", "extra"
        ),
        version__name=version,
        version__branch__enabled=True,
        name=f"{board}/{subtarget}",
    )
    profiles = Profile.objects.filter(target=target).only(
        "name", "titles", "supported_devices", "target_id"
    )
    json_base = f"/json/v1/{target.version.path}/targets/{target.name}/"
    page_base = reverse("pages:profiles", args=[version, board, subtarget])
    rows = [
        {
            "name": profile.name,
            "url": page_base + quote(profile.name) + "/",
            "title": device_title(profile.titles),
            "supported_devices": profile.supported_devices,
            "json_url": json_base + quote(profile.name) + ".json",
        }
        for profile in profiles
    ]
    context = {"nav": "targets", "target": target, "profiles": rows}
    return render(request, "builds/profile_list.html", context)


def device(
    request: HttpRequest, version: str, board: str, subtarget: str, profile: str
) -> HttpResponse:
    """One device (a profile of a target) in every enabled version that has it, with the
    form that asks for an image of it (static/builds/build.js posts it to the API)."""
    target_name = f"{board}/{subtarget}"
    rows = list(
        Profile.objects.filter(
            name=profile, target__name=target_name, target__version__branch__enabled=True
        ).values(
            "title",
            "supported_devices",
            "device_packages",
            "images",
            "target__version__name",
            "target__default_packages",
            "target__arch_packages",
            "target__version_code",
        )
    )
    current = next((r for r in rows if r["target__version__name"] == version), None)
    if current is None:
        raise Http404(f"No profile {profile} of {target_name} in {version}")
    rows.sort(key=lambda r: version_sort_key(r["target__version__name"]), reverse=True)
    defaults = {
        r["target__version__name"]: image_defaults(
            r["target__default_packages"], r["device_packages"]
        )
        for r in rows
    }
    context = {
        "nav": "targets",
        "version": version,
        "target_name": target_name,
        "board": board,
        "subtarget": subtarget,
        "profile": profile,
        "device": current,
        "title": current["title"] or profile,
        "versions": list(defaults),
        "defaults": defaults,
        "image_types": sorted({i.get("type", "") for i in current["images"] or []} - {""}),
        "web_client": WEB_CLIENT,
        "selector_url": _selector_link(version, target_name, profile),
    }
    return render(request, "builds/device.html", context)


def search(request: HttpRequest) -> HttpResponse:
    """Devices by title or profile id, builds by the start of their request hash: one
    query each. A hash prefix that names exactly one build and no device opens it."""
    query = " ".join(request.GET.get("q", "").split())[:100]
    devices: list[dict] = []
    builds: list[Build] = []
    if query:
        if HASH_PREFIX.match(query.lower()):
            builds = list(
                Build.objects.filter(request_hash__startswith=query.lower())
                .only(*LIST_COLUMNS)
                .order_by("-enqueued_at", "-pk")[:PAGE_SIZE]
            )
        devices = _devices_titled(query)
        if len(builds) == 1 and not devices:
            return redirect("pages:build", builds[0].request_hash)
    context = {"nav": "search", "query": query, "devices": devices, "builds": builds}
    return render(request, "builds/search.html", context)


def _devices_titled(query: str) -> list[dict]:
    """The profiles matching `query`, one entry per device of a target, with the
    enabled versions that have it, newest first."""
    rows = (
        Profile.objects.filter(target__version__branch__enabled=True)
        .titled(query)
        .order_by("title", "name")
        .values_list("title", "name", "target__name", "target__version__name")
    )[:SEARCH_LIMIT]
    found: dict[tuple, dict] = {}
    for title, name, target_name, version in rows:
        entry = found.setdefault(
            (target_name, name),
            {"title": title or name, "profile": name, "target": target_name, "versions": []},
        )
        entry["versions"].append(version)
    for entry in found.values():
        entry["versions"] = newest_first(entry["versions"])
        board, _, subtarget = entry["target"].partition("/")
        entry["url"] = reverse(
            "pages:device", args=[entry["versions"][0], board, subtarget, entry["profile"]]
        )
    return list(found.values())


def _selector_link(version: str, target: str, profile: str) -> str:
    """The device on the configured Firmware Selector, which takes these three from the
    query string; "" when none is configured."""
    base = settings.ASU_FIRMWARE_SELECTOR_URL
    if not base:
        return ""
    return f"{base}?{urlencode({'version': version, 'target': target, 'id': profile})}"


def _enabled_branches() -> list[Branch]:
    versions = Version.objects.only("name", "branch_id")
    branches = list(
        Branch.objects.filter(enabled=True).prefetch_related(
            Prefetch("versions", queryset=versions)
        )
    )
    for branch in branches:
        branch.version_names = newest_first(v.name for v in branch.versions.all())
    return branches


def _list_filters(params: QueryDict) -> dict[str, str]:
    filters = {key: params.get(key, "").strip()[:200] for key in FILTER_KEYS}
    if filters["status"] not in Build.Status.values:
        filters["status"] = ""
    return filters


def _filter_builds(builds: QuerySet[Build], filters: dict[str, str]) -> QuerySet[Build]:
    for key in ("version", "target", "profile", "status"):
        if filters[key]:
            builds = builds.filter(**{key: filters[key]})
    if filters["q"]:
        builds = builds.matching(filters["q"])
    return builds


def _duration(build: Build) -> timedelta | None:
    if build.started_at and build.finished_at:
        return build.finished_at - build.started_at
    return None


def _request_rows(request_data: dict) -> list[dict]:
    """The request as label, kind and value, for a definition list."""
    if not isinstance(request_data, dict):
        return []
    names = [k for k in REQUEST_FIELDS if k in request_data]
    names += sorted(k for k in request_data if k not in REQUEST_FIELDS)
    rows = []
    for name in names:
        value = request_data[name]
        if value in (None, "", [], {}):
            continue
        if name == "defaults":
            # First-boot scripts often hold passwords and keys: say that one was sent,
            # never show it on a public page.
            value = f"a first-boot script of {len(str(value).encode())} bytes (not shown)"
        if isinstance(value, bool):
            rows.append({"name": name, "kind": "text", "value": "yes" if value else "no"})
        elif isinstance(value, list):
            rows.append({"name": name, "kind": "list", "value": [str(v) for v in value]})
        elif isinstance(value, dict):
            items = sorted((str(k), str(v)) for k, v in value.items())
            rows.append({"name": name, "kind": "mapping", "value": items})
        else:
            rows.append({"name": name, "kind": "text", "value": str(value)})
    return rows


def _image_rows(build: Build) -> list[dict]:
    rows = []
    for image in build.images or []:
        if not isinstance(image, dict) or not image.get("name"):
            continue
        rows.append(
            {
                "name": image["name"],
                "type": image.get("type", ""),
                "for_upgrade": image.get("type") in SYSUPGRADE_TYPES,
                "filesystem": image.get("filesystem", ""),
                "size": image.get("size"),
                "sha256": image.get("sha256", ""),
                "url": f"/store/{quote(build.bin_dir)}/{quote(image['name'])}"
                if build.bin_dir
                else "",
            }
        )
    return rows


def _command_line(build_cmd: list) -> str:
    if not build_cmd:
        return ""
    if isinstance(build_cmd, list):
        return shlex.join(str(arg) for arg in build_cmd)
    return str(build_cmd)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:]) if text else ""
