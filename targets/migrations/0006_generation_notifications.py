"""The generations' trigger functions also notify the listening web processes
(`targets.generation.Listener`), so that a repeated request needs no round trip. Both
scopes' functions are made here; the builds' migration that creates its triggers makes
its function again, the same way, whichever runs first."""

from django.db import migrations

from targets.generation import install_notifications


def install(apps, schema_editor):
    install_notifications(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("targets", "0005_generation"),
    ]

    operations = [
        # Backwards: the functions keep notifying, which nothing then listens to.
        migrations.RunPython(install, migrations.RunPython.noop),
    ]
