"""An edited, added or deleted package-change rule moves the catalogue's generation on
(`targets.generation`)."""

from django.db import migrations

from targets.generation import drop_triggers, install_triggers

CATALOGUE = 1


def install(apps, schema_editor):
    install_triggers(schema_editor.connection, "packages_packagechange", CATALOGUE)


def uninstall(apps, schema_editor):
    drop_triggers(schema_editor.connection, "packages_packagechange")


class Migration(migrations.Migration):
    dependencies = [
        ("packages", "0005_package_abi_version"),
        ("targets", "0005_generation"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
