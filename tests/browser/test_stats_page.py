"""/stats/ in a real browser, after real builds: every chart drawn, with data, on a
desktop and on a phone."""

import pytest
import requests

from tally import counting
from tests.browser.conftest import assert_no_horizontal_scroll, screenshot
from tests.builds.catalogue import fresh_start, missing_package_request, seed_branches
from tests.builds.test_build_clients import poll_until_done

CHARTS = (
    "builds-per-day",
    "cache-hit-rate",
    "build-durations",
    "versions",
    "targets",
    "profiles",
    "packages",
    "clients",
    "failure-reasons",
)


def build(base: str, body: dict, user_agent: str = "python-requests") -> requests.Response:
    headers = {"User-Agent": user_agent}
    response = requests.post(f"{base}/api/v1/build", json=body, headers=headers, timeout=120)
    assert response.status_code in (200, 202), response.text
    return poll_until_done(base, response.json()["request_hash"])


def some_builds(base: str, upstream: str) -> None:
    """One image built, asked for again by another client, and one failed build."""
    image = {
        "client": "owut/2026.04.09",
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": "tplink,archer-c7-v5",
        "packages": ["luci", "htop"],
    }
    assert build(base, image).status_code == 200
    assert build(base, {**image, "client": "luci/25.103.51521~2ac26e5"}).status_code == 200
    missing = missing_package_request(upstream)
    assert build(base, missing, user_agent="auc (0.3.2-1)").status_code == 500


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_every_chart_is_drawn_from_real_builds(upstream, live_server, start_worker, settings, page):
    fresh_start()
    seed_branches()
    counting.clear()
    settings.ASU_REPOSITORY_ALLOW_LIST = [f"{upstream}/nothing-here"]
    start_worker(concurrency=1)
    some_builds(live_server.url, upstream)

    page.goto(f"{live_server.url}/stats/")

    assert page.locator(".site-nav a[aria-current='page']").inner_text() == "Statistics"
    for chart_id in CHARTS:
        svg = page.locator(f"#{chart_id} svg.chart")
        assert svg.count() == 1, f"no chart drawn for {chart_id}"
        assert svg.locator("title").first.text_content(), chart_id
        marks = svg.locator("rect.bar, circle.point").count()
        assert marks > 0, f"the {chart_id} chart shows no data"
    clients = page.locator("#clients svg.chart text.label").all_text_contents()
    assert sorted(clients) == ["auc", "luci", "owut"]
    reasons = page.locator("#failure-reasons svg.chart text.label").all_text_contents()
    assert reasons == ["missing packages"]
    assert all(path.stat().st_size > 0 for path in screenshot(page, "stats"))
    page.set_viewport_size({"width": 390, "height": 900})
    assert_no_horizontal_scroll(page)
