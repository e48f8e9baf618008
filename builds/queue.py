"""The build queue: find or create the build of an effective request, try a failed one
again after its failure TTL, send the task, and say where a build stands.

The readers are cursors, not the ORM: polls are the busiest request of all, and compiling
a query, or mapping the columns of a raw one, costs more than running it.
"""

import functools
import json
import uuid
from datetime import UTC, datetime, timedelta

import kombu.exceptions
from django.conf import settings
from django.db import connection, transaction
from django.db.models import DEFERRED, Q
from django.utils import timezone

from asuproject.celery import app
from builds.errors import BuildRejected
from builds.models import Build
from targets.models import Target

# The columns a status answer needs: these for a queued or running build ...
STATUS_COLUMNS = (
    "id",
    "request_hash",
    "status",
    "imagebuilder_status",
    "enqueued_at",
    "finished_at",
    "expires_at",
    "sent_at",
)
# ... and these too for a finished or failed one.
RESULT_COLUMNS = (
    "profile",
    "bin_dir",
    "detail",
    "result",
    "manifest",
    "images",
    "build_cmd",
    "stdout",
    "stderr",
    "request",
    "package_changes_applied",
)
_JSON_COLUMNS = frozenset(
    {"result", "manifest", "images", "build_cmd", "request", "package_changes_applied"}
)
_TIME_COLUMNS = frozenset({"enqueued_at", "finished_at", "expires_at", "sent_at"})
_ATTNAMES = [field.attname for field in Build._meta.concrete_fields]

_POSITION_SQL = (
    "SELECT COUNT(*) FROM {} WHERE status = %s AND sent_at IS NOT NULL "
    "AND (enqueued_at < %s OR (enqueued_at = %s AND id < %s))"
)


def build_by_hash(request_hash: str, results: bool = True) -> Build | None:
    """The build clients poll, by its unique key; without `results`, only its
    STATUS_COLUMNS are read (the others are deferred)."""
    columns = STATUS_COLUMNS + RESULT_COLUMNS if results else STATUS_COLUMNS
    with connection.cursor() as cursor:
        cursor.execute(_by_hash_sql(columns), [request_hash])
        row = cursor.fetchone()
    return build_from_row(columns, row) if row else None


@functools.cache
def _by_hash_sql(columns: tuple[str, ...]) -> str:
    return f"SELECT {', '.join(columns)} FROM {Build._meta.db_table} WHERE request_hash = %s"


def build_from_row(columns: tuple[str, ...], values: tuple) -> Build:
    """A Build from the columns of a cursor row, converted as the ORM would; the
    columns not read, and the result columns of a queued or running build, are deferred."""
    row = dict(zip(columns, values, strict=True))
    if row["status"] in (Build.Status.QUEUED, Build.Status.STARTED):
        # Nothing but the status columns goes into its answer: decode none of the rest.
        for column in RESULT_COLUMNS:
            row.pop(column, None)
    for column in _JSON_COLUMNS.intersection(row):
        if isinstance(row[column], str | bytes):
            row[column] = json.loads(row[column])  # PostgreSQL's jsonb and SQLite's text
    for column in _TIME_COLUMNS.intersection(row):
        if row[column] is not None:
            row[column] = _aware(row[column])
    return Build.from_db(
        connection.alias, _ATTNAMES, [row.get(name, DEFERRED) for name in _ATTNAMES]
    )


def _aware(value: datetime | str) -> datetime:
    """A datetime column as the ORM returns it: SQLite gives naive UTC text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def queue_position(build: Build) -> int:
    """How many queued builds go before this one: 0 for the next to start (one count on
    the (status, enqueued_at) index, ties broken by id). Builds whose task never reached
    the broker wait for no worker: they are not counted."""
    # Stored as the database stores it (SQLite compares datetimes as text).
    enqueued_at = connection.ops.adapt_datetimefield_value(build.enqueued_at)
    with connection.cursor() as cursor:
        cursor.execute(
            _POSITION_SQL.format(Build._meta.db_table),
            [Build.Status.QUEUED, enqueued_at, enqueued_at, build.pk],
        )
        return cursor.fetchone()[0]


def get_or_queue(request_hash: str, fields: dict, results: bool = True) -> tuple[Build, bool]:
    """The build under `request_hash`, queued with `fields` if there is none; a failed
    one is queued again once its failure TTL has passed. Return it and whether this call
    queued it. Without `results` a found build has only its status columns read."""
    build = build_by_hash(request_hash, results=results)
    if build is not None:
        if build.status != Build.Status.FAILED:
            return build, False
        try:
            return build, retry_failed(build)
        except Build.DoesNotExist:
            pass  # expired and deleted meanwhile: create it anew

    ensure_room()
    # The unique request_hash makes concurrent identical requests one row; get_or_create
    # retries the read when another request won the insert.
    build, created = Build.objects.get_or_create(
        request_hash=request_hash, defaults={**fields, "task_id": str(uuid.uuid4())}
    )
    if created:
        enqueue(build)
    return build, created


def retry_failed(build: Build) -> bool:
    """Queue a failed build again once its failure TTL has passed, or at once when the
    server was at fault; True if this call did. `build` is refreshed to its current state
    either way."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.ASU_FAILURE_TTL)
    if not build.server_fault and (build.finished_at or build.enqueued_at) > cutoff:
        return False
    due = Q(status=Build.Status.FAILED) & (
        Q(server_fault=True)
        | Q(finished_at__lte=cutoff)
        | Q(finished_at__isnull=True, enqueued_at__lte=cutoff)
    )
    return _queue_again(build, due, now)


