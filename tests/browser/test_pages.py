"""The pages in a real browser: the device page's form through to a finished build, which
its page follows without a reload, a failed build's error, and how the main pages look at
desktop and phone width (screenshots in var/test-artefacts/)."""

import pytest
import requests
from django.core.management import call_command
from playwright.sync_api import expect

from builds.models import Build
from tests.browser.conftest import WIDTHS, assert_no_horizontal_scroll, screenshot
from tests.builds.catalogue import fresh_start, make_build, missing_package_request

DEVICE_PAGE = "/targets/24.10.1/ath79/generic/tplink_archer-c7-v5/"
BUILD_WAIT_MS = 120_000


def looks_clean(page, name: str) -> None:
    """No sideways scrolling at phone width, and screenshots at both widths."""
    page.set_viewport_size({"width": WIDTHS["phone"], "height": 900})
    assert_no_horizontal_scroll(page)
    screenshot(page, name)


def sync_ath79() -> None:
    call_command("sync_upstream", version="24.10.1", target="ath79/generic", verbosity=0)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_build_from_the_device_page_is_followed_until_done_then_a_failure(
    upstream, live_server, start_worker, page, settings
):
    fresh_start()
    sync_ath79()
    # The failing build below names a feed under this allowed URL: the ImageBuilder,
    # not the server's pre-check, finds its package missing.
    settings.ASU_REPOSITORY_ALLOW_LIST = [f"{upstream}/nothing-here"]

    page.goto(live_server.url + DEVICE_PAGE)
    packages = page.locator("#b-packages")
    expect(packages).to_be_visible()
    # The version's defaults for this device, as the Firmware Selector fills them in:
    # the target's defaults and the device's packages, less the device's removals.
    prefilled = packages.input_value().split()
    assert "dropbear" in prefilled and "kmod-ath10k-ct" in prefilled
    assert not any(name.startswith("-") for name in prefilled)
    page.fill("#b-extra", "luci")
    page.click("#build-form button[type=submit]")

    # No worker runs yet: the build waits in the queue, and its page says so.
    page.wait_for_url("**/builds/*/")
    status = page.locator(".status-box")
    expect(status).to_contain_text("Waiting in the queue")
    expect(status).to_contain_text("This page follows it")
    build = Build.objects.get(request_hash=page.url.rstrip("/").rsplit("/", 1)[1])
    assert build.client == "asu-web/1"
    assert "luci" in build.packages
    page.evaluate("window.sameDocument = true")

    start_worker(concurrency=1)
    page.wait_for_selector("#images-title, .status-failed", timeout=BUILD_WAIT_MS)
    assert page.locator("#images-title").count() == 1, page.locator(".status-box").inner_text()
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
    expect(page.locator("table.images")).to_contain_text("sysupgrade")
    expect(page.locator("#manifest-table")).to_contain_text("luci")
    expect(page.locator("#manifest-filter")).to_be_visible()  # the swapped-in table works
    looks_clean(page, "build-done")

    failing = missing_package_request(upstream)
    answer = requests.post(f"{live_server.url}/api/v1/build", json=failing, timeout=60)
    assert answer.status_code == 202, answer.text
    page.goto(f"{live_server.url}/builds/{answer.json()['request_hash']}/")
    expect(page.locator(".error-detail")).to_contain_text(
        "Impossible package selection: missing (surely-not-a-package)", timeout=BUILD_WAIT_MS
    )
    looks_clean(page, "build-failed")


@pytest.mark.django_db(transaction=True)
def test_the_device_form_shows_the_api_detail_of_a_refused_request(
    upstream, live_server, page, seeded_data, settings
):
    fresh_start()
    sync_ath79()
    settings.ASU_MAX_PENDING_JOBS = 1
    make_build(status=Build.Status.QUEUED, sent_at="2026-01-01T00:00:00Z")

    page.goto(live_server.url + DEVICE_PAGE)
    page.click("#build-form button[type=submit]")

    error = page.locator("#build-form-error")
    expect(error).to_contain_text("server overload, queue contains too many build requests")
    assert page.url.endswith(DEVICE_PAGE)


@pytest.mark.django_db(transaction=True)
def test_the_main_pages_look_clean_at_both_widths(
    upstream, live_server, page, seeded_data, admin_user
):
    fresh_start()
    sync_ath79()
    for profile in ("tplink_archer-c7-v5", "8dev_carambola2", "tplink_archer-c7-v5"):
        make_build(profile=profile, result={"titles": [{"vendor": "TP-Link", "model": profile}]})

    page.goto(live_server.url + "/")
    expect(page.locator("#recent-title")).to_be_visible()
    looks_clean(page, "home")

    page.goto(live_server.url + DEVICE_PAGE)
    expect(page.locator("#build-form")).to_be_visible()
    looks_clean(page, "device")

    page.goto(live_server.url + "/")
    page.fill("#site-q", "Archer C7")
    page.press("#site-q", "Enter")
    expect(page.locator("#devices-title")).to_be_visible()
    expect(page.locator("main table")).to_contain_text("tplink_archer-c7-v5")
    looks_clean(page, "search")

    page.goto(live_server.url + "/admin/login/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("OpenWrt Attended Sysupgrade")
    page.goto(live_server.url + "/admin/packages/packagechange/")
    expect(page.locator("#result_list")).to_be_visible()
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
    assert_no_horizontal_scroll(page)
    screenshot(page, "admin-rules")
