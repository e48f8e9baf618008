"""POST /api/v1/build, GET and HEAD /api/v1/build/{hash}, GET /api/v1/stats: the contract's
answers, status codes, headers and error classes."""

from datetime import timedelta

import pytest
from django.utils import timezone

from builds.memory import memory
from builds.models import Build
from targets.models import Target
from tests.builds.catalogue import fail, finish, fresh_start, make_catalogue, start

# Every answer is also checked against the OpenAPI description (tests/schema.py).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("documented_api")]

ARCHER = {"version": "24.10.1", "target": "ath79/generic", "profile": "tplink_archer-c7-v5"}


@pytest.fixture(autouse=True)
def catalogue(settings, tmp_path) -> dict:
    fresh_start(settings, tmp_path)
    return make_catalogue()


def post(client, body, **extra):
    return client.post("/api/v1/build", body, content_type="application/json", **extra)


def assert_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    assert response["X-Imagebuilder-Status"]
    assert response["X-Queue-Position"] == "0"
    return body


# Status answers ---------------------------------------------------------------------------


def test_it_queues_a_new_build_with_its_queue_position(client):
    response = post(client, {**ARCHER, "packages": ["luci"]})

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == 202
    assert body["detail"] == "queued"
    assert body["queue_position"] == 0
    assert "imagebuilder_status" not in body
    assert len(body["request_hash"]) == 64
    assert body["enqueued_at"].endswith("Z")
    assert response["X-Imagebuilder-Status"] == "queued"
    assert response["X-Queue-Position"] == "0"
    build = Build.objects.get(request_hash=body["request_hash"])
    assert build.status == Build.Status.QUEUED
    assert build.task_id
    assert build.bin_dir


def test_it_counts_the_builds_queued_before_this_one(client):
    post(client, {**ARCHER, "packages": ["luci"]})
    post(client, {**ARCHER, "packages": ["tcpdump"]})
    response = post(client, {**ARCHER, "packages": ["htop"]})

    assert response.json()["queue_position"] == 2
    assert response["X-Queue-Position"] == "2"


def test_a_started_build_shows_its_step_and_no_queue_position(client):
    request_hash = post(client, ARCHER).json()["request_hash"]
    start(Build.objects.get(request_hash=request_hash), "validate_manifest")

    response = client.get(f"/api/v1/build/{request_hash}")

    assert response.status_code == 202
    body = response.json()
    assert body["detail"] == "started"
    assert body["imagebuilder_status"] == "validate_manifest"
    assert "queue_position" not in body
    assert response["X-Imagebuilder-Status"] == "validate_manifest"
    assert response["X-Queue-Position"] == "0"


def test_a_step_outside_the_contract_reads_init(client):
    request_hash = post(client, ARCHER).json()["request_hash"]
    start(Build.objects.get(request_hash=request_hash), "fetching-things")

    body = client.get(f"/api/v1/build/{request_hash}").json()

    assert body["imagebuilder_status"] == "init"


def test_a_finished_build_answers_200_with_the_result(client):
    request_hash = post(client, {**ARCHER, "packages": ["luci"]}).json()["request_hash"]
    build = finish(Build.objects.get(request_hash=request_hash))

    response = client.get(f"/api/v1/build/{request_hash}")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == 200
    assert body["detail"] == "done"
    assert body["imagebuilder_status"] == "done"
    assert body["id"] == "tplink_archer-c7-v5"
    assert body["bin_dir"] == build.bin_dir
    assert body["build_at"]
    assert body["manifest"] == build.manifest
    assert body["build_cmd"] == build.build_cmd
    assert body["images"][0]["type"] == "sysupgrade"
    assert body["version_code"] == "r28427-6df0e3d02a"
    assert body["arch_packages"] == "mips_24kc"
    assert body["request"]["version"] == "24.10.1"
    assert body["request"]["packages"] == ["luci"]
    assert body["request"]["rootfs_size_mb"] is None
    assert body["request"]["defaults"] is None
    assert body["request_hash"] == request_hash
    assert {"stdout", "stderr", "package_changes_applied", "enqueued_at"} <= set(body)
    assert response["X-Imagebuilder-Status"] == "done"
    assert response["X-Queue-Position"] == "0"


def test_a_failed_build_answers_500_with_its_error_and_logs(client):
    request_hash = post(client, ARCHER).json()["request_hash"]
    fail(
        Build.objects.get(request_hash=request_hash),
        "Error: Impossible package selection: missing (nope, gone)",
    )

    response = client.get(f"/api/v1/build/{request_hash}")

    body = assert_error(response, 500)
    assert body["detail"] == "Error: Impossible package selection: missing (nope, gone)"
    assert body["stdout"] == "make output"
    assert "Cannot install package" in body["stderr"]
    assert response["X-Imagebuilder-Status"] == "failed"
    assert response["X-Unknown-Package"] == "nope, gone"


