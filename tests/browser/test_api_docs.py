"""Swagger UI and Redoc render the API's description from this server's own files."""

from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import screenshot


@pytest.mark.parametrize(
    ("path", "name"), [("/api/docs/", "api-docs"), ("/api/redoc/", "api-redoc")]
)
def test_the_api_reader_renders_the_schema_from_local_files(live_server, page, path, name):
    server = urlsplit(live_server.url).netloc
    hosts = []
    page.on(
        "request",
        lambda request: hosts.append(
            # Inline images and workers are the page's own.
            server if request.url.startswith(("data:", "blob:")) else urlsplit(request.url).netloc
        ),
    )

    page.goto(live_server.url + path)
    page.get_by_text("/api/v1/build/{request_hash}").first.wait_for(timeout=20000)
    page.get_by_text("/api/v1/package-changes/apply").first.wait_for()

    assert all(path.stat().st_size > 0 for path in screenshot(page, name))
    assert hosts and set(hosts) == {server}, f"requests to other hosts: {set(hosts) - {server}}"
