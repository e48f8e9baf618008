"""Hostile input: strings that would add a line to a feed list, bodies that nest or count
without end, NULs a database cannot hold, absurd Range headers, header-sized lists and
floods of unknown names. Each is a 4xx (or a harmless answer), never a 500."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from asuproject.input import MAX_JSON_DEPTH
from builds import configure
from builds.answers import unknown_package_header
from builds.errors import BuildError
from builds.models import Build
from tests.builds.catalogue import fresh_start, make_catalogue

pytestmark = pytest.mark.django_db

ARCHER = {"version": "24.10.1", "target": "ath79/generic", "profile": "tplink_archer-c7-v5"}
FEEDS = "https://downloads.openwrt.org/feeds/"
HOSTILE_URL = "https://downloads.openwrt.org/feeds/\nhttp://evil.example/x"


@pytest.fixture
def catalogue(settings, tmp_path) -> dict:
    fresh_start(settings, tmp_path)
    return make_catalogue()


def post(client, path: str, body) -> object:
    return client.post(path, body, content_type="application/json")


def assert_json_error(response, status: int) -> str:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


# Repository URLs and names --------------------------------------------------------------


def test_a_repository_url_with_a_newline_is_refused(client, catalogue, settings):
    settings.ASU_REPOSITORY_ALLOW_LIST = [FEEDS]

    response = post(client, "/api/v1/build", {**ARCHER, "repositories": {"extra": HOSTILE_URL}})

    detail = assert_json_error(response, 422)
    assert "extra" in detail and "whitespace or a control character" in detail
    assert Build.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://downloads.openwrt.org/feeds/x\rsrc/gz evil http://evil.example",
        "https://downloads.openwrt.org/feeds/x y",
        "https://downloads.openwrt.org/feeds/x\x00",
        "https://downloads.openwrt.org/feeds/x\x85y",
        "https://downloads.openwrt.org/feeds/\u2028x",
    ],
)
def test_whitespace_and_controls_anywhere_in_a_repository_url_are_refused(
    client, catalogue, settings, url
):
    settings.ASU_REPOSITORY_ALLOW_LIST = [FEEDS]

    response = post(client, "/api/v1/build", {**ARCHER, "repositories": {"extra": url}})

    assert response.status_code == 422
    assert Build.objects.count() == 0


@pytest.mark.parametrize("name", ["extra\n", "ex tra", "extra\nsrc/gz evil", "-extra", "é"])
def test_repository_names_are_matched_whole(client, catalogue, settings, name):
    settings.ASU_REPOSITORY_ALLOW_LIST = [FEEDS]

    response = post(client, "/api/v1/build", {**ARCHER, "repositories": {name: FEEDS + "x"}})

    assert "not a valid repository name" in assert_json_error(response, 422)


def test_surrounding_blanks_are_trimmed_as_before(client, catalogue):
    """Blanks around a name are dropped (as DRF trims them); only the trimmed name is used."""
    response = post(client, "/api/v1/build", {**ARCHER, "target": "ath79/generic\n"})

    assert response.status_code == 202
    assert Build.objects.get().target == "ath79/generic"


def test_the_stored_repository_url_is_the_parsed_one(client, catalogue, settings):
    settings.ASU_REPOSITORY_ALLOW_LIST = [FEEDS]

    response = post(
        client,
        "/api/v1/build",
        {**ARCHER, "repositories": {"extra": "HTTPS://downloads.openwrt.org/feeds/x"}},
    )

    assert response.status_code == 202
    build = Build.objects.get(request_hash=response.json()["request_hash"])
    assert build.request["repositories"] == {"extra": "https://downloads.openwrt.org/feeds/x"}


@pytest.mark.parametrize(
    "field,value",
    [
        ("version", "24.10.1\nx"),
        ("target", "ath79/generic\nx"),
        ("profile", "tplink_archer-c7-v5\nx"),
        ("version_code", "r1 r2"),
        ("packages", ["luci\nevil"]),
        ("packages_versions", {"luci\n": "1.0"}),
        ("packages_versions", {"luci": "1.0\n2"}),
    ],
)
def test_names_and_versions_are_matched_whole(client, catalogue, field, value):
    response = post(client, "/api/v1/build", {**ARCHER, field: value})

    assert_json_error(response, 422)


@pytest.mark.parametrize(
    "change",
    [
        {"version": "24.10.1\nx"},
        {"target": "ath79/generic\nx"},
        {"target": "ath79/génériq"},
        {"profile": "a b"},
        {"packages": ["luci\nx"]},
        {"packages": [".luci"]},
    ],
)
def test_the_dry_run_matches_names_whole(client, catalogue, change):
    response = post(client, "/api/v1/package-changes/apply", {**ARCHER, **change})

    assert_json_error(response, 422)


@pytest.mark.parametrize("layout", ["repositories.conf", "repositories"])
@pytest.mark.parametrize(
    "name,url",
    [
        ("extra", HOSTILE_URL),
        ("extra", "https://feed.example/x\rhttp://evil.example/y"),
        ("extra", "https://feed.example/x http://evil.example/y"),
        ("extra\nsrc/gz evil http://evil.example", "https://feed.example/x"),
        ("extra", "https://feed.example/x\x0bhttp://evil.example/y"),
        ("extra", "https://feed.example/x\u2028http://evil.example/y"),
    ],
)
def test_the_working_copy_never_gets_a_second_line_from_a_hostile_feed(tmp_path, layout, name, url):
    """The second line of defence, should a hostile string ever get past the request."""
    original = "src imagebuilder file:packages\n"
    (tmp_path / layout).write_text(original)

    with pytest.raises(BuildError, match="whitespace or a control character"):
        configure.add_repositories(tmp_path, {name: url}, "append", [])

    assert (tmp_path / layout).read_text() == original


# Bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/build", "/api/v1/package-changes/apply", "/api/v1/upgrade-check"]
)
@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
    ],
    ids=["arrays", "objects", "just-too-deep"],
)
def test_deeply_nested_bodies_are_422(client, catalogue, path, body):
    detail = assert_json_error(post(client, path, body), 422)

    assert f"nests deeper than {MAX_JSON_DEPTH} levels" in detail


@pytest.mark.parametrize(
    "path", ["/api/v1/build", "/api/v1/package-changes/apply", "/api/v1/upgrade-check"]
)
@pytest.mark.parametrize(
    "body,words",
    [
        ('{"version": "24.10.1\\u0000"}', "NUL"),
        ('{"version": "\\ud800"}', "lone surrogate"),
        ('{"rootfs_size_mb": ' + "9" * 5000 + "}", "5000 digits"),
        ('{"rootfs_size_mb": ' + "9" * 4000 + "}", "4000 digits"),
        ('{"rootfs_size_mb": 1' + "0" * 400 + ".5}", "characters"),
        ('{"rootfs_size_mb": NaN}', "NaN"),
        ('{"rootfs_size_mb": -Infinity}', "Infinity"),
    ],
)
def test_nuls_surrogates_and_huge_numbers_are_422(client, catalogue, path, body, words):
    detail = assert_json_error(post(client, path, body), 422)

    assert words in detail


def test_a_body_just_within_the_limits_is_read(client, catalogue):
    nested = {"x": 1}
    for _ in range(MAX_JSON_DEPTH - 2):
        nested = {"x": nested}
    response = post(client, "/api/v1/build", {**ARCHER, "ignored": nested, "rootfs_size_mb": 256})

    assert response.status_code == 202


# Addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/build/abc%00def",
        "/api/v1/build/abc%0Adef",
        "/api/v1/revision/%00/x/y",
        "/json/v1/%00/targets/ath79/generic/index.json",
        "/json/v1/releases/24.10.1/targets/ath79/generic/%00.json",
        "/json/v1/%00/packages/mips_24kc-index.json",
        "/api/v1/package-changes?version=%00",
        "/api/v1/package-changes?version=24.10.1%0A",
        "/api/v1/build-errors?n=%00",
        "/store/%00/x.bin",
        "/store/0123abcd/%00.bin",
    ],
)
def test_control_characters_in_machine_addresses_are_400_json(client, catalogue, path):
    detail = assert_json_error(client.get(path), 400)

    assert "control character" in detail


@pytest.mark.parametrize(
    "path", ["/builds/%00/", "/targets/%00/", "/builds/?q=%00", "/targets/24.10.1/%0A/x/"]
)
def test_control_characters_in_page_addresses_are_a_400_page(client, catalogue, path):
    response = client.get(path)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert b"control character" in response.content


def test_a_page_query_may_hold_a_newline(client, catalogue):
    """A page's form may send a textarea by GET; only a NUL is refused there."""
    assert client.get("/builds/?q=a%0Ab").status_code == 200


