"""The statistics API: openwrt/asu's stats endpoints in its shapes, one JSON endpoint per
chart of /stats/, and their checks on query parameters. Counts are made the way the
server makes them (`tally.counting.save`, `builds.stats.record_build`)."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from builds import stats
from builds.models import Build
from tally import counting
from tally.counting import day_number, labels_text, save
from tally.models import DailyCount, Total
from tests.builds.catalogue import seed_branches

Kind = DailyCount.Kind
# Every answer, with real counts in it, is checked against the OpenAPI description.
pytestmark = pytest.mark.usefixtures("documented_api")


@pytest.fixture(autouse=True)
def nothing_counted_yet(db):
    counting.clear()
    seed_branches()


def days_ago(days: int) -> int:
    return day_number(datetime.now(UTC).date() - timedelta(days=days))


def counted(**counts_by_key) -> None:
    save(counts_by_key.get("daily", {}), counts_by_key.get("totals", {}))


def a_build(**fields) -> Build:
    defaults = {
        "request_hash": f"h{Build.objects.count()}",
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": "tplink_archer-c7-v5",
    }
    return Build.objects.create(**{**defaults, **fields})


def test_builds_per_day_has_thirty_days_of_requests_hits_and_failures(client):
    counted(
        daily={
            (days_ago(0), Kind.REQUESTS, "", ""): 10,
            (days_ago(0), Kind.CACHE_HITS, "", ""): 4,
            (days_ago(2), Kind.REQUESTS, "", ""): 3,
            (days_ago(2), Kind.FAILURES, "missing packages", ""): 1,
            (days_ago(40), Kind.REQUESTS, "", ""): 99,  # out of the window
        }
    )

    body = client.get("/api/v1/builds-per-day").json()

    assert len(body["labels"]) == 30
    assert body["labels"][-1] == datetime.now(UTC).date().isoformat() + "Z"
    data = {d["label"]: d["data"] for d in body["datasets"]}
    assert list(data) == ["Requests", "Cache-Hits", "Failures"]
    assert data["Requests"][-1] == 10 and data["Requests"][-3] == 3 and sum(data["Requests"]) == 13
    assert data["Cache-Hits"][-1] == 4 and data["Failures"][-3] == 1
    assert client.get("/api/v1/stats/builds-per-day").json() == body


def test_cache_hit_rate_is_a_percentage_per_day_and_null_without_requests(client):
    counted(
        daily={(days_ago(0), Kind.REQUESTS, "", ""): 8, (days_ago(0), Kind.CACHE_HITS, "", ""): 2}
    )

    data = client.get("/api/v1/stats/cache-hit-rate").json()["datasets"][0]["data"]

    assert data[-1] == 25.0
    assert data[:-1] == [None] * 29


def test_summary_counts_the_queue_and_the_builds_of_the_last_24_hours(client):
    a_build(sent_at=timezone.now())
    a_build(sent_at=timezone.now())
    a_build()  # never reached the broker: waits for no worker
    now = datetime.now(UTC)
    this_hour = f"{now.hour:02d}"
    earlier_hour = f"{(now.hour + 1) % 24:02d}"
    counted(
        daily={
            (days_ago(0), Kind.BUILDS, this_hour, ""): 5,
            # Yesterday, one hour after now's: 23 hours ago, in; now's hour yesterday: out.
            (days_ago(1), Kind.BUILDS, earlier_hour, ""): 2 if now.hour < 23 else 0,
            (days_ago(1), Kind.BUILDS, this_hour, ""): 7,
        }
    )

    body = client.get("/api/v1/stats/summary").json()

    expected = 5 + (2 if now.hour < 23 else 0)
    assert body == {"queue_length": 2, "builds_24h": expected}


def test_builds_by_version_is_weekly_by_branch_or_by_version_of_a_branch(client):
    counted(
        daily={
            (days_ago(0), Kind.VERSIONS, "24.10.1", "24.10"): 3,
            (days_ago(1), Kind.VERSIONS, "24.10.0", "24.10"): 2,
            (days_ago(20), Kind.VERSIONS, "23.05.5", "23.05"): 4,
        }
    )

    by_branch = client.get("/api/v1/builds-by-version").json()
    by_version = client.get("/api/v1/builds-by-version?branch=24.10").json()

    assert len(by_branch["labels"]) == 26
    totals = {d["label"]: sum(d["data"]) for d in by_branch["datasets"]}
    assert totals == {"23.05": 4, "24.10": 5}
    assert by_branch["datasets"][1]["data"][-1] == 5  # this week
    assert {d["label"]: sum(d["data"]) for d in by_version["datasets"]} == {
        "24.10.0": 2,
        "24.10.1": 3,
    }


def test_top_packages_ranks_the_most_requested_and_filters_by_branch(client):
    counted(
        daily={
            (days_ago(0), Kind.PACKAGES, "luci", "24.10"): 5,
            (days_ago(3), Kind.PACKAGES, "luci", "23.05"): 4,
            (days_ago(0), Kind.PACKAGES, "htop", "24.10"): 2,
            (days_ago(0), Kind.PACKAGES, "tcpdump", "24.10"): 3,
        }
    )

    top = client.get("/api/v1/top-packages?n=2").json()
    branch = client.get("/api/v1/top-packages?branch=24.10").json()

    assert top == {"packages": [{"name": "luci", "count": 9}, {"name": "tcpdump", "count": 3}]}
    assert [p["name"] for p in branch["packages"]] == ["luci", "tcpdump", "htop"]
    assert branch["packages"][0]["count"] == 5


@pytest.mark.parametrize("query", ["n=0", "n=101", "n=ten", "branch=no%20spaces"])
def test_top_packages_refuses_a_parameter_out_of_range_with_422(client, query):
    response = client.get(f"/api/v1/top-packages?{query}")

    assert response.status_code == 422
    body = response.json()
    assert body["status"] == 422
    assert isinstance(body["detail"], str)
    assert body["detail"].startswith(query.split("=")[0] + ":")


def test_each_top_list_has_its_endpoint(client):
    day = days_ago(1)
    counted(
        daily={
            (day, Kind.VERSIONS, "24.10.1", "24.10"): 2,
            (day, Kind.TARGETS, "ath79/generic", ""): 2,
            (day, Kind.PROFILES, "generic", "x86/64"): 1,
            (day, Kind.CLIENTS, "luci", ""): 6,
            (day, Kind.CLIENTS, "auc", ""): 1,
            (day, Kind.FAILURES, "missing packages", ""): 1,
        }
    )

    get = lambda path: client.get(f"/api/v1/stats/{path}").json()  # noqa: E731

    assert get("versions") == {"versions": [{"name": "24.10.1", "count": 2}]}
    assert get("targets") == {"targets": [{"name": "ath79/generic", "count": 2}]}
    assert get("profiles") == {"profiles": [{"name": "generic", "target": "x86/64", "count": 1}]}
    assert get("clients") == {
        "clients": [{"name": "luci", "count": 6}, {"name": "auc", "count": 1}]
    }
    assert get("failure-reasons") == {"failure_reasons": [{"name": "missing packages", "count": 1}]}


def test_a_finished_build_is_counted_by_its_worker(client):
    started = timezone.now() - timedelta(seconds=25)
    done = a_build(started_at=started, request={"packages": ["luci", "htop", "-ppp"]})
    failed = a_build(started_at=started, target="x86/64", profile="generic")

    stats.record_build(done, False, "", started + timedelta(seconds=25))
    stats.record_build(failed, True, "Impossible package selection: missing (foo)", timezone.now())

    assert [p["name"] for p in stats.top(Kind.PACKAGES)] == ["htop", "luci"]
    assert stats.top(Kind.PACKAGES, detail="24.10")[0]["count"] == 1
    assert stats.top(Kind.FAILURES) == [{"name": "missing packages", "count": 1}]
    assert stats.build_durations() == [
        {"target": "ath79/generic", "builds": 1, "median": 25.0, "p90": 29.0}
    ]
    assert sum(stats.summary().values()) == 2
    finished = Total.objects.get(
        name="asu_builds_finished_total",
        labels=labels_text((("status", "failed"), ("target", "x86/64"))),
    )
    assert finished.value == 1


def test_durations_give_median_and_90th_percentile_per_target(client):
    day = days_ago(0)
    counted(
        daily={
            (day, Kind.DURATIONS, "x86/64", "10.0"): 5,
            (day, Kind.DURATIONS, "x86/64", "20.0"): 5,
            (day, Kind.DURATIONS, "ath79/generic", "+Inf"): 1,
            (day, Kind.DURATIONS, "ath79/generic", "900.0"): 1,
        }
    )

    targets = client.get("/api/v1/stats/build-durations").json()["targets"]

    assert targets == [
        {"target": "x86/64", "builds": 10, "median": 10.0, "p90": 18.0},
        {"target": "ath79/generic", "builds": 2, "median": 900.0, "p90": 900.0},
    ]


def test_the_stats_endpoints_are_in_the_openapi_schema():
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]

    for path in (
        "/api/v1/stats/summary",
        "/api/v1/builds-per-day",
        "/api/v1/builds-by-version",
        "/api/v1/top-packages",
        "/api/v1/stats/cache-hit-rate",
        "/api/v1/stats/build-durations",
        "/api/v1/stats/clients",
        "/api/v1/stats/failure-reasons",
    ):
        assert "get" in paths[path], path
    parameters = paths["/api/v1/top-packages"]["get"]["parameters"]
    assert {p["name"] for p in parameters} == {"n", "branch"}


def test_the_counts_have_readable_names():
    row = DailyCount(day=date(2026, 11, 3), kind=Kind.PACKAGES, key="luci", detail="24.10", count=4)
    total = Total(name="asu_builds_queued_total", labels="{}", value=3)

    assert str(row) == "2026-11-03: package luci 24.10 = 4"
    assert str(total) == "asu_builds_queued_total{} = 3"


def test_the_stats_page_says_when_nothing_was_counted(client):
    page = client.get("/stats/")

    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("Nothing counted yet.") == 9
    assert 'href="/stats/" aria-current="page"' in html