def test_a_failed_build_without_package_trouble_has_no_unknown_package_header(client):
    request_hash = post(client, ARCHER).json()["request_hash"]
    fail(
        Build.objects.get(request_hash=request_hash),
        "Error: Selected packages exceed device storage",
    )

    response = client.get(f"/api/v1/build/{request_hash}")

    assert response.status_code == 500
    assert "X-Unknown-Package" not in response


def test_head_answers_the_status_in_headers_without_a_body(client):
    request_hash = post(client, ARCHER).json()["request_hash"]

    queued = client.head(f"/api/v1/build/{request_hash}")
    finish(Build.objects.get(request_hash=request_hash))
    done = client.head(f"/api/v1/build/{request_hash}")

    assert queued.status_code == 202
    assert queued["X-Imagebuilder-Status"] == "queued"
    assert queued.content == b""
    assert done.status_code == 200
    assert done["X-Imagebuilder-Status"] == "done"
    assert done.content == b""


def test_an_unknown_hash_is_404_with_the_contract_body(client):
    for method in (client.get, client.head):
        response = method("/api/v1/build/" + "0" * 64)
        assert response.status_code == 404
        assert "X-Imagebuilder-Status" in response
        assert "X-Queue-Position" in response
    assert client.get("/api/v1/build/" + "0" * 64).json() == {
        "status": 404,
        "title": "Not Found",
        "detail": "could not find provided request hash",
    }


def test_query_strings_are_ignored(client):
    request_hash = post(client, ARCHER).json()["request_hash"]

    response = client.get(f"/api/v1/build/{request_hash}?1712345678901")

    assert response.status_code == 202
    assert response.json()["request_hash"] == request_hash


def test_stats_count_the_queued_builds(client):
    post(client, ARCHER)
    post(client, {**ARCHER, "packages": ["luci"]})
    start(
        Build.objects.get(
            request_hash=post(client, {**ARCHER, "packages": ["htop"]}).json()["request_hash"]
        )
    )

    response = client.get("/api/v1/stats")

    assert response.status_code == 200
    assert response.json() == {"queue_length": 2}


# Malformed requests: 422 with a string detail ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"target": "ath79/generic", "profile": "x"}, "version: This field is required"),
        ({**ARCHER, "profile": ""}, "profile"),
        ({**ARCHER, "target": "ath79"}, "target"),
        ({**ARCHER, "target": "../../etc"}, "target"),
        ({**ARCHER, "version": "24.10.1; rm -rf /"}, "version"),
        ({**ARCHER, "packages": "luci"}, "packages"),
        ({**ARCHER, "packages": ["luci", "bad name"]}, "packages[1]: 'bad name'"),
        ({**ARCHER, "packages": ["$(reboot)"]}, "packages"),
        ({**ARCHER, "packages_versions": {"luci": "1.0 2"}}, "packages_versions"),
        ({**ARCHER, "packages_versions": {"bad name": "1"}}, "packages_versions"),
        ({**ARCHER, "rootfs_size_mb": 0}, "rootfs_size_mb"),
        ({**ARCHER, "rootfs_size_mb": 1025}, "1024 MB"),
        ({**ARCHER, "rootfs_size_mb": "big"}, "rootfs_size_mb"),
        ({**ARCHER, "filesystem": "ntfs"}, "filesystem"),
        ({**ARCHER, "diff_packages": "perhaps"}, "diff_packages"),
        ({**ARCHER, "repositories": ["https://example.org"]}, "repositories"),
        ({**ARCHER, "repositories": {"feed": "ftp://example.org/x"}}, "not an http(s) URL"),
        ({**ARCHER, "repositories_mode": "merge"}, "repositories_mode"),
        ({**ARCHER, "version_code": "r1 r2"}, "version_code"),
        (["not", "an", "object"], "Expected a dictionary"),
    ],
)
def test_it_answers_422_with_a_sentence_for_malformed_requests(client, body, words):
    body = assert_error(post(client, body), 422)

    assert words in body["detail"]
    assert not body["detail"].startswith("non_field_errors")


