"""overview.json, branches.json, latest.json and the redirects to them."""

import pytest

from packages.models import PackageChange
from targets.models import Branch, Target, Version

ORIGIN = {"HTTP_ORIGIN": "https://sysupgrade.example"}


def test_overview_lists_the_branches_with_their_versions_and_targets(client, synced):
    overview = client.get("/json/v1/overview.json").json()
    assert list(overview["branches"]) == ["SNAPSHOT", "25.12", "24.10", "23.05"]
    branch = overview["branches"]["24.10"]
    assert branch == {
        "name": "24.10",
        "path": "releases/{version}",
        "enabled": True,
        "snapshot": False,
        "path_packages": "DEPRECATED",
        "branch_off_rev": 27990,
        "package_changes": branch["package_changes"],
        "versions": ["24.10.1"],
        "targets": {
            "ath79/generic": "mips_24kc",
            "mediatek/filogic": "aarch64_cortex-a53",
            "x86/64": "x86_64",
        },
    }
    assert isinstance(branch["package_changes"], list)
    assert overview["branches"]["23.05"]["targets"] == {
        "ath79/generic": "mips_24kc",
        "x86/64": "x86_64",
    }
    assert overview["branches"]["SNAPSHOT"]["versions"] == ["SNAPSHOT"]


def test_overview_names_latest_releases_upstream_and_server(client, synced, upstream, settings):
    settings.ASU_CONTACT = "admin@example.org"
    settings.ASU_ALLOW_DEFAULTS = True
    settings.ASU_REPOSITORY_ALLOW_LIST = ["https://feed.example/"]
    overview = client.get("/json/v1/overview.json").json()
    assert overview["latest"] == ["25.12.0", "24.10.1", "23.05.5"]
    assert overview["upstream_url"] == upstream
    assert overview["server"] == {
        "version": "0.1.0",
        "contact": "admin@example.org",
        "allow_defaults": True,
        "repository_allow_list": ["https://feed.example/"],
        "max_custom_rootfs_size_mb": 1024,
        "max_defaults_length": 20480,
    }


def test_a_disabled_branch_leaves_every_document(client, synced):
    Branch.objects.filter(name="23.05").update(enabled=False)
    assert "23.05" not in client.get("/json/v1/overview.json").json()["branches"]
    assert "23.05" not in [b["name"] for b in client.get("/json/v1/branches.json").json()]
    assert client.get("/json/v1/latest.json").json() == {"latest": ["25.12.0", "24.10.1"]}
    assert client.get("/api/v1/revision/23.05.5/x86/64").status_code == 400
    assert client.get("/json/v1/releases/23.05.5/targets/x86/64/index.json").status_code == 404


def test_a_branch_without_targets_is_not_listed(client, synced):
    Branch.objects.filter(name="22.03").update(enabled=True)
    Version.objects.create(name="22.03.7", branch=Branch.objects.get(name="22.03"))
    overview = client.get("/json/v1/overview.json").json()
    assert "22.03" not in overview["branches"]
    assert all(branch["targets"] for branch in overview["branches"].values())


def test_versions_are_newest_first_with_the_snapshot_last(client, synced):
    branch = Branch.objects.get(name="24.10")
    for name in ("24.10.0", "24.10.0-rc1", "24.10-SNAPSHOT", "24.10.2-rc1"):
        version = Version.objects.create(name=name, branch=branch)
        version.targets.create(name="x86/64", arch_packages="x86_64")
    overview = client.get("/json/v1/overview.json").json()
    assert overview["branches"]["24.10"]["versions"] == [
        "24.10.2-rc1",
        "24.10.1",
        "24.10.0",
        "24.10.0-rc1",
        "24.10-SNAPSHOT",
    ]
    # A final release is preferred to a newer release candidate.
    assert overview["latest"] == ["25.12.0", "24.10.1", "23.05.5"]


def test_latest_takes_a_release_candidate_when_the_branch_has_no_release(db, client):
    branch = Branch.objects.get(name="25.12")
    for name in ("25.12.0-rc1", "25.12.0-rc2", "25.12-SNAPSHOT"):
        version = Version.objects.create(name=name, branch=branch)
        version.targets.create(name="x86/64", arch_packages="x86_64")
    assert client.get("/json/v1/latest.json").json() == {"latest": ["25.12.0-rc2"]}


def test_branches_json_is_the_list_auc_reads(client, synced):
    branches = client.get("/json/v1/branches.json").json()
    assert [b["name"] for b in branches] == ["SNAPSHOT", "25.12", "24.10", "23.05"]
    for branch in branches:
        assert {"enabled", "name", "path", "path_packages", "versions", "targets"} <= set(branch)
    overview = client.get("/json/v1/overview.json").json()
    assert branches == list(overview["branches"].values())


