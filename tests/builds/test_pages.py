"""The public HTML pages: home, the images built, one build, and the catalogue browser."""

from datetime import timedelta

import pytest
from django.utils import timezone

from builds.models import Build
from builds.pages import PAGE_SIZE
from targets.models import Branch, Profile, Target, Version, device_title
from tests.builds.catalogue import make_build

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue() -> dict:
    """24.10.1 (enabled branch) with ath79/generic and two profiles; 22.03.7 disabled."""
    branch = Branch.objects.get(name="24.10")
    version = Version.objects.create(branch=branch, name="24.10.1")
    Version.objects.create(branch=branch, name="24.10.10")
    Version.objects.create(branch=branch, name="24.10-SNAPSHOT")
    target = Target.objects.create(
        version=version, name="ath79/generic", arch_packages="mips_24kc", version_code="r1-abc"
    )
    Target.objects.create(version=version, name="x86/64", arch_packages="x86_64")
    Profile.objects.create(
        target=target,
        name="tplink_archer-c7-v5",
        titles=[{"vendor": "TP-Link", "model": "Archer C7", "variant": "v5"}],
        supported_devices=["tplink,archer-c7-v5"],
    )
    Profile.objects.create(target=target, name="8dev_carambola2", titles=[{"title": "Carambola2"}])
    old = Version.objects.create(branch=Branch.objects.get(name="22.03"), name="22.03.7")
    Target.objects.create(version=old, name="ath79/generic", arch_packages="mips_24kc")
    return {"version": version, "target": target}


# Home


def test_home_says_what_the_server_is_and_links_the_api(client):
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Attended Sysupgrade" in html
    assert "owut" in html and "auc" in html
    assert 'href="/json/v1/overview.json"' in html
    assert 'href="/api/v1/stats"' in html
    assert 'href="/builds/"' in html


def test_home_shows_live_numbers(client, catalogue):
    make_build(status=Build.Status.DONE)
    make_build(status=Build.Status.DONE)
    make_build(status=Build.Status.QUEUED)
    make_build(status=Build.Status.STARTED)

    response = client.get("/")

    assert response.context["counts"] == {"done": 2, "queued": 1, "started": 1}
    # Seeded enabled branches: SNAPSHOT, 25.12, 24.10, 23.05; only 24.10 has versions.
    assert response.context["version_count"] == 3
    assert len(response.context["branches"]) == 4


def test_home_lists_enabled_branches_with_versions_newest_first(client, catalogue):
    response = client.get("/")

    branch = next(b for b in response.context["branches"] if b.name == "24.10")
    assert branch.version_names == ["24.10.10", "24.10.1", "24.10-SNAPSHOT"]
    assert "22.03.7" not in response.content.decode()


def test_home_costs_four_queries_however_many_rows(client, catalogue, django_assert_num_queries):
    for _ in range(10):
        make_build()

    # counts, branches, their versions, the latest images
    with django_assert_num_queries(4):
        client.get("/")


# The images list


def test_build_list_shows_builds_newest_first(client):
    old = make_build(profile="old_one", enqueued_at=timezone.now() - timedelta(days=1))
    new = make_build(profile="new_one", enqueued_at=timezone.now())

    response = client.get("/builds/")

    assert response.status_code == 200
    assert list(response.context["page"].object_list) == [new, old]
    html = response.content.decode()
    assert f'href="/builds/{new.request_hash}/"' in html
    assert html.index("new_one") < html.index("old_one")


def test_build_list_shows_status_as_badges(client):
    for status in Build.Status.values:
        make_build(status=status)

    html = client.get("/builds/").content.decode()

    for status in Build.Status.values:
        assert f'class="badge badge-{status}"' in html


