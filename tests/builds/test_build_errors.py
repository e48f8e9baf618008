"""GET /api/v1/build-errors: the latest failures, read from the build table."""

import hashlib
from datetime import UTC, datetime

import pytest

from builds.models import Build
from tests.builds.catalogue import make_build

# Every answer is also checked against the OpenAPI description (tests/schema.py).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("documented_api")]


def failed(n: int, finished_at: datetime, detail: str, **fields) -> Build:
    return make_build(status=Build.Status.FAILED, finished_at=finished_at, detail=detail, **fields)


def test_it_says_when_nothing_failed(client):
    Build.objects.create(request_hash="a" * 64, version="24.10.1", status=Build.Status.DONE)

    response = client.get("/api/v1/build-errors")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == "No build errors recorded.\n"


def test_it_lists_failures_newest_first_with_a_summary(client):
    failed(1, datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC), "Error: Selected packages exceed")
    failed(
        2,
        datetime(2026, 3, 2, 8, 30, 0, tzinfo=UTC),
        "Error: Impossible package selection:\n  missing (foo)",
        version="SNAPSHOT",
        target="x86/64",
        profile="generic",
    )

    lines = client.get("/api/v1/build-errors").content.decode().splitlines()

    assert lines == [
        "Build Errors: 2 entries",
        "Time range: 2026-03-01 10:00:05 to 2026-03-02 08:30:00",
        "",
        "Recent errors:",
        "-" * 60,
        "2026-03-02 08:30:00 SNAPSHOT:x86/64:generic "
        "Error: Impossible package selection: missing (foo)",
        "2026-03-01 10:00:05 24.10.1:ath79/generic:tplink_archer-c7-v5 "
        "Error: Selected packages exceed",
    ]


def test_it_masks_request_hashes_and_cuts_long_errors(client):
    request_hash = hashlib.sha256(b"secret").hexdigest()
    failed(1, datetime(2026, 3, 1, tzinfo=UTC), f"Error: no files in {request_hash}/ " + "x" * 400)

    line = client.get("/api/v1/build-errors").content.decode().splitlines()[-1]

    assert request_hash not in line
    assert "Error: no files in <hash>/ xxx" in line
    error = line.split(" ", 3)[3]
    assert len(error) == 200


def test_it_gives_as_many_lines_as_asked(client):
    for n in range(5):
        failed(n, datetime(2026, 3, 1, 12, n, tzinfo=UTC), f"Error: number {n}")

    lines = client.get("/api/v1/build-errors?n=2").content.decode().splitlines()

    assert lines[0] == "Build Errors: 2 entries"
    assert lines[5:] == [
        "2026-03-01 12:04:00 24.10.1:ath79/generic:tplink_archer-c7-v5 Error: number 4",
        "2026-03-01 12:03:00 24.10.1:ath79/generic:tplink_archer-c7-v5 Error: number 3",
    ]


@pytest.mark.parametrize("n", ["0", "abc", "-1", "1001", "9" * 50])
def test_it_refuses_a_count_it_cannot_give(client, n):
    response = client.get(f"/api/v1/build-errors?n={n}")

    assert response.status_code == 422
    assert response.json()["detail"] == f"n must be a whole number from 1 to 1000, not '{n}'"
