"""The json/v1 documents of the catalogue: a profile's {profile}.json, the revision
endpoint and the redirects of old paths. The documents that list packages (index.json,
{arch}-index.json, and overview.json, branches.json, latest.json with their package
changes) are in packages/documents.py.

No request waits on upstream: everything comes from the ORM in a few queries.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime

from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from rest_framework.request import Request

from asuproject.api_errors import error_body
from asuproject.api_views import JsonAPIView, safe_methods_only
from targets import schema
from targets.models import Profile, Target, Version


def json_response(data: object, status: int = 200) -> HttpResponse:
    return HttpResponse(
        json.dumps(data, separators=(",", ":")), content_type="application/json", status=status
    )


def json_error(status: int, title: str, detail: str) -> HttpResponse:
    return json_response(error_body(status, detail, title), status=status)


def not_found(detail: str) -> HttpResponse:
    return json_error(404, "Not Found", detail)


# Per version and target ------------------------------------------------------------------


def _find_target(directory: str, target: str) -> Target | None:
    """The target of the version in `directory`, in one query."""
    candidates = Target.objects.filter(name=target, version__branch__enabled=True).filter(
        Q(version__name=directory.rsplit("/", 1)[-1]) | Q(version__branch__path=directory)
    )
    # No ordering: the path picks one, and the default ordering's joins cost more than the query.
    candidates = candidates.select_related("version__branch").order_by()
    return next((t for t in candidates if t.version.path == directory), None)


def profile_document(target: Target, profile: Profile) -> dict:
    """profiles.json's top level with the profile's entry, its `id` and `build_at`."""
    top = {
        "arch_packages": target.arch_packages,
        "default_packages": target.default_packages,
        "target": target.name,
        "version_code": target.version_code,
        "version_number": target.version_number,
    }
    if target.linux_kernel:
        top["linux_kernel"] = target.linux_kernel
    if target.metadata_version is not None:
        top["metadata_version"] = target.metadata_version
    if target.source_date_epoch is not None:
        top["source_date_epoch"] = target.source_date_epoch
        built = datetime.fromtimestamp(target.source_date_epoch, tz=UTC)
    else:
        built = target.synced_at or datetime.now(tz=UTC)
    return {
        **target.extra,
        **top,
        **profile.as_profiles_json(),
        "id": profile.name,
        "build_at": built.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


@safe_methods_only
def profile_json(
    request: HttpRequest, directory: str, target: str, subtarget: str, profile: str
) -> HttpResponse:
    """{profile}.json, by profile id or board name."""
    found = _find_target(directory, f"{target}/{subtarget}")
    if found is None:
        return not_found(f"unknown version folder or target: {directory} {target}/{subtarget}")
    chosen = Profile.objects.filter(target=found).answering_to(profile)
    if chosen is None:
        return not_found(f"unknown profile {profile} of {found.version} {found.name}")
    return HttpResponse(
        json.dumps(profile_document(found, chosen), sort_keys=True, separators=(",", ":")),
        content_type="application/json",
    )


class RevisionView(JsonAPIView):
    @schema.revision
    def get(self, request: Request, version: str, target: str, subtarget: str) -> HttpResponse:
        """The revision of a version's target: {"revision": "r28427-6df0e3d02a"}."""
        name = f"{target}/{subtarget}"
        code = (
            Target.objects.filter(version__name=version, version__branch__enabled=True, name=name)
            .values_list("version_code", flat=True)
            .first()
        )
        if code is not None:
            return json_response({"revision": code})
        if not Version.objects.filter(name=version, branch__enabled=True).exists():
            return json_error(400, "Bad Request", f"Unsupported version: {version}")
        return json_error(
            400, "Bad Request", f"Unsupported target: {name}. Version {version} does not offer it."
        )


def redirect_to(path: str) -> Callable[[HttpRequest], HttpResponse]:
    """A permanent redirect for the paths older clients use; other methods than GET and
    HEAD answer a JSON 405."""

    @safe_methods_only
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponsePermanentRedirect(path)

    return view
