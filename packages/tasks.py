"""Periodic sync of the catalogue and its package indexes (CELERY_BEAT_SCHEDULE runs it
every ASU_SYNC_INTERVAL minutes)."""

from celery import shared_task
from django.conf import settings

from packages import sync
from tally.counting import count_now

# A run that outlasts the interval would overlap the next one; stop it first. Its
# unfinished transaction rolls back, the next run picks up where it left off.
_LIMIT = settings.ASU_SYNC_INTERVAL * 60


@shared_task(name="packages.tasks.sync_upstream", soft_time_limit=_LIMIT, time_limit=_LIMIT + 60)
def sync_upstream(version: str | None = None, target: str | None = None) -> dict:
    """Bring the catalogue up to date; returns the report's counts and errors. Each run
    and each upstream file it could not read is counted for /metrics."""
    try:
        report = sync.sync_upstream(version=version, target=target)
    except Exception:
        count_now("asu_sync_runs_total", result="failed")
        raise
    count_now("asu_sync_runs_total", result="errors" if report.errors else "ok")
    if report.errors:
        count_now("asu_sync_errors_total", len(report.errors))
    return report.as_dict()