@pytest.mark.parametrize(
    "query, expected",
    [
        ("version=23.05.5", {"v23"}),
        ("target=x86/64", {"x86"}),
        ("profile=glinet_gl-mt6000", {"glinet"}),
        ("status=failed", {"failed"}),
        ("version=24.10.1&target=ath79/generic&status=done", {"plain", "glinet"}),
    ],
)
def test_build_list_filters_by_field(client, query, expected):
    make_build(client="plain")
    make_build(client="v23", version="23.05.5")
    make_build(client="x86", target="x86/64", profile="generic")
    make_build(client="glinet", profile="glinet_gl-mt6000")
    make_build(client="failed", status=Build.Status.FAILED)

    response = client.get(f"/builds/?{query}")

    assert {b.client for b in response.context["page"].object_list} == expected


def test_build_list_ignores_an_unknown_status(client):
    make_build()

    response = client.get("/builds/?status=bogus")

    assert response.context["filters"]["status"] == ""
    assert len(response.context["page"].object_list) == 1


def test_build_list_search_finds_a_package_in_the_manifest(client):
    make_build(client="with", manifest={"tcpdump": "4.99.4-r1", "luci": "1"})
    make_build(client="without", manifest={"luci": "1"})

    response = client.get("/builds/?q=tcpdump")

    assert [b.client for b in response.context["page"].object_list] == ["with"]


def test_build_list_search_finds_a_profile_by_part_of_its_name(client):
    make_build(client="archer", profile="tplink_archer-c7-v5")
    make_build(client="other", profile="glinet_gl-mt6000")

    response = client.get("/builds/?q=ARCHER")

    assert [b.client for b in response.context["page"].object_list] == ["archer"]


def test_build_list_search_finds_a_build_by_the_start_of_its_hash(client):
    build = make_build()
    make_build()

    response = client.get(f"/builds/?q={build.request_hash[:12]}")

    assert list(response.context["page"].object_list) == [build]


def test_build_list_says_when_nothing_matches(client):
    make_build()

    response = client.get("/builds/?q=no-such-package")

    assert "No images match these filters." in response.content.decode()


def test_build_list_pages_keep_the_filters(client):
    for _ in range(PAGE_SIZE + 1):
        make_build(version="25.12.0")
    make_build(version="24.10.1")

    first = client.get("/builds/?version=25.12.0")
    second = client.get("/builds/?version=25.12.0&page=2")

    assert len(first.context["page"].object_list) == PAGE_SIZE
    assert 'href="?version=25.12.0&amp;page=2"' in first.content.decode()
    assert len(second.context["page"].object_list) == 1


def test_build_list_shows_the_last_page_for_a_page_past_the_end(client):
    make_build()

    response = client.get("/builds/?page=99")

    assert response.status_code == 200
    assert response.context["page"].number == 1


def test_build_list_costs_the_same_queries_for_one_page_of_rows(
    client, catalogue, django_assert_num_queries
):
    for _ in range(PAGE_SIZE + 5):
        make_build(manifest={"luci": "1"}, stdout="x" * 1000)

    # count, page rows, versions for the filter, target names for the filter
    with django_assert_num_queries(4):
        client.get("/builds/?q=luci&status=done")


# One build


def test_build_detail_shows_images_with_download_links(client):
    build = make_build(
        bin_dir="abc123",
        images=[
            {
                "name": "openwrt-24.10.1-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
                "type": "sysupgrade",
                "filesystem": "squashfs",
                "sha256": "a" * 64,
                "sha256_unsigned": "b" * 64,
                "size": 7340032,
            },
            {"name": "factory.bin", "type": "factory", "filesystem": "squashfs", "sha256": "c"},
        ],
    )

    response = client.get(f"/builds/{build.request_hash}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert (
        'href="/store/abc123/openwrt-24.10.1-ath79-generic-tplink_archer-c7-v5-squashfs'
        '-sysupgrade.bin"' in html
    )
    assert 'href="/store/abc123/factory.bin"' in html
    assert "a" * 64 in html
    assert "7.0\xa0MB" in html
    assert "squashfs" in html


