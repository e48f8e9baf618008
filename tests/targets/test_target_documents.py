"""Per-version documents: a target's index.json, an architecture's {arch}-index.json, a
profile's {profile}.json, and /api/v1/revision."""

import json

from packages.sync import sync_upstream
from targets.models import Target
from tests.targets.conftest import edit_json

ORIGIN = {"HTTP_ORIGIN": "https://sysupgrade.example"}


def mirror_packages(*index_files) -> dict:
    packages: dict = {}
    for path in index_files:
        packages.update(json.loads(path.read_text())["packages"])
    return packages


def test_index_json_has_the_target_packages_and_kmods(client, synced, mirror_dir):
    target = Target.objects.get(version__name="24.10.1", name="x86/64")
    folder = mirror_dir / "releases/24.10.1/targets/x86/64"
    response = client.get("/json/v1/releases/24.10.1/targets/x86/64/index.json", **ORIGIN)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response.json() == {
        "architecture": "x86_64",
        "packages": mirror_packages(
            folder / "packages/index.json", folder / f"kmods/{target.kmods_dir}/index.json"
        ),
    }


def test_index_json_architecture_matches_the_overview(client, synced):
    overview = client.get("/json/v1/overview.json").json()
    for branch in overview["branches"].values():
        for target, arch in branch["targets"].items():
            path = branch["path"].format(version=branch["versions"][0])
            index = client.get(f"/json/v1/{path}/targets/{target}/index.json").json()
            assert index["architecture"] == arch


def test_the_snapshot_folder_is_snapshots(client, synced):
    index = client.get("/json/v1/snapshots/targets/ath79/generic/index.json").json()
    assert index["architecture"] == "mips_24kc"
    assert "apk-mbedtls" in client.get("/json/v1/snapshots/packages/mips_24kc-index.json").json()


def test_arch_index_is_flat_over_all_feeds(client, synced, mirror_dir):
    feeds = mirror_dir / "releases/25.12.0/packages/aarch64_cortex-a53"
    response = client.get("/json/v1/releases/25.12.0/packages/aarch64_cortex-a53-index.json")
    assert response.status_code == 200
    assert response.json() == mirror_packages(
        *(
            feeds / feed / "index.json"
            for feed in ("base", "luci", "packages", "routing", "telephony")
        )
    )


def test_arch_index_names_have_no_abi_version(client, synced):
    packages = client.get("/json/v1/releases/23.05.5/packages/x86_64-index.json").json()
    assert "libubox" in packages
    assert not any(name.startswith("libubox2") for name in packages)


def test_unknown_folders_targets_and_architectures_are_404(client, synced):
    for path in (
        "/json/v1/releases/9.9.9/targets/x86/64/index.json",
        "/json/v1/releases/23.05.5/targets/mediatek/filogic/index.json",
        "/json/v1/releases/24.10.1/packages/sparc-index.json",
        "/json/v1/snapshot/packages/x86_64-index.json",
        "/json/v1/releases/24.10.1/targets/x86/64/nothing.json",
    ):
        response = client.get(path, **ORIGIN)
        assert response.status_code == 404, path
        assert response.json()["status"] == 404
        assert response.json()["detail"]
        assert response["Access-Control-Allow-Origin"] == "*"


def test_index_documents_take_two_queries_then_one(client, synced, django_assert_num_queries):
    path = "/json/v1/releases/24.10.1/targets/ath79/generic/index.json"
    with django_assert_num_queries(2):
        first = client.get(path).content
    with django_assert_num_queries(1):
        assert client.get(path).content == first
    path = "/json/v1/releases/24.10.1/packages/mips_24kc-index.json"
    with django_assert_num_queries(2):
        first = client.get(path).content
    with django_assert_num_queries(1):
        assert client.get(path).content == first


def test_a_sync_that_changes_packages_refreshes_the_cached_documents(client, own_mirror):
    path, _ = own_mirror
    target_url = "/json/v1/snapshots/targets/x86/64/index.json"
    arch_url = "/json/v1/snapshots/packages/x86_64-index.json"
    assert "new-core" not in client.get(target_url).json()["packages"]
    assert "new-feed" not in client.get(arch_url).json()
    folder = path / "snapshots"
    edit_json(
        folder / "targets/x86/64/packages/index.json",
        lambda data: data["packages"].update({"new-core": "1-r1"}),
    )
    edit_json(
        folder / "packages/x86_64/luci/index.json",
        lambda data: data["packages"].update({"new-feed": "2-r1"}),
    )
    assert sync_upstream().errors == []
    assert client.get(target_url).json()["packages"]["new-core"] == "1-r1"
    assert client.get(arch_url).json()["new-feed"] == "2-r1"


def test_profile_json_is_the_profiles_json_top_level_with_the_profile(client, synced, mirror_dir):
    upstream = json.loads(
        (mirror_dir / "releases/24.10.1/targets/ath79/generic/profiles.json").read_text()
    )
    response = client.get(
        "/json/v1/releases/24.10.1/targets/ath79/generic/tplink_archer-c7-v5.json", **ORIGIN
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    expected = {key: value for key, value in upstream.items() if key != "profiles"}
    expected |= upstream["profiles"]["tplink_archer-c7-v5"]
    expected |= {"id": "tplink_archer-c7-v5", "build_at": "2025-04-13T16:38:32.000000Z"}
    assert response.json() == expected


def test_profile_json_accepts_a_board_name(client, synced):
    response = client.get("/json/v1/releases/25.12.0/targets/ath79/generic/8dev,carambola2.json")
    assert response.status_code == 200
    assert response.json()["id"] == "8dev_carambola2"
    response = client.get("/json/v1/releases/25.12.0/targets/ath79/generic/carambola2.json")
    assert response.json()["id"] == "8dev_carambola2"


def test_profile_json_of_a_release_without_linux_kernel(client, synced):
    document = client.get("/json/v1/releases/23.05.5/targets/x86/64/generic.json").json()
    assert "linux_kernel" not in document
    assert document["version_number"] == "23.05.5"
    assert document["supported_devices"] == []


def test_revision_answers_the_version_code(client, synced):
    response = client.get("/api/v1/revision/SNAPSHOT/x86/64?1712345678901", **ORIGIN)
    assert response.status_code == 200
    assert response.json() == {"revision": "r33001-0123456789"}
    assert response["Access-Control-Allow-Origin"] == "*"
    assert client.get("/api/v1/revision/24.10.1/ath79/generic").json() == {
        "revision": "r28597-0425664679"
    }


def test_revision_of_an_unknown_version_is_400(client, synced):
    response = client.get("/api/v1/revision/9.9.9/x86/64", **ORIGIN)
    assert response.status_code == 400
    assert response.json() == {
        "status": 400,
        "title": "Bad Request",
        "detail": "Unsupported version: 9.9.9",
    }
    assert response["Access-Control-Allow-Origin"] == "*"


def test_revision_of_an_unknown_target_is_400(client, synced):
    response = client.get("/api/v1/revision/23.05.5/mediatek/filogic")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Unsupported target: mediatek/filogic. Version 23.05.5 does not offer it."
    )


def test_revision_takes_one_query(client, synced, django_assert_num_queries):
    with django_assert_num_queries(1):
        client.get("/api/v1/revision/24.10.1/x86/64")
