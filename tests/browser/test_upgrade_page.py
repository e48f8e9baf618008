"""/upgrade/: a person pastes the router's board and installed list and sees the check."""

import json

from packages.models import Package
from packages.sync import sync_upstream
from targets.models import Target
from tests.browser.conftest import assert_no_horizontal_scroll, screenshot


def router_texts() -> tuple[str, str]:
    """`ubus call system board` and `opkg list-installed` of a 24.10.1 Archer C7."""
    target = Target.objects.get(version__name="24.10.1", name="ath79/generic")
    board = {
        "kernel": "6.6.86",
        "hostname": "OpenWrt",
        "model": "TP-Link Archer C7 v5",
        "board_name": "tplink,archer-c7-v5",
        "rootfs_type": "squashfs",
        "release": {
            "distribution": "OpenWrt",
            "version": "24.10.1",
            "revision": target.version_code,
            "target": "ath79/generic",
            "description": f"OpenWrt 24.10.1 {target.version_code}",
        },
    }
    names = [*target.default_packages, "auc", "kmod-ath10k-ct", "kmod-usb2"]
    rows = Package.objects.for_target(target).filter(name__in=names)
    installed = "\n".join(
        f"{name} - {version}" for name, version in rows.values_list("name", "version")
    )
    return json.dumps(board, indent="\t"), installed


def test_paste_board_and_installed_list_and_see_the_check(live_server, page, upstream, seeded_data):
    assert sync_upstream().errors == []
    board, installed = router_texts()

    page.goto(live_server.url + "/upgrade/")
    page.fill("#u-board", board)
    page.fill("#u-installed", installed)
    page.click("form.upgrade-form button[type=submit]")

    verdict = page.locator("#upgrade-verdict")
    assert "would change" in verdict.inner_text()
    card = page.locator("article.upgrade", has_text="25.12.0")
    assert card.count() == 1
    text = card.inner_text()
    assert "owut" in text and "replaces auc" in text
    assert "apk-mbedtls" in text
    assert_no_horizontal_scroll(page)
    screenshot(page, "upgrade")

    card.locator("button.build-button").click()
    status = card.locator(".build-status")
    status.locator("a").wait_for(timeout=15000)
    assert status.locator("a").get_attribute("href").startswith("/builds/")


def test_a_paste_that_is_not_board_output_says_what_to_paste(live_server, page, seeded_data):
    page.goto(live_server.url + "/upgrade/")
    page.fill("#u-board", "not json")
    page.fill("#u-installed", "dnsmasq - 2.90-r4")
    page.click("form.upgrade-form button[type=submit]")
    assert "ubus call system board" in page.locator("[role=alert]").inner_text()
