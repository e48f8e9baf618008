"""A bounded fuzz run: arbitrary bodies, path segments and Range headers against the machine
paths, through Django's test client. None may answer 5xx, and every 4xx there is JSON with
an integer `status` and a string `detail`.

tests/test_schema_fuzz.py fuzzes every API operation from its OpenAPI description; this
keeps what a description cannot say: NaN, numbers of 80 digits and bytes that are not
JSON at all, hostile path segments (the json/v1 documents and /store too) and Range
headers."""

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builds.catalogue import fresh_start, make_catalogue

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure can be run again
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ARCHER = {"version": "24.10.1", "target": "ath79/generic", "profile": "tplink_archer-c7-v5"}
FIELDS = [
    "version",
    "target",
    "profile",
    "packages",
    "packages_versions",
    "diff_packages",
    "defaults",
    "rootfs_size_mb",
    "filesystem",
    "repositories",
    "repositories_mode",
    "repository_keys",
    "client",
    "distro",
    "version_code",
]

texts = st.text(max_size=40) | st.sampled_from(["", "\x00", "a\nb", "\ud7ff", "24.10.1"])
numbers = st.integers() | st.integers(min_value=10**60, max_value=10**80) | st.floats()
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
    max_leaves=20,
)
# Mostly build requests with some fields replaced, so that the checks behind the shape
# are reached too; now and then anything at all.
requests = (
    st.fixed_dictionaries(
        {key: st.just(value) | json_values for key, value in ARCHER.items()},
        optional={field: json_values for field in FIELDS if field not in ARCHER},
    )
    | json_values
)
segments = st.text(min_size=1, max_size=30).map(lambda s: quote(s, safe=""))


@pytest.fixture(autouse=True)
def catalogue(settings, tmp_path) -> None:
    """A small catalogue, shared by all examples of a test (they run in one call), and an
    empty upstream: unknown names are looked up there, quickly and without the network."""
    fresh_start(settings, tmp_path)
    make_catalogue()
    settings.ASU_REPOSITORY_ALLOW_LIST = ["https://downloads.openwrt.org/feeds/"]


def assert_contract(response) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        assert response["Content-Type"] == "application/json"
        body = response.json()
        assert isinstance(body["status"], int) and body["status"] == response.status_code
        assert isinstance(body["detail"], str)


def raw(value) -> str:
    """JSON as a client might send it, NaN and huge numbers included."""
    return json.dumps(value)


@FUZZ
@given(body=requests)
def test_build_requests(client, body):
    assert_contract(client.post("/api/v1/build", raw(body), content_type="application/json"))


@FUZZ
@given(body=requests)
def test_package_change_dry_runs(client, body):
    response = client.post(
        "/api/v1/package-changes/apply", raw(body), content_type="application/json"
    )
    assert_contract(response)


@FUZZ
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes(client, body):
    for path in ("/api/v1/build", "/api/v1/package-changes/apply"):
        assert_contract(client.post(path, body, content_type="application/json"))


@FUZZ
@given(segment=segments, more=st.lists(segments, min_size=3, max_size=3))
def test_path_segments(client, segment, more):
    a, b, c = more
    for path in (
        f"/api/v1/build/{segment}",
        f"/api/v1/revision/{segment}/{b}/{c}",
        f"/api/v1/revision/24.10.1/{segment}/{c}",
        f"/json/v1/{segment}/targets/{b}/{c}/index.json",
        f"/json/v1/releases/24.10.1/targets/ath79/generic/{segment}.json",
        f"/json/v1/{a}/packages/{segment}-index.json",
        f"/api/v1/package-changes?version={segment}&target={b}&profile={c}",
        f"/store/{segment}/{b}",
    ):
        assert_contract(client.get(path))


@FUZZ
@given(header=st.text(max_size=60) | st.from_regex(r"bytes=\d{0,30}-\d{0,30}", fullmatch=True))
def test_range_headers(client, settings, tmp_path, header):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(tmp_path)}},
    }
    (tmp_path / "abc").mkdir(exist_ok=True)
    (tmp_path / "abc" / "image.bin").write_bytes(b"0123456789")
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        header = quote(header)  # a header travels as latin-1
    response = client.get("/store/abc/image.bin", headers={"Range": header})
    assert response.status_code in (200, 206, 416)