def test_build_detail_shows_the_manifest_sorted_by_package(client):
    build = make_build(manifest={"zlib": "1.3-r1", "base-files": "1655", "luci": "25.1"})

    response = client.get(f"/builds/{build.request_hash}/")

    assert response.context["manifest"] == [
        ("base-files", "1655"),
        ("luci", "25.1"),
        ("zlib", "1.3-r1"),
    ]
    html = response.content.decode()
    assert html.index("base-files") < html.index("zlib")
    assert 'id="manifest-filter"' in html


def test_build_detail_shows_the_request_and_the_package_changes(client):
    build = make_build(
        request={
            "version": "24.10.1",
            "target": "ath79/generic",
            "profile": "tplink_archer-c7-v5",
            "packages": ["luci", "tcpdump"],
            "diff_packages": True,
            "repositories": {"extra": "https://example.org/feed"},
        },
        package_changes_applied=[
            {"id": 3, "kind": "rename", "source": "firewall", "target": "firewall4", "note": "nft"}
        ],
        build_cmd=["make", "image", "PROFILE=tplink_archer-c7-v5", "PACKAGES=luci tcpdump"],
    )

    html = client.get(f"/builds/{build.request_hash}/").content.decode()

    assert "<code>tcpdump</code>" in html
    assert "https://example.org/feed" in html
    assert "<code>firewall</code>" in html and "<code>firewall4</code>" in html
    assert "make image PROFILE=tplink_archer-c7-v5 &#x27;PACKAGES=luci tcpdump&#x27;" in html


def test_build_detail_never_shows_the_first_boot_script(client):
    build = make_build(request={"version": "24.10.1", "defaults": "uci set wifi.key=hunter2"})

    html = client.get(f"/builds/{build.request_hash}/").content.decode()

    assert "hunter2" not in html
    assert "a first-boot script of 24 bytes (not shown)" in html


def test_build_detail_of_a_failed_build_shows_the_detail_and_the_end_of_stderr(client):
    stderr = "\n".join(f"noise line {n}" for n in range(500)) + "\nERROR: unable to select"
    build = make_build(
        status=Build.Status.FAILED,
        detail="Error: Impossible package selection: missing (foo)",
        stderr=stderr,
    )

    html = client.get(f"/builds/{build.request_hash}/").content.decode()

    assert "Error: Impossible package selection: missing (foo)" in html
    assert "ERROR: unable to select" in html
    assert "noise line 499" in html
    assert "noise line 10\n" not in html


def test_build_detail_of_a_queued_build_shows_its_place_in_the_queue(client):
    # Both sent to the broker, as the API leaves them.
    make_build(
        status=Build.Status.QUEUED,
        enqueued_at=timezone.now() - timedelta(minutes=5),
        sent_at=timezone.now(),
    )
    build = make_build(
        status=Build.Status.QUEUED, enqueued_at=timezone.now(), sent_at=timezone.now()
    )

    response = client.get(f"/builds/{build.request_hash}/")

    assert response.context["builds_ahead"] == 1
    assert "1 build ahead of it" in response.content.decode()


def test_build_detail_of_a_started_build_shows_its_step(client):
    build = make_build(status=Build.Status.STARTED, imagebuilder_status="building_image")

    html = client.get(f"/builds/{build.request_hash}/").content.decode()

    assert "Building now" in html and "building_image" in html


def test_build_detail_of_an_unknown_hash_is_404(client):
    response = client.get(f"/builds/{'0' * 64}/")

    assert response.status_code == 404


def test_build_detail_costs_one_query(client, django_assert_num_queries):
    build = make_build(manifest={f"pkg{n}": "1" for n in range(300)}, images=[{"name": "x.bin"}])

    with django_assert_num_queries(1):
        client.get(f"/builds/{build.request_hash}/")


# Nothing a client sends reaches the page unescaped.