def test_defaults_longer_than_the_limit_are_422(client, settings):
    settings.ASU_ALLOW_DEFAULTS = True
    settings.ASU_MAX_DEFAULTS_LENGTH = 10

    body = assert_error(post(client, {**ARCHER, "defaults": "é" * 6}), 422)

    assert "12 bytes" in body["detail"]
    assert "at most 10" in body["detail"]


def test_a_body_that_is_not_json_is_422(client):
    response = client.post("/api/v1/build", "{version: 1", content_type="application/json")

    body = assert_error(response, 422)
    assert body["detail"].startswith("Malformed request")


def test_an_empty_body_names_the_missing_fields(client):
    body = assert_error(client.post("/api/v1/build", b"", content_type="application/json"), 422)

    assert "version" in body["detail"]
    assert "target" in body["detail"]
    assert "profile" in body["detail"]


# Refused requests: 400 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"version": "9.9.9"}, "Unsupported version: 9.9.9"),
        ({"target": "foo/bar"}, "Unsupported target: foo/bar. "),
        ({"profile": "foo"}, "Unsupported profile: foo. "),
        ({"distro": "lede"}, "Unsupported distro: lede"),
        ({"version": "22.03.7"}, "Unsupported branch: 22.03.7"),
    ],
)
def test_it_refuses_what_the_catalogue_does_not_have(client, change, detail):
    body = assert_error(post(client, {**ARCHER, **change}), 400)

    assert body["detail"].startswith(detail)
    assert Build.objects.count() == 0


def test_a_release_new_to_the_server_is_read_from_upstream(client, upstream):
    response = post(
        client,
        {
            "version": "25.12.0",
            "target": "ath79/generic",
            "profile": "tplink,archer-c7-v5",
            "packages": ["luci"],
        },
    )

    assert response.status_code == 202, response.json()
    assert Target.objects.filter(version__name="25.12.0", name="ath79/generic").exists()
    assert Build.objects.get().profile == "tplink_archer-c7-v5"


def test_names_upstream_does_not_have_either_are_refused_after_one_look(client, upstream):
    target = post(client, {"version": "25.12.0", "target": "foo/bar", "profile": "x"})
    profile = post(client, {"version": "25.12.0", "target": "ath79/generic", "profile": "nope"})
    version = post(client, {"version": "25.12.9", "target": "ath79/generic", "profile": "x"})

    assert assert_error(target, 400)["detail"].startswith("Unsupported target: foo/bar. ")
    assert assert_error(profile, 400)["detail"].startswith("Unsupported profile: nope. ")
    assert assert_error(version, 400)["detail"] == "Unsupported version: 25.12.9"


def test_it_refuses_defaults_unless_the_server_allows_them(client):
    body = assert_error(post(client, {**ARCHER, "defaults": "uci set system.@system[0].x=1"}), 400)

    assert body["detail"] == "Handling `defaults` not enabled on server"


def test_it_takes_defaults_when_the_server_allows_them(client, settings):
    settings.ASU_ALLOW_DEFAULTS = True

    response = post(client, {**ARCHER, "defaults": "echo hi\n"})

    assert response.status_code == 202
    build = Build.objects.get(request_hash=response.json()["request_hash"])
    assert build.request["defaults"] == "echo hi\n"


def test_unknown_packages_are_400_with_the_header_auc_reads(client):
    response = post(client, {**ARCHER, "packages": ["luci", "nope", "gone", "-ppp"]})

    body = assert_error(response, 400)
    assert body["detail"] == "Impossible package selection: missing (gone, nope)"
    assert response["X-Unknown-Package"] == "gone, nope"
    assert Build.objects.count() == 0


def test_package_names_are_checked_against_the_target_and_its_architecture(client):
    # kmod-ath10k-ct is in ath79's own index, luci in the mips_24kc feed.
    assert post(client, {**ARCHER, "packages": ["kmod-ath10k-ct", "luci"]}).status_code == 202
    x86 = {**ARCHER, "target": "x86/64", "profile": "generic"}
    assert post(client, {**x86, "packages": ["kmod-ath10k-ct"]}).status_code == 400


def test_the_package_check_is_skipped_with_extra_repositories(client, settings):
    settings.ASU_REPOSITORY_ALLOW_LIST = ["https://feeds.example.org/openwrt"]

    response = post(
        client,
        {
            **ARCHER,
            "packages": ["only-in-my-feed"],
            "repositories": {"mine": "https://feeds.example.org/openwrt/mips_24kc/mine"},
        },
    )

    assert response.status_code == 202


