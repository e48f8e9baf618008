"""Counting in memory and writing the counts as increments: nothing is lost between
processes, a failed write keeps them, and old days are let go."""

import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from tally import counting
from tally.counting import EPOCH, add, day_number, flush, forget_days_before, save
from tally.models import DailyCount, Total

TODAY = day_number(datetime.now(UTC).date())


@pytest.fixture(autouse=True)
def nothing_counted_yet():
    counting.clear()
    yield
    counting.clear()


def test_counts_reach_the_database_when_flushed_and_add_up(db):
    add([(TODAY, "requests", "", "")] * 3, [("asu_builds_queued_total", ())])
    assert not DailyCount.objects.exists()

    flush()
    add([(TODAY, "requests", "", "")], [("asu_builds_queued_total", ())])
    flush()
    # Another process wrote to the same rows meanwhile.
    save({(TODAY, "requests", "", ""): 10}, {("asu_builds_queued_total", ()): 2})

    assert DailyCount.objects.get(kind="requests").count == 14
    assert Total.objects.get(name="asu_builds_queued_total").value == 4


def test_a_failed_write_keeps_the_counts_for_the_next_one(db, monkeypatch):
    add([(TODAY, "requests", "", "")])
    monkeypatch.setattr(counting, "save", lambda *args: (_ for _ in ()).throw(OSError("down")))

    with pytest.raises(OSError):
        flush()
    monkeypatch.undo()
    flush()

    assert DailyCount.objects.get(kind="requests").count == 1


def test_old_days_are_forgotten(db):
    old, recent = date(2026, 1, 1), date(2026, 6, 1)
    save(
        {(day_number(old), "requests", "", ""): 1, (day_number(recent), "requests", "", ""): 2}, {}
    )

    assert forget_days_before(recent) == 1
    assert list(DailyCount.objects.values_list("day", "count")) == [(recent, 2)]
    assert EPOCH + timedelta(days=day_number(recent)) == recent


@pytest.mark.django_db(transaction=True)
def test_the_thread_writes_the_counts_of_a_server_process():
    counting.flush_every(0.05)
    try:
        add([(TODAY, "client", "luci", "")])
        deadline = time.monotonic() + 10
        while not DailyCount.objects.filter(kind="client").exists():
            assert time.monotonic() < deadline, "the counts were not written"
            time.sleep(0.05)
    finally:
        counting.flush_every(0)
        for thread in threading.enumerate():
            if thread.name == "tally-flush":
                thread.join(timeout=5)
    assert DailyCount.objects.get(kind="client").key == "luci"
