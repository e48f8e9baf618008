"""The package-change admin: who may see and edit, the forms, the history with field
changes, the warnings, the filters, the "try it" page and the read-only indexes."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User

from packages.models import Package, PackageChange, PackageIndex
from targets.models import Branch
from tests.packages.rules import rule, scope

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/packages/packagechange/"
ADD = CHANGELIST + "add/"
TRY = CHANGELIST + "try/"


def change_url(change: PackageChange) -> str:
    return f"{CHANGELIST}{change.pk}/change/"


def user(name: str, staff: bool = True, group: str | None = None) -> User:
    account = User.objects.create_user(name, password="x", is_staff=staff)
    if group:
        account.groups.add(Group.objects.get(name=group))
    return account


@pytest.fixture
def maintainer(client):
    client.force_login(user("maintainer", group="Package change maintainers"))
    return client


@pytest.fixture
def reviewer(client):
    client.force_login(user("reviewer", group="Package change reviewers"))
    return client


def form_data(change: PackageChange | None = None, **fields) -> dict:
    """What the change form posts for `change`, with `fields` typed over it."""
    data = {
        "kind": "rename",
        "source": "",
        "target": "",
        "only_if": "",
        "revision": "",
        "branch": "",
        "targets": "",
        "profiles": "",
        "order": "100",
        "note": "",
        "link": "",
        "apply_on_build": "on",
        "enabled": "on",
    }
    if change is not None:
        data.update(
            kind=change.kind,
            source=change.source,
            target=change.target,
            only_if=change.only_if,
            revision="" if change.revision is None else str(change.revision),
            branch=str(change.branch_id or ""),
            targets="\n".join(change.targets),
            profiles="\n".join(change.profiles),
            order=str(change.order),
            note=change.note,
            link=change.link,
        )
        for flag in ("mandatory", "later_branches", "apply_on_build", "publish", "enabled"):
            data.pop(flag, None)
            if getattr(change, flag):
                data[flag] = "on"
    for key, value in fields.items():
        if value is False:
            data.pop(key, None)
        else:
            data[key] = "on" if value is True else value
    return data


# Who gets in -----------------------------------------------------------------------------


def test_a_maintainer_edits_a_rule_through_the_form(maintainer):
    change = PackageChange.objects.get(source="auc", publish=True)
    response = maintainer.post(change_url(change), form_data(change, target="owut-ng"))
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.target == "owut-ng"


def test_a_maintainer_adds_a_rule_through_the_form(maintainer):
    branch = Branch.objects.get(name="25.12")
    response = maintainer.post(
        ADD,
        form_data(
            kind="add",
            target="kmod-foo",
            branch=str(branch.pk),
            targets="ath79/generic, x86/64",
            profiles="tplink,archer-c7-v5\n8dev_carambola2",
            note="needed",
        ),
    )
    assert response.status_code == 302
    change = PackageChange.objects.get(target="kmod-foo")
    assert change.targets == ["ath79/generic", "x86/64"]
    assert change.profiles == ["tplink_archer-c7-v5", "8dev_carambola2"]
    assert change.branch == branch


def test_the_form_says_what_is_wrong_with_a_rule(maintainer):
    response = maintainer.post(ADD, form_data(kind="rename", source="auc"))
    assert response.status_code == 200
    assert "A rename needs the package that comes in." in response.content.decode()
    assert not PackageChange.objects.filter(source="auc", publish=False).exists()


@pytest.mark.parametrize("url", [CHANGELIST, ADD, TRY, "/admin/packages/package/"])
def test_someone_not_staff_cannot_reach_the_change_pages(client, url):
    client.force_login(user("visitor", staff=False))
    response = client.get(url)
    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_someone_not_staff_cannot_edit_a_rule(client):
    client.force_login(user("visitor", staff=False))
    change = PackageChange.objects.get(source="auc", publish=True)
    response = client.post(change_url(change), form_data(change, target="evil"))
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.target == "owut"


def test_staff_without_a_group_see_no_rules(client):
    client.force_login(user("staff"))
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(TRY).status_code == 403


def test_a_reviewer_sees_the_rules_and_changes_nothing(reviewer):
    change = PackageChange.objects.get(source="auc", publish=True)
    assert reviewer.get(CHANGELIST).status_code == 200
    page = reviewer.get(change_url(change))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert reviewer.post(change_url(change), form_data(change, target="x")).status_code == 403
    assert reviewer.get(ADD).status_code == 403
    change.refresh_from_db()
    assert change.target == "owut"


# History and warnings --------------------------------------------------------------------


def test_the_history_shows_each_field_change(maintainer):
    change = PackageChange.objects.get(source="auc", publish=True)
    maintainer.post(change_url(change), form_data(change, target="owut-ng", enabled=False))
    entry = LogEntry.objects.get(object_id=str(change.pk))
    assert entry.user.username == "maintainer"
    message = entry.get_change_message()
    assert "'owut' → 'owut-ng'" in message
    assert "yes → no" in message
    history = maintainer.get(f"{CHANGELIST}{change.pk}/history/").content.decode()
    assert "owut-ng" in history


def test_a_name_missing_from_the_indexes_is_warned_about(maintainer):
    version, _, _ = scope("24.10.1")
    index = PackageIndex.objects.create(
        version=version, kind="feed", arch_packages="mips_24kc", name="base", url="u1"
    )
    Package.objects.create(index=index, name="owut", version="1")
    branch = Branch.objects.get(name="24.10")
    response = maintainer.post(
        ADD,
        form_data(kind="add", target="owutt", branch=str(branch.pk)),
        follow=True,
    )
    assert "brings in owutt, which is not in the package indexes of 24.10" in (
        response.content.decode()
    )
    assert PackageChange.objects.filter(target="owutt").exists()


def test_disabling_rules_in_bulk_is_logged(maintainer):
    change = PackageChange.objects.get(source="auc", publish=True)
    maintainer.post(CHANGELIST, {"action": "disable", "_selected_action": [change.pk]})
    change.refresh_from_db()
    assert not change.enabled
    assert "yes → no" in LogEntry.objects.get(object_id=str(change.pk)).get_change_message()


# The list --------------------------------------------------------------------------------


def listed(client, query: str) -> str:
    response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return response.content.decode()


def test_the_list_links_to_try_it(reviewer):
    assert f'href="{TRY}"' in listed(reviewer, "")


def test_the_list_filters_by_kind_branch_target_and_enabled(reviewer):
    assert "add kmod-dsa-gswip" in listed(reviewer, "?kind__exact=add")
    assert "auc → owut" not in listed(reviewer, "?kind__exact=add")
    branch = Branch.objects.get(name="SNAPSHOT")
    page = listed(reviewer, f"?branch__id__exact={branch.pk}")
    assert "remove kmod-nf-conntrack6" in page
    assert "kmod-dsa-gswip" not in page
    page = listed(reviewer, "?for_target=lantiq/xrx200")
    assert "add kmod-dsa-gswip" in page
    assert "kmod-hci-uart" not in page
    assert "auc → owut" in listed(reviewer, "?for_target=_any")
    rule("add", target="disabled-pkg", enabled=False)
    assert "disabled-pkg" in listed(reviewer, "?enabled__exact=0")
    assert "disabled-pkg" not in listed(reviewer, "?enabled__exact=1")


def test_the_list_searches_names_notes_and_scopes(reviewer):
    assert "auc → owut" in listed(reviewer, "?q=owut")
    assert "kmod-dsa-mv88e6xxx" in listed(reviewer, "?q=checkpoint_l-50")
    assert "kmod-dsa-mv88e6xxx" not in listed(reviewer, "?q=owut")


# Try it ----------------------------------------------------------------------------------


def test_try_it_shows_the_new_list_and_the_rules_that_fired(reviewer):
    scope("24.10.1", "ath79/generic", "tplink_archer-c7-v5")
    response = reviewer.get(
        TRY,
        {
            "packages": "luci auc\nluci-i18n-opkg-de",
            "version": "24.10.1",
            "target": "ath79/generic",
            "profile": "tplink,archer-c7-v5",
        },
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert response.context["result"]["packages"] == [
        "luci",
        "owut",
        "luci-i18n-package-manager-de",
    ]
    auc = PackageChange.objects.get(source="auc", publish=True)
    assert change_url(auc) in page
    assert "<li>owut</li>" in page


def test_try_it_names_an_unknown_target(reviewer):
    scope("24.10.1")
    response = reviewer.get(
        TRY, {"packages": "luci", "version": "24.10.1", "target": "foo/bar", "profile": ""}
    )
    assert "Unsupported target: foo/bar." in response.content.decode()
    assert response.context["result"] is None


# The package indexes ---------------------------------------------------------------------


def test_the_package_indexes_can_be_browsed_and_searched_but_not_edited(reviewer):
    version, _, _ = scope("24.10.1")
    index = PackageIndex.objects.create(
        version=version, kind="feed", arch_packages="mips_24kc", name="base", url="u1"
    )
    package = Package.objects.create(index=index, name="owut", version="2025.1-r1")
    assert "2025.1-r1" in reviewer.get("/admin/packages/package/?q=ow").content.decode()
    assert reviewer.get("/admin/packages/packageindex/").status_code == 200
    assert reviewer.get(f"/admin/packages/package/{package.pk}/change/").status_code == 200
    assert reviewer.get("/admin/packages/package/add/").status_code == 403
    assert reviewer.get("/admin/packages/packageindex/add/").status_code == 403


def test_the_rules_list_has_three_columns_saying_how_each_rule_is_used(admin_client):
    from django.contrib import admin

    from packages.models import PackageChange

    response = admin_client.get("/admin/packages/packagechange/")

    assert response.context["cl"].list_display == ["action_checkbox", "__str__", "used", "order"]
    used = admin.site._registry[PackageChange].used
    assert used(PackageChange(apply_on_build=True, publish=True, mandatory=True)) == (
        "builds, published, mandatory"
    )
    assert used(PackageChange(apply_on_build=False, publish=True)) == "published"
    assert used(PackageChange(enabled=False, apply_on_build=True)) == "disabled"
    assert "builds, published" in response.content.decode()
