"""Kept answers given before Django: `KeptAnswers`, a WSGI wrapper around the project.

A repeated build request and a poll of a finished build are answered from this process's
memory (`builds.memory`) with no statement sent (`targets.generation.vouched`). What is
then left of their cost is Django's request cycle: the handler and its signals, eleven
middleware, URL resolving and DRF, two to three times the work of the answer itself
(BENCHMARKS.md). So this wrapper answers them in front of Django, with the very status
line, headers and body Django gave:

- The body is the kept answer's bytes.
- The status line and headers are those Django sent for the same answer to a request of
  the same shape (`shape`): what the middleware read to choose headers (method, Host,
  Origin, scheme and the proxy's headers). The first request of each shape for each
  kept answer goes through Django; its status line and headers are kept with the answer
  if Django answered it with the kept bytes. A refused Host, a redirect to https or any
  other answer is never kept, so such requests always go to Django.
- Each answer is counted as `CountRequestsMiddleware` counts it.

Anything else goes to Django as before: another path or method, a query string, a body
not answered before, a catalogue or builds' generation that moved on, a listener that
cannot vouch (SQLite, a transaction, no notifications), DISALLOWED_USER_AGENTS set.
"""

import io
import re
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

from builds.memory import KeptAnswer, body_key, memory
from builds.metrics import count_request
from targets import generation

POLL = re.compile(r"/api/v1/build/([^/]+?)/?")
BUILD = "/api/v1/build"
# What the middleware read to choose an answer's headers; a request that differs from
# another in nothing else gets the same status line and headers.
SHAPE_KEYS = (
    "REQUEST_METHOD",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "HTTP_ORIGIN",
    "wsgi.url_scheme",
    "HTTPS",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
)
SHAPES_PER_ANSWER = 16  # enough for the clients; bounds what odd Hosts or Origins can add

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class KeptAnswers:
    def __init__(self, application: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.application = application

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        found = kept_answer(environ)
        if found is None:
            return self.application(environ, start_response)
        kept, endpoint, body = found
        shape = request_shape(environ)
        wire = kept.wire.get(shape)
        if wire is None:
            return self.through_django(environ, start_response, kept, shape)
        status_line, headers = wire
        start_response(status_line, headers)
        method = environ["REQUEST_METHOD"]
        count_request(endpoint, method, kept.answer.status, body, user_agent(environ))
        return [kept.answer.body]

    def through_django(
        self, environ: Environ, start_response: StartResponse, kept: KeptAnswer, shape: tuple
    ) -> Iterable[bytes]:
        """Django's answer, whose status line and headers are kept with the answer when
        it is the kept answer itself."""
        sent: list = []

        def keep_status(status: str, headers: list, exc_info: Any = None) -> Any:
            sent[:] = [status, list(headers)]
            return start_response(status, headers, exc_info)

        result = self.application(environ, keep_status)
        try:
            chunks = list(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        answered = sent and int(sent[0].split(" ", 1)[0]) == kept.answer.status
        if answered and b"".join(chunks) == kept.answer.body and len(kept.wire) < SHAPES_PER_ANSWER:
            kept.wire[shape] = (sent[0], sent[1])
        return chunks


def kept_answer(environ: Environ) -> tuple[KeptAnswer, str, bytes] | None:
    """The kept answer to a poll of a finished build or a build request answered
    before, with the endpoint's URL name and the body (for counting); None for Django."""
    method = environ["REQUEST_METHOD"]
    if environ.get("QUERY_STRING") or settings.DISALLOWED_USER_AGENTS:
        return None
    path = environ.get("PATH_INFO", "")
    if method in ("GET", "HEAD") and path.startswith("/api/v1/build/"):
        found = POLL.fullmatch(path)
        generations = generation.vouched() if found else None
        if generations is None:
            return None
        kept = memory.kept_under(found.group(1), generations.builds)
        return None if kept is None else (kept, "api-build-status", b"")
    if method == "POST" and path in (BUILD, BUILD + "/"):
        body = request_body(environ)
        generations = generation.vouched() if body else None
        if generations is None:
            return None
        kept = memory.kept_for_body(body_key(body), generations)
        return None if kept is None else (kept, "api-build", body)
    return None


def request_body(environ: Environ) -> bytes:
    """The request body when its length is given and within Django's limit, read and put
    back for Django; else b"" (Django reads it, or refuses it)."""
    length = environ.get("CONTENT_LENGTH", "")
    if not length.isdigit() or environ.get("HTTP_TRANSFER_ENCODING"):
        return b""
    size = int(length)
    if not 0 < size <= (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or size):
        return b""
    body = environ["wsgi.input"].read(size)
    environ["wsgi.input"] = io.BytesIO(body)
    return body if len(body) == size else b""


def request_shape(environ: Environ) -> tuple:
    proxy = settings.SECURE_PROXY_SSL_HEADER
    return (*(environ.get(key) for key in SHAPE_KEYS), environ.get(proxy[0]) if proxy else None)


def user_agent(environ: Environ) -> str:
    return environ.get("HTTP_USER_AGENT", "")
