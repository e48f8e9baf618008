"""The catalogue's and the finished builds' generations, shared by every process and host.

Each is a row of `Generation` that database triggers (`install_triggers`, run by the
migrations) set to a new value in the same transaction as every write of its scope. A
process that read a generation before reading the rows it derived something from may keep
that derivation under the generation: once another write commits, the generation differs
and the kept thing is dropped. The value is kept for the rest of a request.

A new value is the next of a sequence on PostgreSQL (sequences ignore rollbacks and
flushes) and a random 63-bit number on SQLite, never a counter in the row: that would start
again at the same values after a test's flush or rollback, and match what a process kept
before. Each write gives a new value, even within one transaction.

Reading the row is a round trip to the database, and on PostgreSQL that round trip was
most of a repeated request's cost (BENCHMARKS.md). So there the triggers also send a
notification (`NOTIFY asu_generations`) with the write, which PostgreSQL delivers to
the other sessions when the writing transaction commits. Each web process keeps one
listening connection (`Listener`) and, per request, only looks whether its socket holds a
notification (a non-blocking read, no round trip): the values read last are used until
one arrives. A process sees another's write as soon as PostgreSQL hands the notification
over (tens of microseconds after the commit here, a few milliseconds at worst); its own
writes at once (`_note_write`). The row is read instead whenever the listener cannot
vouch: outside a request, inside a transaction (its own uncommitted writes announce
nothing), on SQLite, with `ASU_GENERATION_NOTIFICATIONS` off (a PgBouncer in
transaction mode cannot pass notifications on), while the listening connection is down,
and once a second at least in any case.
"""

import logging
import os
import select
import threading
import time
from typing import Any, NamedTuple

from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import DatabaseError, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from asuproject.lib.prepared import fetch_prepared
from targets.models import Generation

log = logging.getLogger(__name__)

CHANNEL = "asu_generations"
# The longest the listener's values are used without reading the row: bounds what a
# listening connection that died without a word (a network partition) could hide.
REVALIDATE_SECONDS = 1.0
RECONNECT_SECONDS = 5.0


class Generations(NamedTuple):
    catalogue: int
    builds: int


_local = threading.local()


def current() -> Generations:
    """The committed generations; read once per request, anew on every call outside one
    (on PostgreSQL, within a request, vouched for by the listener when it can)."""
    kept = getattr(_local, "kept", None)
    if kept is not None:
        return kept
    in_request = getattr(_local, "in_request", False)
    found, epoch = None, None
    if in_request and _can_listen():
        found, epoch = listener.vouched()
    if found is None:
        found = _read()
        if epoch is not None:
            listener.store(found, epoch)
    if in_request:
        _local.kept = found
    return found


def known_without_round_trip() -> Generations | None:
    """The committed generations when knowing them costs no round trip to another
    process: vouched for by the listener on PostgreSQL, read from the file on SQLite.
    None inside a transaction or when the listener cannot vouch: `current()` tells then."""
    if connection.vendor == "sqlite" and not connection.in_atomic_block:
        return _read()
    return listener.vouched()[0] if _can_listen() else None


def _read() -> Generations:
    values = dict(fetch_prepared(_READ_SQL))
    return Generations(values.get(Generation.CATALOGUE, 0), values.get(Generation.BUILDS, 0))


def _can_listen() -> bool:
    return (
        settings.ASU_GENERATION_NOTIFICATIONS
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
    )