@pytest.mark.parametrize(
    "url",
    [
        "https://feeds.example.org.evil.net/openwrt/x",
        "https://feeds.example.org@evil.net/openwrt/x",
        "https://evil.net/?https://feeds.example.org/openwrt/x",
        "http://feeds.example.org/openwrt/x",
        "https://feeds.example.org:8443/openwrt/x",
        "https://feeds.example.org/openwrt-evil/x",
        "https://feeds.example.org/openwrt/../private/x",
        "https://feeds.example.org/openwrt/%2e%2e/private/x",
        "https://feeds.example.org/other",
    ],
)
def test_repositories_outside_the_allow_list_are_refused(client, settings, url):
    settings.ASU_REPOSITORY_ALLOW_LIST = ["https://feeds.example.org/openwrt"]

    body = assert_error(post(client, {**ARCHER, "repositories": {"mine": url}}), 400)

    assert body["detail"] == f"Repository not allowed: {url}"


def test_extra_repositories_replace_the_imagebuilders_feeds_unless_told(client, settings):
    settings.ASU_REPOSITORY_ALLOW_LIST = ["https://feeds.example.org/openwrt"]
    feeds = {"mine": "https://feeds.example.org/openwrt/mips_24kc/mine"}

    unsaid = post(client, {**ARCHER, "packages": ["x"], "repositories": feeds})
    replace = post(
        client,
        {**ARCHER, "packages": ["x"], "repositories": feeds, "repositories_mode": "replace"},
    )
    append = post(
        client,
        {**ARCHER, "packages": ["x"], "repositories": feeds, "repositories_mode": "append"},
    )

    assert Build.objects.get(request_hash=unsaid.json()["request_hash"]).request[
        "repositories_mode"
    ] == ("replace")
    assert unsaid.json()["request_hash"] == replace.json()["request_hash"]
    assert append.json()["request_hash"] != replace.json()["request_hash"]


def test_no_repository_is_allowed_with_an_empty_allow_list(client):
    url = "https://downloads.openwrt.org/releases/24.10.1/packages/mips_24kc/base"

    body = assert_error(post(client, {**ARCHER, "repositories": {"base": url}}), 400)

    assert body["detail"] == f"Repository not allowed: {url}"


def test_it_answers_529_when_the_queue_is_full(client, settings):
    settings.ASU_MAX_PENDING_JOBS = 2
    post(client, {**ARCHER, "packages": ["luci"]})
    post(client, {**ARCHER, "packages": ["htop"]})

    response = post(client, {**ARCHER, "packages": ["tcpdump"]})

    body = assert_error(response, 529)
    assert body["title"] == "Server overloaded"
    assert set(body) == {"status", "title", "detail"}
    assert Build.objects.count() == 2


def test_a_full_queue_still_answers_builds_it_already_has(client, settings):
    settings.ASU_MAX_PENDING_JOBS = 1
    post(client, ARCHER)

    assert post(client, ARCHER).status_code == 202


# Leniency: what real clients send --------------------------------------------------------


def test_unknown_fields_are_ignored(client):
    response = post(client, {**ARCHER, "board": "x", "subtarget": "generic", "sysupgrade": 1})

    assert response.status_code == 202


def test_empty_values_mean_absent(client):
    plain = post(client, ARCHER).json()["request_hash"]

    empty = post(
        client,
        {
            **ARCHER,
            "defaults": "",
            "rootfs_size_mb": None,
            "repositories": {},
            "repository_keys": [],
            "version_code": "",
            "filesystem": "",
            "packages": None,
            "packages_versions": None,
            "diff_packages": None,
            "distro": "",
            "client": "",
            "repositories_mode": "",
        },
    )

    assert empty.status_code == 202
    assert empty.json()["request_hash"] == plain


def test_a_body_without_json_content_type_is_read_as_json(client):
    response = client.post(
        "/api/v1/build",
        '{"version": "24.10.1", "target": "ath79/generic", "profile": "tplink_archer-c7-v5"}',
        content_type="text/json",
    )

    assert response.status_code == 202


def test_a_trailing_slash_reaches_the_same_endpoints(client):
    request_hash = client.post("/api/v1/build/", ARCHER, content_type="application/json").json()[
        "request_hash"
    ]

    assert client.get(f"/api/v1/build/{request_hash}/").status_code == 202


