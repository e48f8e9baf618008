"""Django's PostgreSQL backend, with a persistent connection's health check that costs no
round trip.

Django checks a reused connection (CONN_HEALTH_CHECKS) with `SELECT 1` before the first
query of each request: a second round trip for a cache-hit build request, whose real work
is one prepared statement. A connection the database dropped (restart, failover,
pg_terminate_backend) has already been told so: the server sends its FATAL error and
closes the socket. So an idle connection whose socket has anything to read, or that
psycopg2 already marked closed, is dropped and opened again; a silent one is used. Errors
during a request still end in Django's full `SELECT 1` check (`is_usable`).
"""

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        if self.connection is None or not self.health_check_enabled or self.health_check_done:
            return
        if self.connection.closed or server_has_spoken(self.connection):
            self.close()
        self.health_check_done = True


def server_has_spoken(raw_connection: object) -> bool:
    """Whether the server sent something on an idle connection: between requests it only
    does so to end the session."""
    try:
        readable, _, _ = select.select([raw_connection], [], [], 0)
    except (OSError, ValueError):
        return True  # no usable socket: reconnect
    return bool(readable)