class Listener:
    """This process's listening connection, and the generations it vouches for: those
    read last, as long as no notification arrived since. `epoch` counts the arrivals; a
    value read is kept only if none arrived while it was being read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: Any = None  # the driver's connection (psycopg2), LISTENing
        self.readable = select.poll()  # of `raw`'s socket
        self.values: Generations | None = None
        self.read_at = 0.0
        self.epoch = 0
        self.retry_at = 0.0
        self.inherited: list = []  # a parent's connection after a fork: never closed here

    def vouched(self) -> tuple[Generations | None, int | None]:
        """The generations if nothing was announced since they were read; else None and
        the epoch to `store` a fresh read under (None: the listener is down)."""
        with self.lock:
            if not self._listening():
                return None, None
            try:
                self._drain()
            except (connection.Database.Error, OSError) as exc:
                self._lost(exc)
                return None, None
            if self.raw.notifies:
                self.raw.notifies.clear()
                self.invalidate_locked()
            fresh = time.monotonic() - self.read_at < REVALIDATE_SECONDS
            return (self.values if fresh else None), self.epoch

    def _drain(self) -> None:
        """Take in what the server sent, if anything: notifications, or the end of the
        session (its FATAL message comes as a notice; psycopg2 raises once it meets the
        closed socket, which may be a later read)."""
        for _ in range(3):
            if not self.readable.poll(0):
                return
            self.raw.poll()
            if self.raw.notices:
                ended = [notice for notice in self.raw.notices if notice.startswith("FATAL")]
                self.raw.notices.clear()
                if ended:
                    raise OSError(ended[0].strip())

    def store(self, values: Generations, epoch: int) -> None:
        with self.lock:
            if epoch == self.epoch and self.raw is not None:
                self.values, self.read_at = values, time.monotonic()

    def invalidate(self) -> None:
        with self.lock:
            self.invalidate_locked()

    def invalidate_locked(self) -> None:
        self.values = None
        self.epoch += 1

    def close(self) -> None:
        with self.lock:
            if self.raw is not None:
                self.raw.close()
            self.raw = None
            self.invalidate_locked()

    def forget_parents(self) -> None:
        """In a forked child: the parent's connection is not ours to use, nor to close
        (closing would end the parent's session), so it is only kept referenced."""
        if self.raw is not None:
            self.inherited.append(self.raw)
        self.lock = threading.Lock()
        self.raw, self.values, self.retry_at = None, None, 0.0

    def _listening(self) -> bool:
        if self.raw is None and time.monotonic() >= self.retry_at:
            self._connect()
        return self.raw is not None

    def _connect(self) -> None:
        """LISTEN first, then forget the values: a row read after the LISTEN sees every
        write that no notification will announce."""
        try:
            raw = connection.get_new_connection(connection.get_connection_params())
            raw.autocommit = True
            with raw.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
        except (connection.Database.Error, DatabaseError, OSError) as exc:
            self._lost(exc)
            return
        self.raw, self.readable = raw, select.poll()
        self.readable.register(raw.fileno(), select.POLLIN)
        self.invalidate_locked()

    def _lost(self, exc: Exception) -> None:
        log.warning("generations: no listening connection (%s); reading them per request", exc)
        if self.raw is not None:
            try:
                self.raw.close()
            except (connection.Database.Error, OSError):
                pass
        self.raw, self.retry_at = None, time.monotonic() + RECONNECT_SECONDS
        self.invalidate_locked()


listener = Listener()
os.register_at_fork(after_in_child=listener.forget_parents)

# Statements that never write: anything else run by this process may have moved a
# generation on, which its own next read must see without waiting for the notification.
_READ_ONLY = ("SELECT", "EXECUTE", "PREPARE", "SAVEPOINT", "RELEASE", "SHOW", "SET ", "LISTEN")


def _note_write(execute: Any, sql: str, params: Any, many: bool, context: dict) -> Any:
    """After a statement that may write: this process reads the row on its next request.
    (Inside a transaction its reads go to the row until the commit anyway.)"""
    result = execute(sql, params, many, context)
    if not sql.lstrip()[:9].upper().startswith(_READ_ONLY):
        listener.invalidate()
    return result


def _connection_created(connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    if connection.vendor == "postgresql" and _note_write not in connection.execute_wrappers:
        connection.execute_wrappers.append(_note_write)


def _request_started(**kwargs: object) -> None:
    _local.in_request, _local.kept = True, None


def _request_finished(**kwargs: object) -> None:
    _local.in_request, _local.kept = False, None


request_started.connect(_request_started, dispatch_uid="targets.generation.started")
request_finished.connect(_request_finished, dispatch_uid="targets.generation.finished")
connection_created.connect(_connection_created, dispatch_uid="targets.generation.writes")

_TABLE = Generation._meta.db_table
_READ_SQL = f"SELECT id, value FROM {_TABLE}"
_SEQUENCE = "asu_generation_values"


def _bump_sql(vendor: str, scope: int) -> str:
    """One statement that gives `scope` a new value, creating its row if a flush removed it."""
    fresh = f"nextval('{_SEQUENCE}')" if vendor == "postgresql" else "abs(random())"
    return (
        f"INSERT INTO {_TABLE} (id, value) VALUES ({scope}, {fresh}) "
        f"ON CONFLICT (id) DO UPDATE SET value = {fresh}"
    )


def _function_sql(scope: int) -> str:
    """The PostgreSQL trigger function of `scope`: a new value, and a notification that
    PostgreSQL delivers to the listeners when the writing transaction commits (several in
    one transaction are delivered once)."""
    return (
        f"CREATE OR REPLACE FUNCTION asu_bump_generation_{scope}() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN {_bump_sql('postgresql', scope)}; "
        f"PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$"
    )


def install_notifications(connection: BaseDatabaseWrapper) -> None:
    """Make the trigger functions of both scopes also notify (migration targets 0006)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for scope in (Generation.CATALOGUE, Generation.BUILDS):
            cursor.execute(_function_sql(scope))


def install_triggers(
    connection: BaseDatabaseWrapper, table: str, scope: int, when_old: str = ""
) -> None:
    """Triggers on `table` that move `scope` on with each write. With `when_old` (a
    condition on the old row, as `OLD.status = 'done'`), only updates and deletes of rows
    that met it do, and an update only when the new row no longer does."""
    name = f"asu_gen_{table}"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {_SEQUENCE}")
            cursor.execute(_function_sql(scope))
            bump = f"EXECUTE FUNCTION asu_bump_generation_{scope}()"
            if not when_old:
                cursor.execute(
                    f"CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                    f"ON {table} FOR EACH STATEMENT {bump}"
                )
                return
            new = when_old.replace("OLD.", "NEW.")
            cursor.execute(
                f"CREATE TRIGGER {name}_u AFTER UPDATE ON {table} FOR EACH ROW "
                f"WHEN (({when_old}) AND NOT ({new})) {bump}"
            )
            cursor.execute(
                f"CREATE TRIGGER {name}_d AFTER DELETE ON {table} FOR EACH ROW "
                f"WHEN ({when_old}) {bump}"
            )
            return
        # SQLite: row triggers only.
        bump = _bump_sql(connection.vendor, scope)
        new = when_old.replace("OLD.", "NEW.")
        events = [("u", "UPDATE", f"({when_old}) AND NOT ({new})" if when_old else "")]
        events.append(("d", "DELETE", when_old))
        if not when_old:
            events.append(("i", "INSERT", ""))
        for suffix, event, condition in events:
            when = f" WHEN {condition}" if condition else ""
            cursor.execute(
                f"CREATE TRIGGER {name}_{suffix} AFTER {event} ON {table} FOR EACH ROW{when} "
                f"BEGIN {bump}; END"
            )


def drop_triggers(connection: BaseDatabaseWrapper, table: str) -> None:
    """Undo `install_triggers` on `table` (migrating backwards)."""
    with connection.cursor() as cursor:
        for suffix in ("", "_u", "_d", "_i"):
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER IF EXISTS asu_gen_{table}{suffix} ON {table}")
            else:
                cursor.execute(f"DROP TRIGGER IF EXISTS asu_gen_{table}{suffix}")
