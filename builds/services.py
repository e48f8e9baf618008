"""From a validated build request to a `Build` row and one queued task: the request is
resolved into its effective build (`builds.resolve`), found or queued (`builds.queue`),
and remembered for the next identical request (`builds.memory`)."""

from builds.memory import memory, remember_resolution
from builds.metrics import count_queued
from builds.models import Build
from builds.queue import get_or_queue
from builds.resolve import check_server_allows, effective_request, resolve_profile
from targets import generation


def request_build(
    data: dict, user_agent: str = "", shortcut: str | None = None
) -> tuple[Build, bool]:
    """Find or create the build for a validated request (see `BuildRequestSerializer`).

    Return the `Build` and whether this call queued it (a new build, or a failed one
    tried again after its failure TTL). Raise `BuildRejected` for requests the catalogue
    or the server's settings refuse. `shortcut` is the request's `shortcut_key()`: the
    answer is remembered under it for `known_build()`.
    """
    check_server_allows(data)
    # Read before the catalogue is: a write committed after this read moves it on, and
    # the shortcut remembered under it below is not taken then.
    catalogue = generation.current().catalogue
    profile, by_name = resolve_profile(data["version"], data["target"], data["profile"])
    effective = effective_request(data, profile, user_agent)
    request_hash = effective.request_hash
    # The result columns are not needed when this process has the answer already.
    has_answer = memory.finished_answer(request_hash) is not None
    build, queued = get_or_queue(request_hash, effective.build_fields(), results=not has_answer)
    if queued:
        count_queued()
    # A target's only `generic` profile answers to any name: no shortcut for those.
    if shortcut and by_name:
        remember_resolution(shortcut, request_hash, catalogue)
    return build, queued
