"""Profile.title for the device search, filled from the titles already read.

On PostgreSQL, trigram indexes (pg_trgm) on the title and the id let a search for "archer
c7" (ILIKE '%archer%' AND ILIKE '%c7%') use an index instead of reading every profile.
Where the extension cannot be created, the search still works, scanning the table.
"""

from django.db import migrations, models, transaction

INDEXES = {
    "profile_title_trgm": "title",
    "profile_name_trgm": "name",
}


def fill_titles(apps, schema_editor):
    from targets.models import device_title

    Profile = apps.get_model("targets", "Profile")
    rows = list(Profile.objects.only("pk", "titles"))
    for row in rows:
        row.title = device_title(row.titles)[:255]
    Profile.objects.bulk_update(rows, ["title"], batch_size=500)


def add_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception:  # not installed, or not allowed to this user: no index, same results
        return
    for name, column in INDEXES.items():
        # The expression Django's icontains compares: UPPER(column::text).
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON targets_profile "
            f"USING gin ((UPPER({column}::text)) gin_trgm_ops)"
        )


def drop_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("targets", "0003_target_profiles_validators"),
    ]

    operations = [
        migrations.AddField(
            model_name="profile",
            name="title",
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.RunPython(fill_titles, migrations.RunPython.noop),
        migrations.RunPython(add_trigram_indexes, drop_trigram_indexes),
    ]
