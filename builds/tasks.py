"""Celery tasks: building one image, keeping builds and the broker in step, and expiring
old builds."""

import logging
from datetime import timedelta

from celery import shared_task
from celery.signals import worker_init
from django.conf import settings
from django.utils import timezone

from builds import reconcile
from builds.director import BuildDirector
from builds.imagebuilder import remove_stale_working_copies
from builds.make import sandbox
from builds.models import Build, Step
from builds.store import delete_stored_files

log = logging.getLogger(__name__)


@worker_init.connect
def _prepare_worker(**kwargs) -> None:
    # Logged once when the worker starts; the forked pool processes inherit the answer.
    sandbox()
    remove_stale_working_copies(_lost_after())


def _lost_after() -> float:
    """Seconds after which a started build can no longer be running: Celery's hard time
    limit (ASU_BUILD_TIMEOUT + 120) has killed it by then."""
    return settings.ASU_BUILD_TIMEOUT + 600


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def build(self, pk: int) -> str:
    """Build the image of Build `pk`. A repeated task finds the row no longer queued and
    does nothing; a redelivered one (its worker was killed mid-build, and the broker
    handed the unacknowledged message out again) takes its own build over."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    director = BuildDirector.claim(pk, task_id=self.request.id or "", redelivered=redelivered)
    if director is None:
        return "skipped"
    return director.run()


@shared_task
def reconcile_builds() -> dict[str, int]:
    """Every minute (CELERY_BEAT_SCHEDULE): send the builds the broker never got or lost,
    and fail, as the server's fault, the builds whose worker is gone."""
    return reconcile.reconcile()


@shared_task
def expire_builds() -> int:
    """Delete builds past their expiry, and their files when no live build shares them.
    Builds a lost worker left running are failed first, so that they expire too."""
    now = timezone.now()
    lost = now - timedelta(seconds=_lost_after())
    Build.objects.filter(status=Build.Status.STARTED, started_at__lt=lost).update(
        status=Build.Status.FAILED,
        imagebuilder_status=Step.FAILED,
        finished_at=now,
        expires_at=now + timedelta(seconds=settings.ASU_FAILURE_TTL),
        detail="Error: The build was interrupted on the server (its worker stopped)",
    )
    expired = Build.objects.filter(expires_at__lt=now).exclude(
        status__in=[Build.Status.QUEUED, Build.Status.STARTED]
    )
    bin_dirs = set(expired.values_list("bin_dir", flat=True))
    count, _ = expired.delete()
    still_used = set(Build.objects.filter(bin_dir__in=bin_dirs).values_list("bin_dir", flat=True))
    for bin_dir in bin_dirs - still_used:
        delete_stored_files(bin_dir)
    remove_stale_working_copies(_lost_after())
    if count:
        log.info("Expired %d builds", count)
    return count