def test_pages_escape_text_from_clients(client):
    evil = "<script>alert(1)</script>"
    build = make_build(
        client=evil,
        profile="x<b>y",
        request={"client": evil, "packages": [evil]},
        manifest={evil: evil},
        package_changes_applied=[{"kind": "add", "target": evil, "note": evil}],
        images=[{"name": evil, "type": evil}],
        bin_dir="d",
        status=Build.Status.FAILED,
        detail=evil,
        stderr=evil,
    )

    for path in ("/", "/builds/", f"/builds/{build.request_hash}/", f"/builds/?q={evil}"):
        html = client.get(path).content.decode()
        assert "<script>alert" not in html, path
        assert "x<b>y" not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/builds/").content.decode()


# The catalogue browser


def test_version_list_shows_enabled_branches_only(client, catalogue):
    html = client.get("/targets/").content.decode()

    assert 'href="/targets/24.10.1/"' in html
    assert "22.03.7" not in html


def test_target_list_shows_targets_with_their_profile_counts(client, catalogue):
    response = client.get("/targets/24.10.1/")

    assert response.status_code == 200
    rows = {t.name: t.profile_count for t in response.context["targets"]}
    assert rows == {"ath79/generic": 2, "x86/64": 0}
    assert 'href="/targets/24.10.1/ath79/generic/"' in response.content.decode()


