"""Kept answers given before Django (builds.fastpath): the same bytes on the wire as
Django's, counted alike, and everything the wrapper cannot vouch for left to Django."""

import io
import json

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection

from builds import fastpath
from builds.fastpath import SHAPES_PER_ANSWER, KeptAnswers
from builds.memory import memory
from tally import counting
from targets import generation
from tests.builds.test_request_cache import (  # noqa: F401 (a fixture)
    ARCHER,
    another_session,
    catalogue,
    committed_catalogue,
    kept_build,
    notification_delivered,
    postgresql_only,
)


@pytest.fixture(autouse=True)
def _no_revalidation(monkeypatch) -> None:
    """The listener's values are trusted for a second; a slow machine must not send a
    request to Django here for that (tests/builds/test_request_cache.py tests it)."""
    monkeypatch.setattr(generation, "REVALIDATE_SECONDS", 600.0)


class CountingDjango:
    """Django's WSGI application, counting the requests that reach it."""

    def __init__(self) -> None:
        self.django = WSGIHandler()
        self.calls = 0

    def __call__(self, environ: dict, start_response):
        self.calls += 1
        return self.django(environ, start_response)


@pytest.fixture
def django_app(settings) -> CountingDjango:
    """Behind a proxy that says https, with HSTS: both read as the middleware loads."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600
    return CountingDjango()


@pytest.fixture
def app(django_app) -> KeptAnswers:
    fastpath.documents.clear()  # kept by the module, as in a server process
    return KeptAnswers(django_app)


def call(app, method: str, path: str, body: bytes = b"", query: str = "", **headers: str):
    """(status line, headers, body) of one request through a WSGI application."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/json"
    environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    sent = []
    result = app(
        environ, lambda status, header_list, exc_info=None: sent.append((status, header_list))
    )
    try:
        content = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return sent[0][0], list(sent[0][1]), content


BODY = json.dumps({**ARCHER, "packages": ["luci"], "client": "owut/2026.04.09"}).encode()
SHAPES = [
    ("GET", {}),
    ("HEAD", {}),
    ("GET", {"origin": "https://firmware-selector.openwrt.org"}),
    ("GET", {"x_forwarded_proto": "https"}),
    ("POST", {}),
    ("POST", {"origin": "https://firmware-selector.openwrt.org", "user_agent": "luci"}),
]


@pytest.fixture
def kept(client, committed_catalogue, app) -> str:  # noqa: F811
    """The path polling a finished build whose answer is kept, its request's bytes
    answered once (through Django), and the listener vouching."""
    _body, poll = kept_build(client)
    assert call(app, "POST", "/api/v1/build", BODY)[0] == "200 OK"
    assert generation.known_without_round_trip() is not None
    return poll


@pytest.mark.parametrize(("method", "headers"), SHAPES)
def test_an_answer_given_before_django_is_the_one_django_gave(
    app, django_app, kept, method, headers
):
    path, body = (kept, b"") if method != "POST" else ("/api/v1/build", BODY)
    through_django = call(app, method, path, body, **headers)
    calls = django_app.calls

    again = call(app, method, path, body, **headers)

    assert django_app.calls == calls  # answered before Django
    assert again == through_django
    status, header_list, content = again
    assert status == "200 OK" and json.loads(content)["detail"] == "done"
    sent = {name.lower(): value for name, value in header_list}
    assert {"x-imagebuilder-status", "x-content-type-options", "content-length"} <= set(sent)
    if "origin" in headers:
        assert sent["access-control-allow-origin"] == "*"
    if "x_forwarded_proto" in headers:
        assert "strict-transport-security" in sent


def test_answers_given_before_django_are_counted_as_django_counts_them(app, kept):
    counting.clear()
    for _ in range(3):  # the first through Django, then before it
        call(app, "GET", kept)
        call(app, "POST", "/api/v1/build", BODY)

    totals = counting._totals
    poll = (("endpoint", "api-build-status"), ("method", "GET"), ("status", 200))
    post = (("endpoint", "api-build"), ("method", "POST"), ("status", 200))
    assert totals[("asu_http_requests_total", poll)] == 3
    assert totals[("asu_http_requests_total", post)] == 3
    hits = (("client", "owut"), ("outcome", "cache_hit"))
    assert totals[("asu_build_requests_total", hits)] == 3


@postgresql_only
def test_a_write_committed_elsewhere_sends_the_next_poll_to_django(app, django_app, kept):
    call(app, "GET", kept)
    call(app, "GET", kept)
    calls = django_app.calls
    request_hash = kept.rsplit("/", 1)[1]

    another_session(
        "UPDATE builds_build SET status = 'queued' WHERE request_hash = %s", (request_hash,)
    )
    assert notification_delivered()
    status, _, content = call(app, "GET", kept)

    assert django_app.calls == calls + 1
    assert status.startswith("202") and json.loads(content)["detail"] == "queued"


