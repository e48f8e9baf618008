"""The answers of the build endpoints, rendered to bytes once.

Every answer is JSON with an integer `status` equal to the HTTP code and a string
`detail`, and carries `X-Imagebuilder-Status` and `X-Queue-Position`. A finished build's
answer never changes, so it is rendered once per process and kept (`builds.memory`).
"""

import json
import re
from datetime import UTC, datetime
from typing import NamedTuple

from django.http import HttpResponse

from asuproject.api_errors import error_body
from builds.errors import BuildRejected
from builds.memory import memory
from builds.models import Build
from builds.queue import RESULT_COLUMNS, queue_position

# The detail of a build that failed on packages names them, for auc's header.
MISSING_PREFIX = "Impossible package selection: missing ("


class Answer(NamedTuple):
    """An answer of the build endpoints, ready to send."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    reason: str | None = None


def encode(data: dict) -> bytes:
    # As DRF's JSONRenderer writes it: compact, UTF-8.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def error_answer(status: int, detail: str, title: str | None = None, headers: tuple = ()) -> Answer:
    """An error the contract's way; the build headers say `failed` and position 0."""
    return Answer(
        status,
        encode(error_body(status, detail, title)),
        (("X-Imagebuilder-Status", "failed"), ("X-Queue-Position", "0"), *headers),
    )


NOT_FOUND = error_answer(404, "could not find provided request hash")
INTERNAL_ERROR = error_answer(500, "internal server error")

# Seconds a client waits before asking again when a service of the server is down.
RETRY_AFTER = 30


def unavailable(detail: str) -> Answer:
    """503: a service the server needs (database, build queue, store) is down. Nothing
    is decided about the build, so no `X-Imagebuilder-Status`: clients take `failed` as
    final. `Retry-After` says when to ask again."""
    return Answer(
        503,
        encode(error_body(503, detail, "Service Unavailable")),
        (("Retry-After", str(RETRY_AFTER)),),
    )


UNSENT = unavailable(
    "The build is accepted but the build queue is unavailable; the server sends it "
    "when the queue is back. Request it again in a moment"
)


def respond(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, content_type="application/json", status=answer.status)
    if answer.reason:
        response.reason_phrase = answer.reason
    for name, value in answer.headers:
        response.headers[name] = value
    return response


# A header is not the place for 2000 names: proxies refuse headers of a few KB. The body's
# detail keeps the whole list.
UNKNOWN_PACKAGE_HEADER_NAMES = 50
UNKNOWN_PACKAGE_HEADER_BYTES = 1024


def unknown_package_header(names: list[str]) -> str:
    """`X-Unknown-Package`: the names joined, cut after UNKNOWN_PACKAGE_HEADER_NAMES names
    or UNKNOWN_PACKAGE_HEADER_BYTES bytes with "... and N more"."""
    shown: list[str] = []
    length = 0
    for name in names[:UNKNOWN_PACKAGE_HEADER_NAMES]:
        length += len(name) + 2
        if length > UNKNOWN_PACKAGE_HEADER_BYTES:
            break
        shown.append(name)
    if len(shown) == len(names):
        return ", ".join(names)
    return ", ".join(shown) + f", ... and {len(names) - len(shown)} more"


def rejected(exc: BuildRejected) -> Answer:
    headers = (("X-Unknown-Package", unknown_package_header(exc.unknown_packages)),)
    answer = error_answer(
        exc.status, exc.detail, title=exc.title, headers=headers if exc.unknown_packages else ()
    )
    if exc.status == 529:
        return answer._replace(reason="Site is overloaded")
    return answer


def status_answer(build: Build) -> Answer:
    """The build status: 202 queued or started, 200 done, 500 failed, 503 while its task
    could not be sent to the build queue. A finished build's
    answer is kept for the next polls; `build` may hold only the status columns when
    this process has kept it."""
    finished = build.status == Build.Status.DONE
    if finished:
        kept = memory.finished_answer(build.request_hash)
        if kept is not None:
            return kept
    else:
        # A row deleted and requested anew: what this process kept for it is over.
        memory.drop_answer(build.request_hash)
        if build.is_unsent():
            return UNSENT  # not queued for any worker yet: no queue position to give
    if build.status in (Build.Status.DONE, Build.Status.FAILED):
        missing = build.get_deferred_fields().intersection(RESULT_COLUMNS)
        if missing:
            build.refresh_from_db(fields=missing)
    answer = _render(build)
    if finished:
        memory.keep_answer(build, answer, len(answer.body))
    return answer


def _render(build: Build) -> Answer:
    common = {"request_hash": build.request_hash, "enqueued_at": _iso(build.enqueued_at)}
    position = 0
    headers: list[tuple[str, str]] = []
    if build.status == Build.Status.QUEUED:
        position = queue_position(build)
        step = "queued"
        body = {"status": 202, "detail": "queued", "queue_position": position, **common}
    elif build.status == Build.Status.STARTED:
        step = build.reported_step()
        body = {"status": 202, "detail": "started", "imagebuilder_status": step, **common}
    elif build.status == Build.Status.DONE:
        step = "done"
        body = {**_done_body(build), **common}
    else:
        step = "failed"
        body = {**_failed_body(build), **common}
        missing = _missing_packages(body["detail"])
        if missing:
            headers.append(("X-Unknown-Package", missing))
    headers += [("X-Imagebuilder-Status", step), ("X-Queue-Position", str(position))]
    return Answer(body["status"], encode(body), tuple(headers))


def _done_body(build: Build) -> dict:
    result = build.result or {}
    return {
        **result,
        "id": build.profile,
        "bin_dir": build.bin_dir,
        "build_at": result.get("build_at") or _iso(build.finished_at),
        "manifest": build.manifest,
        "build_cmd": build.build_cmd,
        "stdout": build.stdout,
        "stderr": build.stderr,
        "request": build.request,
        "images": build.images or result.get("images", []),
        "package_changes_applied": build.package_changes_applied,
        "status": 200,
        "detail": "done",
        "imagebuilder_status": "done",
    }


def _failed_body(build: Build) -> dict:
    return {
        "status": 500,
        "title": "Build failed",
        "detail": build.detail or "Error: the build failed",
        "imagebuilder_status": "failed",
        "stdout": build.stdout,
        "stderr": build.stderr,
        "build_cmd": build.build_cmd,
        "request": build.request,
    }


def _missing_packages(detail: str) -> str:
    start = detail.find(MISSING_PREFIX)
    if start < 0:
        return ""
    names = detail[start + len(MISSING_PREFIX) :].split(")", 1)[0]
    # Only name characters: the detail comes from build output, a header must not break.
    return unknown_package_header(re.findall(r"[\w.+-]+", names))


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