# Range -----------------------------------------------------------------------------------


@pytest.fixture
def stored_file(settings, tmp_path) -> str:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(tmp_path)}},
    }
    (tmp_path / "abc").mkdir()
    (tmp_path / "abc" / "image.bin").write_bytes(b"0123456789")
    return "/store/abc/image.bin"


@pytest.mark.parametrize(
    "header,status,content",
    [
        ("bytes=" + "9" * 5000 + "-", 416, b""),
        ("bytes=2-" + "9" * 5000, 206, b"23456789"),
        ("bytes=-" + "9" * 5000, 206, b"0123456789"),
        ("bytes=" + "9" * 5000 + "-" + "9" * 5001, 416, b""),
        ("bytes=" + "9" * 5000 + "-1", 200, b"0123456789"),
        ("bytes=" + "0" * 5000 + "3-4", 206, b"34"),
    ],
)
def test_absurd_range_numbers_answer_416_or_bytes(client, stored_file, header, status, content):
    response = client.get(stored_file, headers={"Range": header})

    assert response.status_code == status
    if status != 416:
        assert b"".join(response.streaming_content) == content


# X-Unknown-Package -----------------------------------------------------------------------


def test_a_long_list_of_unknown_packages_is_cut_in_the_header(client, catalogue):
    names = [f"nope{n}" for n in range(2000)]

    response = post(client, "/api/v1/build", {**ARCHER, "packages": names})

    detail = assert_json_error(response, 400)
    header = response["X-Unknown-Package"]
    assert len(header) <= 1100
    assert header.endswith(" more")
    assert header.startswith(", ".join(sorted(names)[:5]))
    assert all(name in detail for name in names)  # the body keeps the full list


