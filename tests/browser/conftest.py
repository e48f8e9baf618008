"""A real browser for the page tests: Playwright driving Debian's chromium.

Playwright's own browser download cannot work offline, so the tests use the system
chromium (`apt-get install chromium`, which `.ci/run` does). Where it is missing, the
tests are skipped with a reason saying so.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Screenshots land here; `var/` stays out of git.
ARTEFACTS = Path(os.environ.get("ASU_TEST_ARTEFACTS", ROOT / "var" / "test-artefacts"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WIDTHS = {"desktop": 1280, "phone": 390}


def _chromium_or_skip() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip(
            f"no chromium at {CHROMIUM} or on PATH: install Debian's `chromium` "
            "(.ci/run does) to run the browser tests"
        )
    return path


@pytest.fixture(scope="package")
def browser() -> Iterator:
    """One chromium for the browser tests, closed when they are done.

    Playwright's sync API keeps an event loop running in this thread while it is
    started, which Django's ORM takes for async code; the tests' own database calls are
    plain sync code, so Django is told so, and only for as long as the browser runs
    (the rest of the suite, and processes it starts, never see the setting).
    """
    executable = _chromium_or_skip()
    playwright_api = pytest.importorskip("playwright.sync_api")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with playwright_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=executable, headless=True, args=["--no-sandbox"]
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh desktop-width page; its console errors fail the test."""
    context = browser.new_context(viewport={"width": WIDTHS["desktop"], "height": 900})
    new_page = context.new_page()
    errors: list[str] = []
    new_page.on("pageerror", lambda error: errors.append(str(error)))
    yield new_page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page, name: str) -> list[Path]:
    """Save the page at 1280 and 390 px wide under the test-artefacts folder."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    saved = []
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        path = ARTEFACTS / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        saved.append(path)
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
    return saved


def assert_no_horizontal_scroll(page) -> None:
    """A clean layout at phone width: nothing wider than the viewport."""
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"the page scrolls sideways by {overflow} px"
