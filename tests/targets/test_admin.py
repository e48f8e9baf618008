"""The catalogue in the admin: branches switched on and off, the rest read-only."""

import pytest

from targets.models import Branch, Profile, Target, Version


@pytest.fixture
def admin(admin_client, synced):
    return admin_client


def test_a_maintainer_switches_a_branch_off_from_the_list(admin):
    changelist = admin.get("/admin/targets/branch/")
    assert changelist.status_code == 200
    branches = list(Branch.objects.all())
    form = {
        "form-TOTAL_FORMS": str(len(branches)),
        "form-INITIAL_FORMS": str(len(branches)),
        "_save": "Save",
    }
    for number, branch in enumerate(branches):
        form[f"form-{number}-id"] = str(branch.pk)
        if branch.enabled and branch.name != "23.05":
            form[f"form-{number}-enabled"] = "on"
    response = admin.post("/admin/targets/branch/", form)
    assert response.status_code == 302
    assert not Branch.objects.get(name="23.05").enabled
    assert Branch.objects.get(name="24.10").enabled
    assert "23.05" not in admin.get("/json/v1/overview.json").json()["branches"]


def test_a_maintainer_edits_a_branch(admin):
    branch = Branch.objects.get(name="24.10")
    page = f"/admin/targets/branch/{branch.pk}/change/"
    assert admin.get(page).status_code == 200
    # A later branch-off revision; "snapshot" unticked, "enabled" ticked.
    form = {
        "name": "24.10",
        "path": "releases/{version}",
        "enabled": "on",
        "branch_off_rev": "27999",
        "order": "2410",
        "_save": "Save",
    }
    response = admin.post(page, form)
    assert response.status_code == 302
    branch.refresh_from_db()
    assert branch.branch_off_rev == 27999
    assert branch.enabled and not branch.snapshot
    branches = admin.get("/json/v1/branches.json").json()
    assert [b["branch_off_rev"] for b in branches if b["name"] == "24.10"] == [27999]


@pytest.mark.parametrize(
    ("path", "search", "expected"),
    [
        ("/admin/targets/version/", "24.10", "24.10.1"),
        ("/admin/targets/target/", "filogic", "mediatek/filogic"),
        ("/admin/targets/profile/", "carambola", "8dev_carambola2"),
        ("/admin/targets/profile/", "archer-c7", "tplink_archer-c7-v5"),
    ],
)
def test_the_catalogue_is_searchable(admin, path, search, expected):
    response = admin.get(path, {"q": search})
    assert response.status_code == 200
    assert expected in response.content.decode()


def test_the_catalogue_is_filterable(admin):
    version = Version.objects.get(name="23.05.5")
    response = admin.get("/admin/targets/target/", {"version__id__exact": version.pk})
    assert response.status_code == 200
    assert "2 targets" in response.content.decode()


def test_the_catalogue_cannot_be_edited(admin):
    target = Target.objects.get(version__name="24.10.1", name="x86/64")
    profile = Profile.objects.filter(target=target).first()
    assert admin.get("/admin/targets/target/add/").status_code == 403
    page = admin.get(f"/admin/targets/target/{target.pk}/change/")
    assert page.status_code == 200  # a view-only page
    assert 'name="_save"' not in page.content.decode()
    assert admin.post(f"/admin/targets/profile/{profile.pk}/delete/").status_code == 403
