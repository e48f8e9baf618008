"""/metrics: Prometheus' text format, read from the database whichever process answers,
open unless ASU_METRICS_TOKEN is set."""

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from builds.stats import client_family
from tally import counting
from tally.models import DailyCount
from tests.builds.catalogue import fresh_start, seed_branches
from tests.builds.test_build_clients import poll_until_done


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, ((label, value), ...)): value} of a scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(base: str) -> dict[tuple, float]:
    response = requests.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return samples(response.text)


def build_post(status: str) -> tuple:
    labels = {"endpoint": "api-build", "method": "POST", "status": status}
    return ("asu_http_requests_total", tuple(sorted(labels.items())))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_counters_move_with_real_builds(upstream, live_server, start_worker):
    """A build queued while no worker runs shows in the queue; built, it shows as done,
    by target, with its duration; asked again, it is a cache hit."""
    fresh_start()
    seed_branches()
    counting.clear()
    body = {
        "client": "owut/2026.04.09",
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": "tplink,archer-c7-v5",
        "packages": ["luci"],
    }

    queued = requests.post(f"{live_server.url}/api/v1/build", json=body, timeout=120)
    assert queued.status_code == 202, queued.text
    waiting = scrape(live_server.url)
    start_worker(concurrency=1)
    assert poll_until_done(live_server.url, queued.json()["request_hash"]).status_code == 200
    again = requests.post(f"{live_server.url}/api/v1/build", json=body, timeout=30)
    assert again.status_code == 200
    after = scrape(live_server.url)

    assert waiting[("asu_queue_length", ())] == 1
    assert after[("asu_queue_length", ())] == 0
    assert waiting[("asu_builds", (("state", "queued"),))] == 1
    assert after[("asu_builds", (("state", "done"),))] == 1
    assert after[build_post("202")] == 1
    assert after[build_post("200")] == 1
    owut = (("client", "owut"),)
    assert after[("asu_build_requests_total", (*owut, ("outcome", "cache_hit")))] == 1
    assert after[("asu_build_requests_total", (*owut, ("outcome", "pending")))] == 1
    assert after[("asu_builds_queued_total", ())] == 1
    target = (("target", "ath79/generic"),)
    assert after[("asu_builds_finished_total", (("status", "done"), *target))] == 1
    assert after[("asu_build_duration_seconds_count", target)] == 1
    assert after[("asu_build_duration_seconds_bucket", (("le", "+Inf"), *target))] == 1
    assert after[("asu_build_duration_seconds_sum", target)] > 0
    assert after[("asu_imagebuilder_downloads_total", (("result", "ok"),))] == 1

    # The same builds, in the statistics.
    summary = requests.get(f"{live_server.url}/api/v1/stats/summary", timeout=30).json()
    assert summary == {"queue_length": 0, "builds_24h": 1}
    per_day = requests.get(f"{live_server.url}/api/v1/builds-per-day", timeout=30).json()
    assert [d["data"][-1] for d in per_day["datasets"]] == [2, 1, 0]
    packages = requests.get(f"{live_server.url}/api/v1/top-packages", timeout=30).json()
    assert {"name": "luci", "count": 1} in packages["packages"]


def test_metrics_are_open_without_a_token(client, db):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"# TYPE asu_queue_length gauge" in response.content


def test_metrics_want_the_bearer_token_when_one_is_set(client, db, settings):
    settings.ASU_METRICS_TOKEN = "s3cret-metrics"

    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    right = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in refused.json()["detail"]
    assert right.status_code == 200
    assert b"asu_builds_queued_total" in right.content


def test_a_refused_build_request_is_counted_by_endpoint_status_and_client(client, db):
    counting.clear()

    client.post("/api/v1/build", b"{not json", content_type="application/json")
    client.post(
        "/api/v1/build", {}, content_type="application/json", headers={"User-Agent": "auc/0.3.2-1"}
    )
    client.get("/api/v1/no-such-path")
    scraped = samples(client.get("/metrics").content.decode())

    assert scraped[build_post("422")] == 2
    assert scraped[("asu_build_requests_total", (("client", "auc"), ("outcome", "refused")))] == 1
    not_found = (("endpoint", "api-not-found"), ("method", "GET"), ("status", "404"))
    assert scraped[("asu_http_requests_total", not_found)] == 1
    assert DailyCount.objects.get(kind=DailyCount.Kind.REQUESTS).count == 2


@pytest.mark.parametrize(
    ("body", "user_agent", "family"),
    [
        (b'{"client": "luci/25.103.51521~2ac26e5", "version": "24.10.1"}', "Mozilla/5.0", "luci"),
        (b'{"version":"24.10.1","client":"owut/2026.04.09"}', "ucode-uclient", "owut"),
        (b'{"client": "ofs/4c2d1e3"}', "Mozilla/5.0", "ofs"),
        (b'{"version": "24.10.1"}', "auc/0.3.2-1", "auc"),
        (b'{"client": "curl/demo"}', "curl/8.5", "other"),
        (b'{"defaults": "echo \\"client\\": \\"luci\\""}', "", "other"),
    ],
)
def test_clients_are_told_apart_by_their_client_field_or_user_agent(body, user_agent, family):
    assert client_family(body, user_agent) == family


def test_a_sync_run_that_cannot_read_upstream_is_counted_with_its_errors(
    client, db, settings, tmp_path
):
    from packages.tasks import sync_upstream

    settings.ASU_UPSTREAM_URL = tmp_path.as_uri()  # an empty folder: nothing to read
    seed_branches()

    report = sync_upstream()
    scraped = samples(client.get("/metrics").content.decode())

    assert report["errors"]
    assert scraped[("asu_sync_runs_total", (("result", "errors"),))] == 1
    assert scraped[("asu_sync_errors_total", ())] == len(report["errors"])


def test_a_route_without_a_url_name_is_labelled_by_its_pattern(client, db):
    counting.clear()

    client.get("/api/v1/overview")  # a redirect to the json/v1 overview
    scraped = samples(client.get("/metrics").content.decode())

    endpoints = {dict(labels)["endpoint"] for name, labels in scraped if "endpoint" in dict(labels)}
    assert "api/v1/overview" in endpoints
    assert not any("." in endpoint for endpoint in endpoints)  # no dotted view paths
