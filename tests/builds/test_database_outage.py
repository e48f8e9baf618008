"""With the database down the build API answers 503 with Retry-After, never a build
that `failed`, and it recovers without a restart: a connection the database dropped is
replaced before it is used, and the database coming back is simply used again."""

import socket
import uuid
from wsgiref.util import setup_testing_defaults

import pytest
import requests
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, connections
from django.utils import timezone

from builds.models import Build

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def drop_other_connections() -> int:
    """What a database restart does to the server's persistent connections."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def a_queued_build() -> Build:
    return Build.objects.create(
        request_hash=uuid.uuid4().hex,
        version="24.10.1",
        target="ath79/generic",
        profile="tplink_archer-c7-v5",
        sent_at=timezone.now(),
    )


def wsgi_get(path: str) -> int:
    """GET `path` through Django's WSGI handler as a server runs it: the request signals
    open and close database connections as in production (the test client skips that)."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "HTTP_HOST": "localhost"}
    setup_testing_defaults(environ)
    statuses = []
    response = WSGIHandler()(environ, lambda status, headers: statuses.append(status))
    response.close()  # request_finished
    return int(statuses[0].split()[0])


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="terminates PostgreSQL sessions")
def test_a_connection_the_database_dropped_is_replaced_before_use():
    row = a_queued_build()
    path = f"/api/v1/build/{row.request_hash}"
    assert wsgi_get(path) == 202  # the server keeps its connection (CONN_MAX_AGE)
    pid = connection.connection.info.backend_pid
    other = connections.create_connection("default")
    with other.cursor() as cursor:
        # As after a restart: the session has ended by the time the next request comes.
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    other.close()

    # The very next poll is answered: the dead connection is found and replaced first.
    assert wsgi_get(path) == 202
    assert connection.connection.info.backend_pid != pid


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's own check")
def test_a_healthy_connection_is_reused_without_a_round_trip(monkeypatch):
    row = a_queued_build()
    path = f"/api/v1/build/{row.request_hash}"
    assert wsgi_get(path) == 202
    pid = connection.connection.info.backend_pid

    def select_one() -> bool:
        raise AssertionError("the health check sent SELECT 1")

    monkeypatch.setattr(connection, "is_usable", select_one)
    assert wsgi_get(path) == 202
    assert connection.connection.info.backend_pid == pid


def test_polls_and_requests_answer_503_while_the_database_is_down(live_server):
    row = a_queued_build()
    url = f"{live_server.url}/api/v1/build/{row.request_hash}"
    assert requests.get(url, timeout=30).status_code == 202

    if connection.vendor == "postgresql":
        name, before = "PORT", connection.settings_dict["PORT"]
        connection.settings_dict[name] = str(closed_port())
        drop_other_connections()
    else:
        name, before = "NAME", connection.settings_dict["NAME"]
        connection.settings_dict[name] = f"/nonexistent/{uuid.uuid4().hex}/db.sqlite3"
    try:
        poll = requests.get(url, timeout=30)
        build = requests.post(
            f"{live_server.url}/api/v1/build",
            json={"version": "24.10.1", "target": "ath79/generic", "profile": "x"},
            timeout=30,
        )
        stats = requests.get(f"{live_server.url}/api/v1/stats", timeout=30)
    finally:
        connection.settings_dict[name] = before

    for answer in (poll, build, stats):
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) > 0
        assert "X-Imagebuilder-Status" not in answer.headers
        assert answer.json() == {
            "status": 503,
            "title": "Service Unavailable",
            "detail": "Temporarily unavailable: the database is unavailable. "
            "Please try again in a moment",
        }
    # Back: answered again, without a restart.
    assert requests.get(url, timeout=30).status_code == 202
