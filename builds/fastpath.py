"""Kept answers given before Django: `KeptAnswers`, a WSGI wrapper around the project.

A repeated build request and a poll of a finished build are answered from this process's
memory (`builds.memory`), the generations known without a round trip to the database
server (`targets.generation.known_without_round_trip`: PostgreSQL's notifications, or the
SQLite file read in process). What is then left of their cost is Django's request
cycle: the handler and its signals, eleven
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

The json/v1 documents (`/json/v1/...`: overview, branches, latest, index.json,
{arch}-index.json, {profile}.json) are kept the same way, by path and shape, with the
catalogue's generation known before Django made them: each is made from the catalogue
(the package indexes' writes move their version, so the generation too) and the settings
alone. Only 200 answers are kept, within DOCUMENTS_BYTES.

Anything else goes to Django as before: another path or method, a query string, a body
not answered before, a catalogue or builds' generation that moved on, generations that
only a statement could tell (inside a transaction; on PostgreSQL without notifications
or while the listener is down), DISALLOWED_USER_AGENTS set.
"""

import io
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from django.conf import settings
from django.core.handlers.wsgi import get_path_info
from django.core.signals import setting_changed
from django.urls import Resolver404, ResolverMatch, resolve

from builds import urls
from builds.memory import KeptAnswer, body_key, memory
from builds.metrics import count_request, endpoint_label
from targets import generation

# The URL patterns of the build request and the poll, as PATH_INFO spells them.
BUILD = re.compile("/" + urls.BUILD.lstrip("^"))
POLL = re.compile("/" + urls.BUILD_STATUS.lstrip("^"))
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
DOCUMENTS = "/json/v1/"
DOCUMENTS_BYTES = 32 * 1024 * 1024

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class KeptDocument(NamedTuple):
    catalogue: int  # the catalogue's generation known before Django made it
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes
    endpoint: str  # the URL name, for counting (only 200 answers are kept)


class KeptDocuments:
    """json/v1 documents as Django answered them, by path and request shape, the least
    recently asked for dropped first beyond DOCUMENTS_BYTES."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[tuple, KeptDocument] = OrderedDict()
        self.size = 0

    def get(self, key: tuple, catalogue: int) -> KeptDocument | None:
        kept = self.entries.get(key)
        if kept is None or kept.catalogue != catalogue:
            return None
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
        return kept

    def put(self, key: tuple, document: KeptDocument) -> None:
        if len(document.body) > DOCUMENTS_BYTES // 8:
            return
        with self.lock:
            old = self.entries.pop(key, None)
            self.size -= len(old.body) if old else 0
            while self.entries and self.size + len(document.body) > DOCUMENTS_BYTES:
                self.size -= len(self.entries.popitem(last=False)[1].body)
            self.entries[key] = document
            self.size += len(document.body)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.size = 0


documents = KeptDocuments()


def _settings_changed(**kwargs: object) -> None:
    documents.clear()  # the documents show settings; answers' headers depend on them


setting_changed.connect(_settings_changed, dispatch_uid="builds.fastpath.settings")


class KeptAnswers:
    def __init__(self, application: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.application = application

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("QUERY_STRING") or settings.DISALLOWED_USER_AGENTS:
            return self.application(environ, start_response)
        if environ.get("PATH_INFO", "").startswith(DOCUMENTS):
            return self.document(environ, start_response)
        found = kept_answer(environ)
        if found is None:
            return self.application(environ, start_response)
        kept, endpoint, body = found
        shape = request_shape(environ)
        wire = kept.wire.get(shape)
        if wire is None:
            status_line, headers, chunks = self.through_django(environ, start_response)
            content = b"".join(chunks)
            answered = int(status_line.split(" ", 1)[0]) == kept.answer.status
            if answered and content == kept.answer.body and len(kept.wire) < SHAPES_PER_ANSWER:
                kept.wire[shape] = (status_line, headers)
            return chunks
        start_response(*wire)
        method = environ["REQUEST_METHOD"]
        user_agent = environ.get("HTTP_USER_AGENT", "")
        count_request(endpoint, method, kept.answer.status, body, user_agent)
        return [kept.answer.body]

    def document(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """A json/v1 document: kept with its status line and headers under the catalogue
        generation known before Django made it (every document is made from the
        catalogue and the settings alone)."""
        method = environ["REQUEST_METHOD"]
        catalogue = generation.known_without_round_trip() if method in ("GET", "HEAD") else None
        if catalogue is None:
            return self.application(environ, start_response)
        key = (environ["PATH_INFO"], request_shape(environ))
        kept = documents.get(key, catalogue.catalogue)
        if kept is not None:
            start_response(kept.status_line, kept.headers)
            count_request(kept.endpoint, method, 200, b"", "")
            return [kept.body]
        status_line, headers, chunks = self.through_django(environ, start_response)
        if status_line.startswith("200 "):
            endpoint = endpoint_label(resolve_path(get_path_info(environ)))
            body = b"".join(chunks)
            documents.put(
                key, KeptDocument(catalogue.catalogue, status_line, headers, body, endpoint)
            )
        return chunks

    def through_django(
        self, environ: Environ, start_response: StartResponse
    ) -> tuple[str, list, list[bytes]]:
        """Django's answer: its status line, headers and body, read whole."""
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
        return sent[0], sent[1], chunks


def kept_answer(environ: Environ) -> tuple[KeptAnswer, str, bytes] | None:
    """The kept answer to a poll of a finished build or a build request answered
    before, with the endpoint's URL name and the body (for counting); None for Django."""
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    if method in ("GET", "HEAD") and path.startswith("/api/v1/build/"):
        found = POLL.fullmatch(path)
        generations = generation.known_without_round_trip() if found else None
        if generations is None:
            return None
        kept = memory.kept_under(found["request_hash"], generations.builds)
        return None if kept is None else (kept, "api-build-status", b"")
    if method == "POST" and BUILD.fullmatch(path):
        generations = generation.known_without_round_trip()
        body = request_body(environ) if generations is not None else b""
        if generations is None or not body:
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


def resolve_path(path: str) -> ResolverMatch | None:
    try:
        return resolve(path)
    except Resolver404:
        return None


def request_shape(environ: Environ) -> tuple:
    proxy = settings.SECURE_PROXY_SSL_HEADER
    return (*(environ.get(key) for key in SHAPE_KEYS), environ.get(proxy[0]) if proxy else None)