@pytest.mark.parametrize(
    ("method", "path_suffix", "body", "query", "headers"),
    [
        ("GET", "", b"", "x=1", {}),  # a query string
        ("GET", "", b"", "", {"host": "evil.example"}),  # a Host Django refuses
        ("POST", "", b'{"version": "24.10.1"}', "", {}),  # bytes not answered before
        ("DELETE", "", b"", "", {}),
    ],
)
def test_what_the_wrapper_cannot_vouch_for_goes_to_django_every_time(
    app, django_app, kept, settings, method, path_suffix, body, query, headers
):
    settings.ALLOWED_HOSTS = ["testserver"]
    path = kept if method != "POST" else "/api/v1/build"
    for _ in range(2):
        calls = django_app.calls
        call(app, method, path + path_suffix, body, query, **headers)
        assert django_app.calls == calls + 1


@postgresql_only
def test_without_notifications_every_request_goes_to_django(app, django_app, kept, settings):
    settings.ASU_GENERATION_NOTIFICATIONS = False
    for _ in range(2):
        calls = django_app.calls
        call(app, "GET", kept)
        call(app, "POST", "/api/v1/build", BODY)
        assert django_app.calls == calls + 2


def test_inside_a_transaction_every_request_goes_to_django(client, catalogue, app, django_app):  # noqa: F811
    _body, poll = kept_build(client)
    assert connection.in_atomic_block
    for _ in range(2):
        calls = django_app.calls
        call(app, "GET", poll)
        assert django_app.calls == calls + 1


def test_the_shapes_kept_per_answer_are_bounded(app, django_app, kept):
    origins = [f"https://site{n}.example" for n in range(SHAPES_PER_ANSWER + 4)]
    for origin in origins:
        call(app, "GET", kept, origin=origin)
    request_hash = kept.rsplit("/", 1)[1]
    assert len(memory.answers[request_hash].wire) == SHAPES_PER_ANSWER

    calls = django_app.calls
    call(app, "GET", kept, origin=origins[-1])  # never kept: Django again
    call(app, "GET", kept, origin=origins[0])  # kept
    assert django_app.calls == calls + 1


# json/v1 documents ---------------------------------------------------------------------

DOCUMENT_PATHS = [
    "/json/v1/overview.json",
    "/json/v1/branches.json",
    "/json/v1/latest.json",
    "/json/v1/releases/24.10.1/targets/ath79/generic/index.json",
    "/json/v1/releases/24.10.1/targets/ath79/generic/tplink_archer-c7-v5.json",
]


@pytest.fixture
def vouched(committed_catalogue, client) -> None:  # noqa: F811
    client.get("/api/v1/build/0")  # a request of this process: the listener connects
    assert generation.known_without_round_trip() is not None


@pytest.mark.parametrize("path", DOCUMENT_PATHS)
def test_a_document_given_before_django_is_the_one_django_gave(app, django_app, vouched, path):
    through_django = call(app, "GET", path, origin="https://firmware-selector.openwrt.org")
    assert through_django[0] == "200 OK"
    calls = django_app.calls

    again = call(app, "GET", path, origin="https://firmware-selector.openwrt.org")

    assert django_app.calls == calls
    assert again == through_django


@postgresql_only
def test_a_catalogue_write_elsewhere_sends_the_next_document_to_django(app, django_app, vouched):
    before = json.loads(call(app, "GET", "/json/v1/overview.json")[2])
    call(app, "GET", "/json/v1/overview.json")
    calls = django_app.calls

    another_session("UPDATE targets_branch SET enabled = false WHERE name = '24.10'")
    assert notification_delivered()
    after = json.loads(call(app, "GET", "/json/v1/overview.json")[2])

    assert django_app.calls == calls + 1
    assert "24.10" in before["branches"] and "24.10" not in after["branches"]


def test_documents_are_counted_by_their_url_name(app, vouched):
    counting.clear()
    for _ in range(3):
        call(app, "GET", "/json/v1/overview.json")

    labels = (("endpoint", "overview"), ("method", "GET"), ("status", 200))
    assert counting._totals[("asu_http_requests_total", labels)] == 3


def test_a_missing_document_goes_to_django_every_time(app, django_app, vouched):
    for _ in range(2):
        calls = django_app.calls
        assert call(app, "GET", "/json/v1/releases/9.9.9/targets/x/y/index.json")[0].startswith(
            "404"
        )
        assert django_app.calls == calls + 1


def test_the_documents_kept_are_bounded_by_their_size(app, django_app, vouched, monkeypatch):
    overview = call(app, "GET", "/json/v1/overview.json")[2]
    monkeypatch.setattr(fastpath, "DOCUMENTS_BYTES", len(overview) * 2 + 10)
    fastpath.documents.clear()
    for path in DOCUMENT_PATHS:
        call(app, "GET", path)

    assert 0 < fastpath.documents.size <= fastpath.DOCUMENTS_BYTES
    assert len(fastpath.documents.entries) < len(DOCUMENT_PATHS)