def build_again(build: Build) -> bool:
    """Queue a finished or failed build again at once, its result or failure dropped (the
    admin's "build again"); False if it is queued or running already. `build` is
    refreshed to its current state either way."""
    finished = Q(status__in=[Build.Status.DONE, Build.Status.FAILED])
    return _queue_again(build, finished, timezone.now())


def _queue_again(build: Build, condition: Q, now: datetime) -> bool:
    """Start `build` afresh and send it, if its row still meets `condition`."""
    ensure_room()
    # The conditional update lets exactly one of many concurrent requests re-queue it.
    claimed = (
        Build.objects.filter(pk=build.pk)
        .filter(condition)
        .update(task_id=str(uuid.uuid4()), enqueued_at=now, **Build.QUEUED_AFRESH)
    )
    build.refresh_from_db()
    if not claimed:
        return False  # another request queued it again; answer its state now
    enqueue(build)
    return True


def ensure_room() -> None:
    """Refuse a new build with 529 once ASU_MAX_PENDING_JOBS builds wait."""
    limit = settings.ASU_MAX_PENDING_JOBS
    # Counting at most `limit` rows keeps this cheap however long the queue grows.
    waiting = Build.objects.queued().values("pk")[:limit].count()
    if waiting >= limit:
        raise BuildRejected(
            f"server overload, queue contains too many build requests: {waiting}. "
            "Please try again in a few minutes.",
            status=529,
            title="Server overloaded",
        )


class QueueUnavailable(Exception):
    """The broker could not take the build's task: the row stays unsent."""


def enqueue(build: Build) -> None:
    """Send the build task once the row is committed (`send`). Outside a transaction this
    sends at once and raises QueueUnavailable if the broker refused it."""
    transaction.on_commit(functools.partial(send, build))


def send(build: Build, again: bool = False) -> None:
    """Hand the build task to the broker under the id stored on the row, and mark the row
    sent; raise QueueUnavailable, the row left unsent, if the broker cannot take it.
    Of several requests finding the row unsent, one sends; `again` sends a row marked
    sent whose message the broker lost."""
    sent_at = timezone.now()
    row = Build.objects.filter(pk=build.pk, status=Build.Status.QUEUED)
    # Marked before sending, so that concurrent requests send one message, not many.
    if not row.filter(sent_at__isnull=not again).update(sent_at=sent_at):
        build.refresh_from_db(fields=["status", "sent_at"])
        return  # another request sends it, or a worker has it already
    queue = build_queue(build.version, build.target)
    try:
        # By name, so the web process needs no import of the worker's code.
        app.send_task("builds.tasks.build", args=[build.pk], task_id=build.task_id, queue=queue)
    except (kombu.exceptions.OperationalError, OSError) as exc:
        row.filter(sent_at=sent_at).update(sent_at=None)
        raise QueueUnavailable(f"the build queue is unavailable: {exc}") from exc
    build.sent_at = sent_at


def build_queue(version: str, target: str) -> str:
    """The queue a build of `target` goes to: the queue of its target or architecture
    when ASU_WORKER_QUEUES lists it, else the default queue (read from the settings now,
    not when Celery was configured)."""
    routed = settings.ASU_WORKER_QUEUES
    if target in routed:
        return routed_queue(target)
    if any("/" not in entry for entry in routed):
        arch = (
            Target.objects.filter(version__name=version, name=target)
            .values_list("arch_packages", flat=True)
            .first()
        )
        if arch in routed:
            return routed_queue(arch)
    return settings.CELERY_TASK_DEFAULT_QUEUE


def routed_queue(entry: str) -> str:
    """The queue of a target ("ath79/generic": "asu.ath79-generic") or an architecture
    ("mips_24kc": "asu.mips_24kc"), named after the default queue."""
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}.{entry.replace('/', '-')}"


def worker_queues() -> list[str]:
    """The queues a worker serves besides the default queue."""
    return [routed_queue(entry) for entry in settings.ASU_WORKER_QUEUES]