def test_a_short_list_of_unknown_packages_is_whole_in_the_header():
    assert unknown_package_header(["a", "b"]) == "a, b"
    assert unknown_package_header([f"p{n}" for n in range(51)]).endswith(", ... and 1 more")
    assert unknown_package_header(["x" * 600, "y" * 600]) == "x" * 600 + ", ... and 1 more"


# Upstream refreshes ----------------------------------------------------------------------


@pytest.fixture
def counting_upstream(settings, mirror_copy):
    """The mirror served on 127.0.0.1 with a count of the files asked for."""
    folder, _url = mirror_copy
    requests: list[str] = []

    class Counting(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Counting, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.ASU_UPSTREAM_URL = f"http://127.0.0.1:{server.server_address[1]}"
    yield requests
    server.shutdown()
    server.server_close()


def test_bogus_versions_cost_one_upstream_read_per_interval(client, catalogue, counting_upstream):
    for n in range(20):
        response = post(client, "/api/v1/build", {**ARCHER, "version": f"24.10.{n + 50}"})
        assert response.status_code == 400

    assert counting_upstream == ["/.versions.json"]


def test_bogus_targets_cost_one_upstream_read_per_interval(client, catalogue, counting_upstream):
    for n in range(20):
        response = post(client, "/api/v1/build", {**ARCHER, "target": f"bogus/t{n}"})
        assert response.status_code == 400

    assert counting_upstream == ["/releases/24.10.1/.targets.json"]


def test_bogus_profiles_share_one_upstream_refresh_per_interval(
    client, catalogue, counting_upstream
):
    assert post(client, "/api/v1/build", {**ARCHER, "profile": "bogus"}).status_code == 400
    reads_of_one_refresh = list(counting_upstream)
    for n in range(20):
        response = post(client, "/api/v1/build", {**ARCHER, "profile": f"bogus{n}"})
        assert response.status_code == 400

    assert counting_upstream == reads_of_one_refresh
    assert reads_of_one_refresh.count("/releases/24.10.1/.targets.json") == 1


def test_a_real_release_is_found_despite_a_flood_of_bogus_names(
    client, catalogue, counting_upstream
):
    for n in range(20):
        post(client, "/api/v1/build", {**ARCHER, "version": f"25.12.{n + 50}"})
        post(client, "/api/v1/build", {**ARCHER, "profile": f"bogus{n}"})

    response = post(
        client,
        "/api/v1/build",
        {"version": "25.12.0", "target": "ath79/generic", "profile": "tplink,archer-c7-v5"},
    )

    assert response.status_code == 202, response.json()
    assert counting_upstream.count("/.versions.json") <= 2  # the list, then the release's own look


def test_a_release_published_later_is_found_once_the_interval_passed(
    client, catalogue, counting_upstream, mirror_copy
):
    folder, _url = mirror_copy
    versions = folder / ".versions.json"
    published = versions.read_text()
    versions.write_text('{"versions_list": ["24.10.1"]}')
    release = {"version": "25.12.0", "target": "ath79/generic", "profile": "tplink,archer-c7-v5"}
    assert post(client, "/api/v1/build", release).status_code == 400

    versions.write_text(published)
    assert post(client, "/api/v1/build", release).status_code == 400  # within the interval
    fresh_start()  # the interval passes: the cache forgets what it read

    assert post(client, "/api/v1/build", release).status_code == 202