def test_wrong_methods_and_unknown_api_paths_answer_json(client):
    put = client.put("/api/v1/build", ARCHER, content_type="application/json")
    unknown = client.get("/api/v1/nothing-here")
    post_unknown = client.post("/api/v1/nothing-here", {}, content_type="application/json")

    assert_error(put, 405)
    for response in (unknown, post_unknown):
        assert response.status_code == 404
        assert response.json()["status"] == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/build/abc",
        "/api/v1/stats",
        "/api/v1/build-errors",
        "/api/v1/revision/24.10.1/ath79/generic",
        "/api/v1/package-changes",
        "/json/v1/overview.json",
        "/json/v1/releases/24.10.1/targets/ath79/generic/index.json",
        "/api/v1/overview",
        "/api/v1/latest",
        "/overview",
    ],
)
def test_a_wrong_method_is_a_json_405_everywhere(client, path):
    response = client.delete(path)

    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["status"] == 405
    assert response.json()["detail"] == 'Method "DELETE" not allowed.'
    assert "GET" in response["Allow"]


def test_every_answer_is_json_even_when_the_server_breaks(client, monkeypatch):
    # A broken catalogue query stands in for any unexpected failure.
    def broken(*args, **kwargs):
        raise RuntimeError("database exploded")

    monkeypatch.setattr("builds.views.request_build", broken)

    body = assert_error(post(client, ARCHER), 500)
    assert body["detail"] == "internal server error"


# Cost of the hot paths ------------------------------------------------------------------


def test_a_repeated_post_is_one_query(client, django_assert_num_queries):
    body = {**ARCHER, "profile": "tplink,archer-c7-v5", "packages": ["luci", "tcpdump"]}
    finish(Build.objects.get(request_hash=post(client, body).json()["request_hash"]))

    # The shared generations, then the finished build's row.
    with django_assert_num_queries(2):
        first = post(client, {**body, "client": "luci/1.2.3"})
    # The answer is kept now: only the generations are read.
    with django_assert_num_queries(1):
        again = post(client, body)

    assert first.status_code == again.status_code == 200
    assert again.content == first.content


def test_a_first_post_of_a_known_build_is_a_handful_of_queries(
    client, django_assert_max_num_queries
):
    body = {**ARCHER, "packages": ["luci", "tcpdump"], "diff_packages": False}
    finish(Build.objects.get(request_hash=post(client, body).json()["request_hash"]))
    memory.clear()  # as in another server process

    with django_assert_max_num_queries(5):
        response = post(client, body)

    assert response.status_code == 200


def test_a_poll_is_the_generations_and_the_row_and_only_the_generations_once_finished(
    client, django_assert_num_queries
):
    request_hash = post(client, ARCHER).json()["request_hash"]

    # The generations, the row, the queue position.
    with django_assert_num_queries(3):
        assert client.get(f"/api/v1/build/{request_hash}").status_code == 202
    finish(Build.objects.get(request_hash=request_hash))
    with django_assert_num_queries(2):
        assert client.head(f"/api/v1/build/{request_hash}").status_code == 200
    with django_assert_num_queries(2):  # one a request
        get = client.get(f"/api/v1/build/{request_hash}")
        head = client.head(f"/api/v1/build/{request_hash}")

    assert get.status_code == head.status_code == 200
    assert get.json()["manifest"] == {"base-files": "1655-r1", "luci": "25.100-r1"}
    assert head["X-Imagebuilder-Status"] == "done"
    assert head["X-Queue-Position"] == "0"
    assert head.content == b""


def test_a_kept_answer_is_the_answer_the_database_gives(client):
    request_hash = post(client, {**ARCHER, "packages": ["luci"]}).json()["request_hash"]
    finish(Build.objects.get(request_hash=request_hash))

    kept = client.get(f"/api/v1/build/{request_hash}")  # rendered and kept
    memory.clear()
    fresh = client.get(f"/api/v1/build/{request_hash}")

    assert kept.content == fresh.content
    assert dict(kept.headers) == dict(fresh.headers)


def test_an_expired_build_is_read_again(client, django_assert_num_queries):
    request_hash = post(client, ARCHER).json()["request_hash"]
    build = finish(Build.objects.get(request_hash=request_hash))
    Build.objects.filter(pk=build.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(f"/api/v1/build/{request_hash}").status_code == 200

    with django_assert_num_queries(2):  # the generations and the row
        assert client.get(f"/api/v1/build/{request_hash}").status_code == 200


def test_a_build_deleted_and_requested_again_is_not_answered_from_memory(client):
    request_hash = post(client, ARCHER).json()["request_hash"]
    finish(Build.objects.get(request_hash=request_hash))
    assert client.get(f"/api/v1/build/{request_hash}").status_code == 200
    Build.objects.filter(request_hash=request_hash).delete()

    again = post(client, ARCHER)
    poll = client.get(f"/api/v1/build/{request_hash}")

    assert again.status_code == poll.status_code == 202
    assert poll.json()["detail"] == "queued"
