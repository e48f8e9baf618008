"""Queries that run on every hot request, prepared once per database connection.

PostgreSQL plans each statement psycopg2 sends. For the small statements of the hot
paths (the shared generations of every request, the index documents' locating query)
planning costs as much as running them or more (see BENCHMARKS.md). A prepared statement
is planned once per connection. Prepared statements outlive transactions and end with their connection.
Other databases run the statement as it is (SQLite keeps its own statement cache).
"""

import functools
import hashlib
import logging
import weakref
from typing import Any

from django.db import DatabaseError, connection

log = logging.getLogger(__name__)

# Raw driver connection -> names of the statements prepared on it.
_prepared: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()
_can_prepare = True
# SQLSTATEs of a server session that is not the one the statement was prepared on, or
# that another client prepared it on: invalid_sql_statement_name, duplicate_prepared_statement.
POOLED_SESSION_ERRORS = frozenset({"26000", "42P05"})


def fetch_prepared(sql: str, params: list | tuple = ()) -> list[tuple]:
    """The rows of `sql` run with `params`, in one round trip. `sql` has %s placeholders
    and no other % sign."""
    global _can_prepare
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql" or not _can_prepare:
            cursor.execute(sql, params)
            return cursor.fetchall()
        name, numbered = _numbered(sql)
        done = _prepared.setdefault(connection.connection, set())
        execute = f"EXECUTE {name}"
        if params:
            execute += f" ({', '.join(['%s'] * len(params))})"
        try:
            if name in done:
                cursor.execute(execute, params)
            else:
                cursor.execute(f"PREPARE {name} AS {numbered}; {execute}", params)
                done.add(name)
        except DatabaseError as exc:
            # A pooler that hands each transaction another server session (PgBouncer in
            # transaction mode) cannot keep prepared statements: plain queries from now on.
            code = getattr(exc.__cause__, "pgcode", "")
            if connection.in_atomic_block or code not in POOLED_SESSION_ERRORS:
                raise
            log.warning("prepared statements do not last on this database connection")
            _can_prepare = False
            cursor.execute(sql, params)
        return cursor.fetchall()


@functools.cache
def _numbered(sql: str) -> tuple[str, str]:
    """A name for `sql`, and `sql` with $1, $2 ... in place of its %s placeholders."""
    parts = sql.split("%s")
    numbered = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
    return f"asu_{hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()}", numbered
