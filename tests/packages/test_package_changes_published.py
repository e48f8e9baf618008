"""What clients see of the rules: `package_changes` in overview.json and branches.json,
and the package-changes API with its dry run."""

import pytest

from packages.changes import published_changes
from packages.models import PackageChange
from targets.models import Branch
from tests.packages.rules import rule, scope

# Every answer is also checked against the OpenAPI description (tests/schema.py).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("documented_api")]

# openwrt/asu's package_changes_list, as it publishes it.
ASU_CHANGES = [
    {"source": "firewall", "target": "firewall4", "revision": 18611, "mandatory": False},
    {"source": "kmod-nft-nat6", "revision": 20282, "mandatory": True},
    {"source": "libustream-wolfssl", "target": "libustream-mbedtls", "revision": 21994,
     "mandatory": False},
    {"source": "px5g-wolfssl", "target": "px5g-mbedtls", "revision": 21994, "mandatory": False},
    {"source": "wpad-basic-wolfssl", "target": "wpad-basic-mbedtls", "revision": 21994,
     "mandatory": False},
    {"source": "luci-app-diag-core", "revision": 25984, "mandatory": True},
    {"source": "auc", "target": "owut", "revision": 26792, "mandatory": False},
    {"source": "luci-app-opkg", "target": "luci-app-package-manager", "revision": 27897,
     "mandatory": False},
    {"source": "opkg", "target": "apk-mbedtls", "revision": 28056, "mandatory": False},
]  # fmt: skip


def published(name: str) -> list[dict]:
    return published_changes(Branch.objects.get(name=name))


@pytest.mark.parametrize(
    "branch,count", [("SNAPSHOT", 9), ("25.12", 9), ("24.10", 8), ("23.05", 5), ("22.03", 1)]
)
def test_each_branch_publishes_the_asu_changes_up_to_its_branch_off(branch, count):
    assert published(branch) == ASU_CHANGES[:count]


def test_the_published_changes_match_the_rows():
    rows = PackageChange.objects.filter(enabled=True, publish=True).order_by("revision", "id")
    expected = [
        {
            **({"source": row.source} if row.source else {}),
            **({"target": row.target} if row.target else {}),
            "revision": row.revision,
            "mandatory": row.mandatory,
        }
        for row in rows
    ]
    assert published("SNAPSHOT") == expected


def test_an_edit_is_published_at_once():
    change = PackageChange.objects.get(source="auc", publish=True)
    change.target = "owut-ng"
    change.save()
    assert {"source": "auc", "target": "owut-ng", "revision": 26792, "mandatory": False} in (
        published("24.10")
    )
    change.enabled = False
    change.save()
    assert all(entry.get("source") != "auc" for entry in published("24.10"))


def test_an_addition_publishes_only_target_and_a_removal_only_source():
    rule("add", target="new-pkg", revision=30000, publish=True, mandatory=True)
    rule("remove", "old-pkg", revision=30001, publish=True)
    assert published("SNAPSHOT")[-2:] == [
        {"target": "new-pkg", "revision": 30000, "mandatory": True},
        {"source": "old-pkg", "revision": 30001, "mandatory": False},
    ]


def test_rules_not_marked_for_publishing_stay_on_the_server():
    rule("rename", "a-pkg", "b-pkg", revision=100)
    assert all(entry.get("source") != "a-pkg" for entry in published("SNAPSHOT"))


def test_a_published_rule_of_a_branch_is_published_there_only():
    rule("rename", "a-pkg", "b-pkg", revision=100, branch="24.10", publish=True)
    assert {"source": "a-pkg", "target": "b-pkg", "revision": 100, "mandatory": False} in (
        published("24.10")
    )
    assert all(entry.get("source") != "a-pkg" for entry in published("25.12"))


def test_overview_and_branches_json_carry_the_published_changes(client):
    scope("24.10.1", version_code="r28597-0425664679")
    scope("SNAPSHOT", version_code="r33001-0123456789")
    overview = client.get("/json/v1/overview.json").json()
    assert overview["branches"]["24.10"]["package_changes"] == ASU_CHANGES[:8]
    assert overview["branches"]["SNAPSHOT"]["package_changes"] == ASU_CHANGES
    branches = {b["name"]: b for b in client.get("/json/v1/branches.json").json()}
    assert branches["24.10"]["package_changes"] == ASU_CHANGES[:8]


