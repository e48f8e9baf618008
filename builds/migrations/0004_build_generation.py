"""A finished build deleted (expired, or "expire now" in the admin) or made unfinished
("build again") moves the builds' generation on (`targets.generation`): every process
then drops the answer it kept for a finished build."""

from django.db import migrations

from targets.generation import drop_triggers, install_triggers

BUILDS = 2


def install(apps, schema_editor):
    install_triggers(schema_editor.connection, "builds_build", BUILDS, "OLD.status = 'done'")


def uninstall(apps, schema_editor):
    drop_triggers(schema_editor.connection, "builds_build")


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0003_build_sent_at_server_fault"),
        ("targets", "0005_generation"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
