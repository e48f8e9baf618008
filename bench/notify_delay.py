"""How long after a write's commit a web process can see it: the delay between the
writing session's COMMIT returning and the generations' notification being readable on a
listening connection (targets.generation), in another process, as between two web
processes.

    DATABASE_URL=postgres://... python -m bench.notify_delay [--writes 500]

The database must have the project's migrations applied (the triggers). Each write is an
`UPDATE` of the package-change rules that matches no row, which still fires the catalogue's
statement trigger (and moves the catalogue's generation on). The listener waits in
`select`, so the figure includes waking it: an upper bound for a web process, which only
looks at its socket when a request comes.
"""

import argparse
import multiprocessing
import os
import select
import statistics
import time

import psycopg2

CHANNEL = "asu_generations"


def listen(dsn: str, ready, seen, writes: int) -> None:
    """Wait for each notification; put the monotonic time it became readable."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    connection.cursor().execute(f"LISTEN {CHANNEL}")
    ready.set()
    for _ in range(writes):
        while not connection.notifies:
            select.select([connection], [], [], 5)
            connection.poll()
        seen.put(time.monotonic_ns())
        connection.notifies.clear()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notify_delay", description=__doc__)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    dsn = os.environ["DATABASE_URL"]
    ready, seen = multiprocessing.Event(), multiprocessing.Queue()
    listener = multiprocessing.Process(target=listen, args=(dsn, ready, seen, args.writes))
    listener.start()
    ready.wait()
    writer = psycopg2.connect(dsn)
    writer.autocommit = True
    cursor = writer.cursor()
    delays = []
    for _ in range(args.writes):
        cursor.execute("UPDATE packages_packagechange SET target = target WHERE id = -1")
        committed = time.monotonic_ns()
        delays.append(max(0, seen.get(timeout=10) - committed) / 1000)
        time.sleep(0.002)
    listener.join()
    delays.sort()
    print(
        f"{args.writes} writes: notification readable in another process "
        f"{statistics.median(delays):.0f} µs after the commit returned (median), "
        f"p99 {delays[int(len(delays) * 0.99) - 1]:.0f} µs, max {delays[-1]:.0f} µs"
    )


if __name__ == "__main__":
    main()