def test_latest_json(client, synced):
    assert client.get("/json/v1/latest.json").json() == {
        "latest": ["25.12.0", "24.10.1", "23.05.5"]
    }


def test_an_empty_catalogue_has_empty_documents(client, db):
    assert client.get("/json/v1/overview.json").json()["branches"] == {}
    assert client.get("/json/v1/branches.json").json() == []
    assert client.get("/json/v1/latest.json").json() == {"latest": []}


def test_overview_is_one_query_while_nothing_changes(client, synced, django_assert_num_queries):
    first = client.get("/json/v1/overview.json")
    with django_assert_num_queries(1):
        again = client.get("/json/v1/overview.json")
    assert again.content == first.content


@pytest.mark.parametrize("path", ["/json/v1/overview.json", "/json/v1/branches.json"])
def test_documents_show_a_branch_edit_at_once(client, synced, path):
    client.get(path)
    branch = Branch.objects.get(name="24.10")
    branch.branch_off_rev = 27999
    branch.save()

    document = client.get(path).json()

    listed = document["branches"].values() if "branches" in document else document
    assert {b["name"]: b["branch_off_rev"] for b in listed}["24.10"] == 27999


def test_documents_show_a_rule_edit_at_once(client, synced):
    def snapshot_changes() -> list[dict]:
        overview = client.get("/json/v1/overview.json").json()
        return overview["branches"]["SNAPSHOT"]["package_changes"]

    before = snapshot_changes()
    rule = PackageChange.objects.create(
        kind=PackageChange.Kind.RENAME, source="old-x", target="new-x", revision=1, publish=True
    )
    assert {"source": "old-x", "target": "new-x", "revision": 1, "mandatory": False} in (
        snapshot_changes()
    )
    rule.target = "newer-x"
    rule.save()
    assert "newer-x" in [change.get("target") for change in snapshot_changes()]
    PackageChange.objects.filter(pk=rule.pk).update(enabled=False)

    assert snapshot_changes() == before


def test_documents_show_a_new_target_at_once(client, synced):
    assert "ramips/mt7621" not in client.get("/json/v1/branches.json").json()[2]["targets"]
    Target.objects.create(
        version=Version.objects.get(name="24.10.1"), name="ramips/mt7621", arch_packages="mipsel"
    )

    branches = client.get("/json/v1/branches.json").json()

    assert branches[2]["targets"]["ramips/mt7621"] == "mipsel"


def test_documents_show_the_settings_of_the_moment(client, synced, settings):
    client.get("/json/v1/overview.json")
    settings.ASU_CONTACT = "someone@example.org"

    assert client.get("/json/v1/overview.json").json()["server"]["contact"] == "someone@example.org"


def test_documents_ignore_query_strings(client, synced):
    plain = client.get("/json/v1/overview.json").content
    assert client.get("/json/v1/overview.json?1712345678901").content == plain


@pytest.mark.parametrize("path", ["/json/v1/overview.json", "/json/v1/branches.json"])
def test_documents_carry_cors_headers(client, synced, path):
    response = client.get(path, **ORIGIN)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Content-Type"] == "application/json"


def test_a_preflight_is_answered_for_any_header(client, db):
    response = client.options(
        "/json/v1/overview.json",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type",
        **ORIGIN,
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert set(response["Access-Control-Allow-Methods"].split(", ")) == {"POST", "GET", "OPTIONS"}
    assert response["Access-Control-Allow-Headers"] == "*"


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/api/v1/overview", "/json/v1/overview.json"),
        ("/api/v1/latest", "/json/v1/latest.json"),
        ("/overview", "/json/v1/overview.json"),
        ("/api/overview", "/json/v1/overview.json"),
        ("/api/v1/overview?1712345678901", "/json/v1/overview.json"),
    ],
)
def test_old_paths_redirect_permanently_with_cors_headers(client, db, path, location):
    response = client.get(path, **ORIGIN)
    assert response.status_code == 301
    assert response["Location"] == location
    assert response["Access-Control-Allow-Origin"] == "*"


def test_documents_are_served_without_asking_upstream(client, synced, settings, refused_url):
    settings.ASU_UPSTREAM_URL = refused_url
    assert client.get("/json/v1/overview.json").status_code == 200
    assert client.get("/json/v1/releases/24.10.1/targets/x86/64/index.json").status_code == 200
    assert client.get("/api/v1/revision/SNAPSHOT/x86/64").status_code == 200


def test_documents_refuse_writes(client, db):
    assert client.put("/json/v1/overview.json").status_code == 405