# GET /api/v1/package-changes -------------------------------------------------------------


def test_it_lists_every_enabled_rule_without_a_version(client):
    rule("add", target="x-pkg", enabled=False)
    answer = client.get("/api/v1/package-changes").json()
    assert len(answer["package_changes"]) == PackageChange.objects.filter(enabled=True).count()
    assert answer["version"] is None


def test_it_lists_the_rules_in_effect_for_a_version_target_and_profile(client):
    scope("25.12.0", "kirkwood/generic", "checkpoint_l-50")
    answer = client.get(
        "/api/v1/package-changes?version=25.12.0&target=kirkwood/generic&profile=checkpoint_l-50"
    ).json()
    assert (answer["version"], answer["target"], answer["profile"]) == (
        "25.12.0",
        "kirkwood/generic",
        "checkpoint_l-50",
    )
    targets = {(r["kind"], r["source"], r["target"]) for r in answer["package_changes"]}
    assert ("add", None, "kmod-dsa-mv88e6xxx") in targets
    assert ("rename", "auc", "owut") in targets
    assert ("add", None, "kmod-dsa-gswip") not in targets
    dsa = next(r for r in answer["package_changes"] if r["target"] == "kmod-dsa-mv88e6xxx")
    assert dsa["branch"] == "25.12"
    assert dsa["targets"] == ["kirkwood/generic"]
    assert dsa["link"].startswith("https://github.com/openwrt/openwrt/commit/")


def test_it_lists_rules_of_any_target_when_none_is_given(client):
    scope("25.12.0")
    answer = client.get("/api/v1/package-changes?version=25.12.0").json()
    assert any(r["target"] == "kmod-dsa-gswip" for r in answer["package_changes"])
    assert all(r["target"] != "fitblk" for r in answer["package_changes"])  # a 24.10 rule


def test_it_refuses_an_unknown_version(client):
    response = client.get("/api/v1/package-changes?version=9.9.9")
    assert response.status_code == 400
    assert response.json()["status"] == 400
    assert response.json()["detail"].startswith("Unsupported version: 9.9.9")


def test_it_refuses_a_target_without_a_version(client):
    response = client.get("/api/v1/package-changes?target=ath79/generic")
    assert response.status_code == 400
    assert "version" in response.json()["detail"]


# POST /api/v1/package-changes/apply ------------------------------------------------------


def test_a_dry_run_returns_the_new_list_and_the_rules(client):
    scope("24.10.1", "ath79/generic", "tplink_archer-c7-v5")
    response = client.post(
        "/api/v1/package-changes/apply",
        {
            "version": "24.10.1",
            "target": "ath79/generic",
            "profile": "tplink,archer-c7-v5",
            "packages": ["luci", "+auc", "luci-i18n-opkg-de"],
        },
        content_type="application/json",
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["profile"] == "tplink_archer-c7-v5"
    assert answer["packages"] == ["luci", "owut", "luci-i18n-package-manager-de"]
    assert [(r["source"], r["target"]) for r in answer["package_changes_applied"]] == [
        ("auc", "owut"),
        ("luci-i18n-opkg-de", "luci-i18n-package-manager-de"),
    ]
    assert set(answer["package_changes_applied"][0]) == {"id", "kind", "source", "target", "note"}


def test_a_dry_run_without_a_profile_skips_the_rules_of_some_profiles(client):
    scope("25.12.0", "kirkwood/generic", "checkpoint_l-50")
    response = client.post(
        "/api/v1/package-changes/apply",
        {"version": "25.12.0", "target": "kirkwood/generic", "packages": ["luci"]},
        content_type="application/json",
    )
    assert response.json()["packages"] == ["luci"]


def test_a_dry_run_names_an_unknown_profile(client):
    scope("24.10.1")
    response = client.post(
        "/api/v1/package-changes/apply",
        {"version": "24.10.1", "target": "ath79/generic", "profile": "nope", "packages": []},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Unsupported profile: nope.")


def test_a_malformed_dry_run_is_refused_with_a_sentence(client):
    response = client.post(
        "/api/v1/package-changes/apply",
        {"version": "24.10.1", "target": "ath79", "packages": ["a b"]},
        content_type="application/json",
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert "target" in detail and "packages" in detail
