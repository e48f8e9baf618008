"""Keeping the builds and the broker in step, once a minute (`builds.tasks.reconcile_builds`).

A build row and its task message can part ways: the broker was down when the row was
queued (the row stays unsent), the broker restarted without its messages (the row waits
for a message that is gone), or the worker running it died (the row stays started). Each
case is put right here: unsent rows are sent, lost messages sent again, and builds whose
worker is gone are failed as the server's fault, which a new request builds again at once
(`Build.server_fault`). A message sent twice is harmless: the second finds the row taken.
"""

import logging
from collections import defaultdict
from datetime import datetime, timedelta

import kombu.exceptions
from celery import states
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_celery_results.models import TaskResult

from asuproject.celery import app
from builds.models import Build, Step
from builds.queue import QueueUnavailable, build_queue, send

log = logging.getLogger(__name__)

LOST_DETAIL = (
    "Error: The build was interrupted on the server (its worker stopped); "
    "request it again to build it again"
)
# A message sent this recently may be on its way to a worker rather than lost.
RESEND_AFTER = timedelta(seconds=30)
# Task states that say a task is over for good.
DEAD_STATES = (states.FAILURE, states.REVOKED)


def reconcile(resend_after: timedelta = RESEND_AFTER) -> dict[str, int]:
    """Put builds and the broker in step; return how many builds each step touched."""
    now = timezone.now()
    counts = {"failed": fail_abandoned(now), "sent": 0, "resent": 0}
    try:
        counts["sent"] = send_unsent()
        counts["resent"] = resend_lost(now - resend_after)
    except QueueUnavailable as exc:
        log.warning("Reconciliation stopped: %s", exc)
    if any(counts.values()):
        log.info("Reconciled builds: %s", counts)
    return counts


def send_unsent() -> int:
    """Send the queued builds whose task never reached the broker, oldest first."""
    sent = 0
    for build in Build.objects.unsent().order_by("enqueued_at", "pk"):
        send(build)
        sent += 1
    if sent:
        log.info("%d builds the broker could not take before sent now", sent)
    return sent


def resend_lost(sent_before: datetime) -> int:
    """Send again the queued builds whose message the broker lost (a restart without its
    data): while a broker queue holds fewer messages than builds wait for it, the oldest
    of them sent before `sent_before` are sent again."""
    queues: dict[str, Q] = defaultdict(Q)
    for version, target in Build.objects.queued().values_list("version", "target").distinct():
        queues[build_queue(version, target)] |= Q(version=version, target=target)
    resent = 0
    for queue, of_queue in queues.items():
        waiting = Build.objects.queued().filter(of_queue)
        missing = waiting.count() - broker_queue_length(queue)
        if missing <= 0:
            continue
        for build in waiting.filter(sent_at__lt=sent_before).order_by("sent_at", "pk")[:missing]:
            send(build, again=True)
            resent += 1
    if resent:
        log.warning("%d queued builds had no message in the broker: sent again", resent)
    return resent


def broker_queue_length(queue: str) -> int:
    """How many messages wait in the broker's `queue` (not those a worker holds)."""
    with app.connection_for_write() as connection:
        try:
            connection.ensure_connection(max_retries=1)
            # Declaring is idempotent, and unlike a passive check it answers 0 for a
            # queue Redis dropped when it emptied.
            return connection.default_channel.queue_declare(queue=queue).message_count
        except (kombu.exceptions.OperationalError, *connection.connection_errors) as exc:
            raise QueueUnavailable(f"the build queue is unavailable: {exc}") from exc


def abandoned_builds(now: datetime) -> set[int]:
    """The started builds whose worker is gone: running longer than Celery's hard time
    limit allows, or whose task is known to be over."""
    # Celery's hard time limit has killed any build running this long.
    limit = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    started = Build.objects.filter(status=Build.Status.STARTED)
    abandoned = set(started.filter(started_at__lt=now - limit).values_list("pk", flat=True))
    running = dict(started.values_list("task_id", "started_at"))
    dead_tasks = TaskResult.objects.filter(task_id__in=list(running), status__in=DEAD_STATES)
    for task_id, done_at in dead_tasks.values_list("task_id", "date_done"):
        # A result older than the build's start belongs to an earlier attempt.
        if done_at is not None and done_at >= running[task_id]:
            abandoned.update(started.filter(task_id=task_id).values_list("pk", flat=True))
    return abandoned


def fail_abandoned(now: datetime) -> int:
    """Fail the `abandoned_builds`. The failure is the server's: asking again builds
    again."""
    abandoned = abandoned_builds(now)
    if not abandoned:
        return 0
    failed = Build.objects.filter(pk__in=abandoned, status=Build.Status.STARTED).update(
        status=Build.Status.FAILED,
        imagebuilder_status=Step.FAILED,
        finished_at=now,
        expires_at=now + timedelta(seconds=settings.ASU_FAILURE_TTL),
        detail=LOST_DETAIL,
        server_fault=True,
    )
    log.warning("Failed %d builds whose worker is gone", failed)
    return failed
