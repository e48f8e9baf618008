"""manage.py expire_builds: apply the retention rules now, as Celery beat does."""

from django.core.management.base import BaseCommand
from django.utils import timezone

from builds import retention


class Command(BaseCommand):
    help = (
        "Delete the builds the retention rules let go (snapshot builds after 00:00 UTC, "
        "builds with defaults after ASU_DEFAULTS_TTL, failed ones after ASU_FAILURE_TTL, "
        "others after ASU_BUILD_TTL), their files when no remaining build uses them, and "
        "ImageBuilders unused for ASU_CACHE_MAX_AGE_DAYS. Prints each."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only print what would be deleted."
        )

    def handle(self, *args, dry_run: bool = False, **options) -> None:
        now = timezone.now()
        expiry = retention.find_expired(now) if dry_run else retention.expire(now)
        verb = "would " if dry_run else ""
        for line in retention.describe(expiry):
            self.stdout.write(f"{verb}{line}")
        self.stdout.write(
            f"{'Would delete' if dry_run else 'Deleted'}: {len(expiry.builds)} builds, "
            f"{len(expiry.bin_dirs)} store folders, {len(expiry.cache_entries)} ImageBuilders"
        )
