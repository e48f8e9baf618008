"""Groups for the package-change admin: reviewers see, maintainers edit.

Members must also be staff to log in to the admin. Superusers need neither group.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

REVIEWERS = "Package change reviewers"
MAINTAINERS = "Package change maintainers"
MODELS = ("packagechange", "packageindex", "package")


def create_groups(apps, schema_editor):
    # Permissions are normally created after all migrations ran; make sure this
    # app's exist now so the groups can hold them.
    app_config = apps.get_app_config("packages")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.filter(
        content_type__app_label="packages", codename__in=[f"view_{m}" for m in MODELS]
    )
    edit = Permission.objects.filter(
        content_type__app_label="packages",
        codename__in=["add_packagechange", "change_packagechange", "delete_packagechange"],
    )
    reviewers, _ = Group.objects.get_or_create(name=REVIEWERS)
    reviewers.permissions.add(*view)
    maintainers, _ = Group.objects.get_or_create(name=MAINTAINERS)
    maintainers.permissions.add(*view, *edit)


def delete_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[REVIEWERS, MAINTAINERS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("packages", "0003_seed_package_changes"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_groups, delete_groups)]
