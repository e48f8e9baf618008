"""Celery tasks: building one image, keeping builds and the broker in step, and expiring
old builds."""

import logging
import time
from datetime import timedelta

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_init
from django.conf import settings
from django.utils import timezone

from builds import reconcile, retention
from builds.director import BuildDirector
from builds.imagebuilder import remove_stale_working_copies
from builds.make import sandbox
from builds.queue import worker_queues
from tally.counting import forget_days_before

log = logging.getLogger(__name__)


@worker_init.connect
def _prepare_worker(**kwargs) -> None:
    # Logged once when the worker starts; the forked pool processes inherit the answer.
    sandbox()
    remove_stale_working_copies(retention.lost_after())


@celeryd_after_setup.connect
def _serve_routed_queues(sender: str, instance, **kwargs) -> None:
    # Besides the default queue (or those given with --queues): the build queues of the
    # targets and architectures in ASU_WORKER_QUEUES.
    for queue in worker_queues():
        instance.app.amqp.queues.select_add(queue)
    if worker_queues():
        log.info("Serving the build queues %s", ", ".join(worker_queues()))


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def build(self, pk: int) -> str:
    """Build the image of Build `pk`. A repeated task finds the row no longer queued and
    does nothing; a redelivered one (its worker was killed mid-build, and the broker
    handed the unacknowledged message out again) takes its own build over."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    director = BuildDirector.claim(pk, task_id=self.request.id or "", redelivered=redelivered)
    if director is None:
        return "skipped"
    outcome = director.run()
    retention.trim_local_cache(time.time())
    return outcome


@shared_task
def reconcile_builds() -> dict[str, int]:
    """Every minute (CELERY_BEAT_SCHEDULE): send the builds the broker never got or lost,
    and fail, as the server's fault, the builds whose worker is gone."""
    return reconcile.reconcile()


@shared_task
def expire_builds() -> int:
    """Delete the builds the retention rules let go (builds/retention.py), their files
    when no remaining build shares them, ImageBuilders no build used for long and working
    copies a dead worker left; fail first the builds a lost worker left running, so that
    they expire too. Beat runs it hourly and at 00:00 UTC, when the day's snapshot
    builds go."""
    expiry = retention.expire(timezone.now())
    forget_days_before(timezone.now().date() - timedelta(days=settings.ASU_STATS_DAYS))
    if expiry.builds or expiry.cache_entries:
        log.info(
            "Expired %d builds, %d store folders, %d unused ImageBuilders",
            len(expiry.builds),
            len(expiry.bin_dirs),
            len(expiry.cache_entries),
        )
    return len(expiry.builds)
