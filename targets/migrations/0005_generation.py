"""The shared generations (`targets.generation`): the table, its two rows, and the
triggers on the catalogue's tables that move the catalogue's generation on."""

from django.db import migrations, models

from targets.generation import drop_triggers, install_triggers

CATALOGUE = 1
TABLES = ["targets_branch", "targets_version", "targets_target", "targets_profile"]
TABLES.append("targets_profilename")


def install(apps, schema_editor):
    apps.get_model("targets", "Generation").objects.bulk_create(
        [apps.get_model("targets", "Generation")(id=scope, value=0) for scope in (1, 2)]
    )
    for table in TABLES:
        install_triggers(schema_editor.connection, table, CATALOGUE)


def uninstall(apps, schema_editor):
    for table in TABLES:
        drop_triggers(schema_editor.connection, table)


class Migration(migrations.Migration):
    dependencies = [
        ("targets", "0004_profile_title"),
    ]

    operations = [
        migrations.CreateModel(
            name="Generation",
            fields=[
                ("id", models.PositiveSmallIntegerField(primary_key=True, serialize=False)),
                ("value", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(install, uninstall),
    ]
