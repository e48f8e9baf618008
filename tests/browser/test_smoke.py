"""The browser fixture itself: the home page renders in chromium."""

from tests.browser.conftest import assert_no_horizontal_scroll, screenshot


def test_home_page_renders_in_a_real_browser(live_server, page, seeded_data):
    page.goto(live_server.url + "/")
    assert page.title()
    assert page.locator("footer").count() == 1
    assert_no_horizontal_scroll(page)
    assert all(path.stat().st_size > 0 for path in screenshot(page, "home"))
