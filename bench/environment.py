"""The bench's environment: the server's settings, the database and broker it runs on."""

import os
import secrets
import uuid

from bench.server import ROOT

VAR = ROOT / "var" / "bench"
TRUSTED_KEYS = ROOT / "tests" / "fixtures" / "keys" / "trusted"


def bench_env(mirror_url: str, port: int) -> dict[str, str]:
    """The server's environment: production settings on a private var dir and queue.

    DATABASE_URL and CELERY_BROKER_URL pass through when set (PostgreSQL, Redis);
    otherwise the embedded SQLite database and broker live under var/bench/server.
    """
    env = dict(os.environ)
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ASU_VAR_DIR": str(VAR / "server"),
            "ASU_HOST": "127.0.0.1",
            "ASU_PORT": str(port),
            "ASU_UPSTREAM_URL": mirror_url,
            "ASU_UPSTREAM_KEYS": str(TRUSTED_KEYS),
            # Its own queue, so a broker shared with other runs never hands tasks across.
            "ASU_CELERY_QUEUE": f"asu-bench-{uuid.uuid4().hex[:8]}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for name in ("ASU_STORE_DIR", "ASU_CACHE_DIR"):
        env.pop(name, None)  # under ASU_VAR_DIR, so the bench never touches real files
    env.pop("SECRET_KEY_FILE", None)  # `make bench` exports one; it would win over ours
    return env


def kinds() -> tuple[str, str]:
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    db = {"postgresql": "PostgreSQL", "sqlite3": "SQLite (embedded)"}.get(engine, engine)
    if db == "PostgreSQL":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            db += f" {cursor.fetchone()[0].split()[0]}"
        connection.close()
    broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
    broker = {"redis": "Redis", "sqla+sqlite": "SQLite (embedded)", "amqp": "RabbitMQ"}.get(
        broker, broker
    )
    return db, broker


def ensure_database() -> None:
    """Create the PostgreSQL database DATABASE_URL names when it does not exist yet."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return
    import dj_database_url
    import psycopg2
    from psycopg2 import sql

    db = dj_database_url.parse(url)
    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "user": db["USER"],
              "password": db["PASSWORD"] or None}  # fmt: skip
    try:
        psycopg2.connect(dbname=db["NAME"], **params).close()
        return
    except psycopg2.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    connection = psycopg2.connect(dbname="postgres", **params)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
    connection.close()


def forget_queue(env: dict[str, str]) -> None:
    """Remove the bench queue's binding from a Redis broker (Celery leaves it behind)."""
    url = env.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis://"):
        return
    import redis

    try:
        queue = env["ASU_CELERY_QUEUE"]
        redis.Redis.from_url(url).delete(
            f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"
        )
    except redis.RedisError:
        pass


def wipe_data() -> None:
    """Start from an empty catalogue and no builds (the branches and rules stay)."""
    from django_celery_results.models import TaskResult

    from builds.models import Build
    from targets.models import Version

    Build.objects.all().delete()
    Version.objects.all().delete()
    TaskResult.objects.all().delete()
