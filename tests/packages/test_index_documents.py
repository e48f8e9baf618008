"""The package documents of a version: a target's index.json and an architecture's
{arch}-index.json."""

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


def test_index_documents_take_three_queries_then_one(client, synced, django_assert_num_queries):
    # The shared generation, the target (or version), its packages; then the generation.
    path = "/json/v1/releases/24.10.1/targets/ath79/generic/index.json"
    with django_assert_num_queries(3):
        first = client.get(path).content
    with django_assert_num_queries(1):
        assert client.get(path).content == first
    path = "/json/v1/releases/24.10.1/packages/mips_24kc-index.json"
    with django_assert_num_queries(3):
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
