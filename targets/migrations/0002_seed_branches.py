"""The OpenWrt branches this server knows. Maintainers switch them on and off in the admin."""

from django.db import migrations

BRANCHES = [
    # name, path template, snapshot, enabled, branch_off_rev, order
    ("SNAPSHOT", "snapshots", True, True, None, 9999),
    ("25.12", "releases/{version}", False, True, 32295, 2512),
    ("24.10", "releases/{version}", False, True, 27990, 2410),
    ("23.05", "releases/{version}", False, True, 23069, 2305),
    ("22.03", "releases/{version}", False, False, 19160, 2203),
    ("21.02", "releases/{version}", False, False, 15812, 2102),
]


def seed(apps, schema_editor):
    Branch = apps.get_model("targets", "Branch")
    for name, path, snapshot, enabled, branch_off_rev, order in BRANCHES:
        Branch.objects.update_or_create(
            name=name,
            defaults={
                "path": path,
                "snapshot": snapshot,
                "enabled": enabled,
                "branch_off_rev": branch_off_rev,
                "order": order,
            },
        )


def unseed(apps, schema_editor):
    apps.get_model("targets", "Branch").objects.filter(
        name__in=[branch[0] for branch in BRANCHES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("targets", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