def test_profile_list_links_each_profile_to_its_json_document(client, catalogue):
    response = client.get("/targets/24.10.1/ath79/generic/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'href="/json/v1/releases/24.10.1/targets/ath79/generic/tplink_archer-c7-v5.json"' in html
    assert "TP-Link Archer C7 v5" in html
    assert "tplink,archer-c7-v5" in html


@pytest.mark.parametrize(
    "path", ["/targets/9.9.9/", "/targets/22.03.7/", "/targets/24.10.1/foo/bar/"]
)
def test_catalogue_pages_404_for_unknown_or_disabled_versions_and_targets(client, catalogue, path):
    assert client.get(path).status_code == 404


def test_catalogue_pages_cost_a_fixed_number_of_queries(
    client, catalogue, django_assert_num_queries
):
    with django_assert_num_queries(2):
        client.get("/targets/")
    with django_assert_num_queries(2):
        client.get("/targets/24.10.1/")
    with django_assert_num_queries(2):
        client.get("/targets/24.10.1/ath79/generic/")


# Helpers


def test_device_title_joins_vendor_model_and_variant():
    titles = [
        {"vendor": "TP-Link", "model": "Archer C7", "variant": "v5"},
        {"title": "Generic x86/64"},
    ]

    assert device_title(titles) == "TP-Link Archer C7 v5 / Generic x86/64"
    assert device_title(None) == ""


# Latest images, links and limits on the home page


def test_home_latest_images_are_distinct_devices_with_their_titles(client):
    archer = {"titles": [{"vendor": "TP-Link", "model": "Archer C7", "variant": "v5"}]}
    newest = make_build(result=archer, enqueued_at=timezone.now())
    make_build(result=archer, enqueued_at=timezone.now() - timedelta(minutes=1))
    other = make_build(profile="8dev_carambola2", enqueued_at=timezone.now() - timedelta(hours=1))
    older_version = make_build(
        version="23.05.5", result=archer, enqueued_at=timezone.now() - timedelta(hours=2)
    )
    make_build(status=Build.Status.FAILED, profile="failed_one")

    response = client.get("/")

    latest = response.context["latest"]
    assert [row["request_hash"] for row in latest] == [
        newest.request_hash,
        other.request_hash,
        older_version.request_hash,
    ]
    assert latest[0]["title"] == "TP-Link Archer C7 v5"
    assert latest[1]["title"] == "8dev_carambola2"  # no titles recorded: the profile id
    html = response.content.decode()
    assert f'href="/builds/{newest.request_hash}/">TP-Link Archer C7 v5</a>' in html
    assert "OpenWrt 23.05.5 · ath79/generic" in html
    assert "failed_one" not in html


def test_links_point_at_this_server(client, settings):
    settings.ASU_UPSTREAM_URL = "file:///srv/mirror"
    settings.ASU_FIRMWARE_SELECTOR_URL = ""

    html = client.get("/").content.decode()

    assert 'href="/api/docs/">API</a>' in html
    assert "file://" not in html
    assert "/srv/mirror" not in html
    assert "Firmware Selector" not in html


def test_the_firmware_selector_and_an_http_upstream_are_linked_when_set(client, settings):
    settings.ASU_UPSTREAM_URL = "https://mirror.example.org"
    settings.ASU_FIRMWARE_SELECTOR_URL = "https://selector.example.org/"

    html = client.get("/").content.decode()

    assert '<a href="https://mirror.example.org">' in html
    assert '<a href="https://selector.example.org/">Firmware Selector</a>' in html


def test_home_shows_the_servers_limits(client, settings):
    settings.ASU_ALLOW_DEFAULTS = False
    settings.ASU_MAX_ROOTFS_SIZE_MB = 512

    html = " ".join(client.get("/").content.decode().split())

    assert "First-boot script (<code>defaults</code>)</dt><dd>not accepted" in html
    assert "<dd>512 MB</dd>" in html
    assert "<dd>1 day (snapshot images until 00:00 UTC)</dd>" in html

    settings.ASU_ALLOW_DEFAULTS = True
    settings.ASU_MAX_DEFAULTS_LENGTH = 20480
    html = " ".join(client.get("/").content.decode().split())

    assert "accepted, up to 20.0 KB" in html


# The device page


@pytest.fixture
def archers(catalogue) -> dict:
    """Archer C7 v2 and v5 in 24.10.1, v5 also in 24.10-SNAPSHOT and in the disabled 22.03."""
    target = catalogue["target"]
    target.default_packages = ["base-files", "dropbear", "ppp", "ppp-mod-pppoe"]
    target.save()
    Profile.objects.filter(name="tplink_archer-c7-v5").update(
        device_packages=["kmod-ath10k-ct", "-ppp-mod-pppoe"]
    )
    Profile.objects.create(
        target=target,
        name="tplink_archer-c7-v2",
        titles=[{"vendor": "TP-Link", "model": "Archer C7", "variant": "v2"}],
    )
    for name in ("24.10-SNAPSHOT", "22.03.7"):
        other = Target.objects.get_or_create(
            version=Version.objects.get(name=name), name="ath79/generic", arch_packages="mips_24kc"
        )[0]
        Profile.objects.create(
            target=other,
            name="tplink_archer-c7-v5",
            titles=[{"vendor": "TP-Link", "model": "Archer C7", "variant": "v5"}],
        )
    return catalogue


DEVICE = "/targets/24.10.1/ath79/generic/tplink_archer-c7-v5/"


def test_device_page_offers_the_enabled_versions_and_their_default_packages(client, archers):
    response = client.get(DEVICE)

    assert response.status_code == 200
    assert response.context["title"] == "TP-Link Archer C7 v5"
    assert response.context["versions"] == ["24.10.1", "24.10-SNAPSHOT"]
    # The target's defaults and the device's packages, less the device's removals.
    assert response.context["defaults"]["24.10.1"] == [
        "base-files",
        "dropbear",
        "kmod-ath10k-ct",
        "ppp",
    ]
    html = response.content.decode()
    assert 'data-client="asu-web/1"' in html
    assert 'data-api="/api/v1/build"' in html
    assert 'id="device-defaults"' in html
    assert "<noscript>" in html


def test_device_page_links_the_configured_firmware_selector(client, archers, settings):
    settings.ASU_FIRMWARE_SELECTOR_URL = ""
    assert "Firmware Selector" not in client.get(DEVICE).content.decode()

    settings.ASU_FIRMWARE_SELECTOR_URL = "https://selector.example.org/"
    html = client.get(DEVICE).content.decode()

    assert (
        'href="https://selector.example.org/?version=24.10.1&amp;target=ath79%2Fgeneric'
        '&amp;id=tplink_archer-c7-v5"' in html
    )


@pytest.mark.parametrize(
    "path",
    [
        "/targets/24.10.1/ath79/generic/no-such-device/",
        "/targets/22.03.7/ath79/generic/tplink_archer-c7-v5/",  # disabled branch
        "/targets/24.10.1/x86/64/tplink_archer-c7-v5/",
    ],
)
def test_device_page_404s_for_devices_not_served(client, archers, path):
    assert client.get(path).status_code == 404


def test_device_page_costs_one_query(client, archers, django_assert_num_queries):
    with django_assert_num_queries(1):
        client.get(DEVICE)


def test_profile_list_links_each_profile_to_its_device_page(client, catalogue):
    html = client.get("/targets/24.10.1/ath79/generic/").content.decode()

    assert f'href="{DEVICE}"' in html


# Search


def test_search_finds_devices_by_words_of_their_title(client, archers):
    response = client.get("/search/?q=archer+C7")

    devices = response.context["devices"]
    assert [(d["profile"], d["versions"]) for d in devices] == [
        ("tplink_archer-c7-v2", ["24.10.1"]),
        ("tplink_archer-c7-v5", ["24.10.1", "24.10-SNAPSHOT"]),
    ]
    assert devices[1]["url"] == DEVICE
    assert response.context["builds"] == []


def test_search_finds_a_device_by_its_profile_id(client, archers):
    response = client.get("/search/?q=carambola2")

    assert [d["title"] for d in response.context["devices"]] == ["Carambola2"]


def test_search_finds_builds_by_a_hash_prefix_of_six_or_more(client, archers):
    build = make_build()
    twin = make_build(request_hash=build.request_hash[:6] + "0" * 58)

    response = client.get(f"/search/?q={build.request_hash[:6].upper()}")

    assert {b.pk for b in response.context["builds"]} == {build.pk, twin.pk}
    assert client.get(f"/search/?q={build.request_hash[:5]}").context["builds"] == []


def test_search_opens_the_one_build_a_hash_prefix_names(client, archers):
    build = make_build()

    response = client.get(f"/search/?q={build.request_hash[:10]}")

    assert response.status_code == 302
    assert response["Location"] == f"/builds/{build.request_hash}/"


def test_search_says_when_nothing_matches(client, archers):
    response = client.get("/search/?q=no+such+router")

    assert response.context["devices"] == []
    assert "No device's name or profile holds every word" in response.content.decode()


def test_search_costs_two_queries(client, archers, django_assert_num_queries):
    make_build()
    with django_assert_num_queries(2):
        client.get("/search/?q=abcdef")
    with django_assert_num_queries(1):
        client.get("/search/?q=archer")


def test_build_list_search_finds_a_requested_package_of_a_failed_build(client):
    make_build(
        client="asked", status=Build.Status.FAILED, packages=["-ppp", "surely-not-a-package"]
    )
    make_build(client="other", packages=["surely-not-a-package-either"])

    response = client.get("/builds/?q=surely-not-a-package")

    assert [b.client for b in response.context["page"].object_list] == ["asked"]


# Following a build


def test_a_queued_build_page_follows_its_build(client):
    build = make_build(status=Build.Status.QUEUED, sent_at=timezone.now())

    html = client.get(f"/builds/{build.request_hash}/").content.decode()

    assert f'data-follow="/api/v1/build/{build.request_hash}"' in html
    assert "builds/build.js" in html
    assert "Reload this page to follow it." in html  # what a browser without JS shows


def test_a_finished_build_page_does_not_poll(client):
    build = make_build()

    html = client.get(f"/builds/{build.request_hash}/").content.decode()

    assert "data-follow" not in html
    assert "builds/build.js" not in html
