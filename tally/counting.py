"""Counting without a database write per request.

Web requests add to counters in this process's memory (`add`, a few dictionary
increments under a lock); a background thread writes them to the database every
FLUSH_SECONDS as increments (`INSERT ... ON CONFLICT DO UPDATE`), one transaction for all
(`flush`). Any number of processes add to the same rows. What a web process counted in its last few seconds is
lost if it dies: acceptable for statistics, and the price of keeping writes off the
requests. Workers, whose events are few and slow, write at once (`save`).

The thread runs only where `flush_every` was called (the WSGI application: gunicorn,
runserver); elsewhere, as in the tests, counts wait until something reads them and
calls `flush` first.
"""

import atexit
import functools
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, timedelta

from django.db import connection, connections, transaction
from django.db.models import Model

from tally.models import DailyCount, Total

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
EPOCH = date(1970, 1, 1)

# (day number, kind, key, detail) and (metric name, ((label, value), ...)): how many.
DailyKey = tuple[int, str, str, str]
Labels = tuple[tuple[str, str], ...]
TotalKey = tuple[str, Labels]

_lock = threading.Lock()
_daily: Counter = Counter()
_totals: Counter = Counter()
_flusher = {"interval": 0.0, "started": False}


def today() -> int:
    """The day number (days since 1970-01-01, UTC) counts are filed under."""
    return int(time.time() // 86400)


def day_number(day: date) -> int:
    return (day - EPOCH).days


@functools.lru_cache(maxsize=4096)
def labels_text(items: Labels) -> str:
    """The stored form of a metric's labels: a JSON object of strings, keys sorted."""
    return json.dumps({k: str(v) for k, v in sorted(items)}, separators=(",", ":"))


def add(daily: Iterable[DailyKey] = (), totals: Iterable[TotalKey] = ()) -> None:
    """Count each key once, in memory; `flush` writes them."""
    with _lock:
        for key in daily:
            _daily[key] += 1
        for key in totals:
            _totals[key] += 1
    if _flusher["interval"] and not _flusher["started"]:
        _start_flusher()


def count_now(name: str, n: float = 1, **labels: str) -> None:
    """Add `n` to a running total in the database at once (workers: events are few)."""
    save({}, {(name, tuple(labels.items())): n})


def flush() -> None:
    """Write what this process counted to the database. If that fails, the counts are
    kept for the next try and the error is raised."""
    with _lock:
        daily, totals = _daily.copy(), _totals.copy()
        _daily.clear()
        _totals.clear()
    if not daily and not totals:
        return
    try:
        save(daily, totals)
    except Exception:
        with _lock:
            _daily.update(daily)
            _totals.update(totals)
        raise


def clear() -> None:
    """Forget what was counted and not written yet (tests)."""
    with _lock:
        _daily.clear()
        _totals.clear()


def save(daily: Mapping[DailyKey, int], totals: Mapping[TotalKey, float]) -> None:
    """Add the counts to the database at once, in one transaction."""
    with transaction.atomic():
        _increment(
            DailyCount,
            "count",
            (
                (
                    {
                        "day": EPOCH + timedelta(days=day),
                        "kind": kind,
                        "key": key,
                        "detail": detail,
                    },
                    n,
                )
                for (day, kind, key, detail), n in sorted(daily.items())
            ),
        )
        _increment(
            Total,
            "value",
            (
                ({"name": name, "labels": text}, n)
                for name, text, n in sorted(
                    (name, labels_text(labels), n) for (name, labels), n in totals.items()
                )
            ),
        )


def _increment(model: type[Model], field: str, items: Iterable[tuple[dict, float]]) -> None:
    """`field += n` on the row of each lookup, creating it when missing: one statement
    per batch (`INSERT ... ON CONFLICT DO UPDATE`, PostgreSQL and SQLite alike), so a
    build's dozens of counts cost one write. In a sorted order, so that concurrent
    flushes lock rows alike and never deadlock."""
    rows = list(items)
    if not rows:
        return
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    keys = list(rows[0][0])
    columns = ", ".join(quote(name) for name in [*keys, field])
    conflict = ", ".join(quote(name) for name in keys)
    fields = {name: model._meta.get_field(name) for name in [*keys, field]}
    one_row = "(" + ", ".join(["%s"] * (len(keys) + 1)) + ")"
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES {', '.join([one_row] * len(batch))} "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {quote(field)} = "
            f"{table}.{quote(field)} + excluded.{quote(field)}"
        )
        params = [
            fields[name].get_db_prep_save(value, connection)
            for lookup, n in batch
            for name, value in (*lookup.items(), (field, n))
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


# Rows per statement: far below SQLite's limit of bound parameters.
BATCH = 500


def forget_days_before(day: date) -> int:
    """Delete the daily counts older than `day`; return how many rows went."""
    return DailyCount.objects.filter(day__lt=day).delete()[0]


# The background writer of web processes.


def flush_every(seconds: float = FLUSH_SECONDS) -> None:
    """Write this process's counts every `seconds` from a thread of its own, started with
    the first count (after a fork, again in the child), and once more at exit; 0 stops
    the thread after its next round."""
    _flusher["interval"] = seconds


def _start_flusher() -> None:
    with _lock:
        if _flusher["started"]:
            return
        _flusher["started"] = True
    threading.Thread(target=_flush_forever, name="tally-flush", daemon=True).start()


def _flush_forever() -> None:
    while _flusher["interval"]:
        time.sleep(_flusher["interval"])
        _flush_quietly()
    _flusher["started"] = False


def _flush_quietly() -> None:
    try:
        flush()
    except Exception as exc:  # the database is down: the counts wait for the next try
        log.warning("counts not written yet: %r", exc)
    finally:
        connections.close_all()  # this thread's own connection


@atexit.register
def _flush_at_exit() -> None:
    if _flusher["started"]:
        _flush_quietly()


def _forked() -> None:
    # The thread stayed behind in the parent; the child starts its own on its first count.
    # The parent's counts are the parent's to write; a lock held at the fork stays held.
    global _lock
    _lock = threading.Lock()
    _flusher["started"] = False
    _daily.clear()
    _totals.clear()


os.register_at_fork(after_in_child=_forked)
