"""The catalogue's and the finished builds' generations, shared by every process and host.

Each is a row of `Generation` that database triggers (`install_triggers`, run by the
migrations) set to a new value in the same transaction as every write of its scope. A
process that read a generation before reading the rows it derived something from may keep
that derivation under the generation: once another write commits, the generation differs
and the kept thing is dropped. Reading both is one prepared statement on a two-row table,
once per request (the value is kept for the rest of the request).

A new value is the next of a sequence on PostgreSQL (sequences ignore rollbacks and
flushes) and a random 63-bit number on SQLite, never a counter in the row: that would start
again at the same values after a test's flush or rollback, and match what a process kept
before. Each write gives a new value, even within one transaction.
"""

import threading
from typing import NamedTuple

from django.core.signals import request_finished, request_started
from django.db.backends.base.base import BaseDatabaseWrapper

from asuproject.lib.prepared import fetch_prepared
from targets.models import Generation


class Generations(NamedTuple):
    catalogue: int
    builds: int


_local = threading.local()


def current() -> Generations:
    """The committed generations; read once per request, anew on every call outside one."""
    kept = getattr(_local, "kept", None)
    if kept is not None:
        return kept
    values = dict(fetch_prepared(_READ_SQL))
    found = Generations(values.get(Generation.CATALOGUE, 0), values.get(Generation.BUILDS, 0))
    if getattr(_local, "in_request", False):
        _local.kept = found
    return found


def _request_started(**kwargs: object) -> None:
    _local.in_request, _local.kept = True, None


def _request_finished(**kwargs: object) -> None:
    _local.in_request, _local.kept = False, None


request_started.connect(_request_started, dispatch_uid="targets.generation.started")
request_finished.connect(_request_finished, dispatch_uid="targets.generation.finished")

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
            cursor.execute(
                f"CREATE OR REPLACE FUNCTION asu_bump_generation_{scope}() RETURNS trigger "
                f"LANGUAGE plpgsql AS $$ BEGIN {_bump_sql('postgresql', scope)}; "
                "RETURN NULL; END $$"
            )
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
