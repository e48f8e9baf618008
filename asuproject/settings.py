"""Settings for the Attended Sysupgrade server, read from the environment.

Every value has an embedded default that needs no server (SQLite, a SQLite-backed
broker, files under var/), so `make run` works on a fresh machine. Production sets
DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY and ALLOWED_HOSTS. The README lists
every setting.
"""

import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from asuproject.lib import usign
from asuproject.lib.env import (
    env_bool,
    env_choice,
    env_header,
    env_int,
    env_list,
    env_networks,
    env_optional_url,
    env_str,
    env_url,
)
from asuproject.storage import store_storage

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ASU_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (or set DEBUG=true for local use)"
        )
    # Local use: generate once and keep it, so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# HTTPS, all off by default so that `make run` serves plain http on 127.0.0.1; the README's
# production settings turn them on (`manage.py check --deploy` is then clean).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# Behind a reverse proxy that terminates TLS: the header it sets to "https" on secure
# requests (X-Forwarded-Proto), and whether its X-Forwarded-Host names the host.
SECURE_PROXY_SSL_HEADER = env_header("SECURE_PROXY_SSL_HEADER")
USE_X_FORWARDED_HOST = env_bool("USE_X_FORWARDED_HOST", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_celery_beat",
    "tally",
    "targets",
    "packages",
    "builds",
]

MIDDLEWARE = [
    # Outermost, so that it sees every answer: counts requests by endpoint and status.
    "builds.metrics.CountRequestsMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # A NUL or newline in the path or query: 400 before any view or query sees it.
    "asuproject.middleware.RefuseControlCharactersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's session, auth and messages middleware, stepping aside on the machine paths
    # (/api/, /json/, /store/), where they do nothing but cost a seventh of a poll.
    "asuproject.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "asuproject.middleware.BrowserAuthenticationMiddleware",
    "asuproject.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "asuproject.urls"
WSGI_APPLICATION = "asuproject.wsgi.application"
# WSGI wrappers around the project (asuproject/wsgi.py): repeated build requests and polls
# of finished builds answered from memory before Django's request cycle.
ASU_WSGI_WRAPPERS = ["builds.fastpath.KeptAnswers"]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "asuproject" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: PostgreSQL in production, SQLite under var/ by default.
try:
    DATABASES = {
        "default": dj_database_url.parse(
            env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=60
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # The web server and the worker write to the same file: WAL lets readers
        # go on while a writer works, IMMEDIATE avoids lock upgrades that deadlock.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not memory, so a Celery worker in another process sees the test data.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
# A persistent connection the database dropped (restart, failover) is found unusable
# before the next request uses it, and replaced: no 500s, no restart. On PostgreSQL the
# check looks at the socket instead of sending `SELECT 1` (asuproject/postgresql).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "asuproject.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start without it
STORAGES = {
    # Built images: a local folder by default, or an S3-compatible bucket.
    "default": store_storage(
        env_str("ASU_STORE_URL").strip(), env_str("ASU_STORE_DIR", str(VAR_DIR / "store"))
    ),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # `make run` works without collectstatic

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# CORS: the LuCI app and the Firmware Selector call us from other origins.
CORS_ALLOW_ALL_ORIGINS = True
CORS_ALLOW_METHODS = ["POST", "GET", "OPTIONS"]
CORS_ALLOW_HEADERS = ["*"]
CORS_EXPOSE_HEADERS = ["X-Imagebuilder-Status", "X-Queue-Position", "X-Unknown-Package"]

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "asuproject.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# OpenAPI 3 schema of the API (drf-spectacular); Swagger UI and Redoc from local files.
SPECTACULAR_SETTINGS = {
    "TITLE": "Attended Sysupgrade API",
    "DESCRIPTION": "Build OpenWrt firmware images carrying a router's installed packages.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "asuproject.openapi.finish_schema",
    ],
    "ENUM_NAME_OVERRIDES": {
        "BuildStepEnum": "builds.schema.STEPS",
        "BuildRunningEnum": "builds.schema.RUNNING",
    },
}

# Celery: Redis or RabbitMQ in production; by default a broker in a SQLite file.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}")
# kombu polls SQL queues once a second; as a transport option, polling_interval breaks kombu 5.7.
if CELERY_BROKER_URL.startswith("sqla+"):
    from kombu.transport import sqlalchemy as kombu_sqlalchemy

    kombu_sqlalchemy.Transport.polling_interval = 0.25
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
# A build whose pool process was killed goes back to the broker; its redelivered task
# takes the build over (builds.director.BuildDirector.claim).
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Several servers (or test runs) can share one broker by naming their own queue.
CELERY_TASK_DEFAULT_QUEUE = env_str("ASU_CELERY_QUEUE", "asu")
# Targets ("ath79/generic") or architectures ("mips_24kc") with a build queue of their own
# ("asu.ath79-generic", "asu.mips_24kc"), so that the workers serving it keep their
# ImageBuilders warm. The web sends to these queues; a worker serves the listed ones besides
# the default queue. Empty: one queue for every build.
ASU_WORKER_QUEUES = env_list("ASU_WORKER_QUEUES")

# The OpenWrt side.
ASU_UPSTREAM_URL = env_url(
    "ASU_UPSTREAM_URL", "https://downloads.openwrt.org", ("http", "https", "file")
)
ASU_UPSTREAM_KEYS = env_str("ASU_UPSTREAM_KEYS")
if ASU_UPSTREAM_KEYS and not Path(ASU_UPSTREAM_KEYS).is_dir():
    raise ImproperlyConfigured(f"ASU_UPSTREAM_KEYS is not a folder: {ASU_UPSTREAM_KEYS}")
ASU_HOST = env_str("ASU_HOST", "127.0.0.1")
ASU_PORT = env_int("ASU_PORT", 8000, minimum=1)
ASU_STORE_DIR = Path(env_str("ASU_STORE_DIR", str(VAR_DIR / "store"))).resolve()
# /store/ answers 302 to this base URL (a CDN in front of the bucket or folder) ...
ASU_STORE_PUBLIC_URL = env_optional_url("ASU_STORE_PUBLIC_URL", ("http", "https"))
# ... or, for a bucket, to the object itself ("redirect"), or streams it ("stream").
ASU_STORE_SERVE = env_choice("ASU_STORE_SERVE", "redirect", ("redirect", "stream"))
ASU_CACHE_DIR = Path(env_str("ASU_CACHE_DIR", str(VAR_DIR / "cache"))).resolve()
ASU_ALLOW_DEFAULTS = env_bool("ASU_ALLOW_DEFAULTS", False)
ASU_MAX_DEFAULTS_LENGTH = env_int("ASU_MAX_DEFAULTS_LENGTH", 20480, minimum=0)
ASU_MAX_ROOTFS_SIZE_MB = env_int("ASU_MAX_ROOTFS_SIZE_MB", 1024, minimum=1)
ASU_MAX_PENDING_JOBS = env_int("ASU_MAX_PENDING_JOBS", 200, minimum=1)
ASU_REPOSITORY_ALLOW_LIST = env_list("ASU_REPOSITORY_ALLOW_LIST")
# Private networks a build may reach after all (a feed host or proxy on the LAN, named by
# host name); everything else private, link-local or CGNAT is refused inside the sandbox.
ASU_SANDBOX_ALLOW_NETWORKS = env_networks("ASU_SANDBOX_ALLOW_NETWORKS")
# The host user that runs the sandbox when the worker runs as root.
ASU_SANDBOX_USER = env_str("ASU_SANDBOX_USER", "nobody").strip()
ASU_BUILD_TIMEOUT = env_int("ASU_BUILD_TIMEOUT", 600, minimum=1)
ASU_BUILD_TTL = env_int("ASU_BUILD_TTL", 24 * 3600, minimum=60)
ASU_FAILURE_TTL = env_int("ASU_FAILURE_TTL", 3600, minimum=0)
ASU_DEFAULTS_TTL = env_int("ASU_DEFAULTS_TTL", 1800, minimum=0)  # builds with a defaults script
ASU_CACHE_MAX_AGE_DAYS = env_int("ASU_CACHE_MAX_AGE_DAYS", 7, minimum=1)  # unused ImageBuilders
ASU_SYNC_INTERVAL = env_int("ASU_SYNC_INTERVAL", 30, minimum=1)  # minutes
# Web processes learn of catalogue and build changes from PostgreSQL's notifications
# (targets.generation); off behind a connection pooler in transaction mode, which cannot
# pass them on: each request then reads the generations.
ASU_GENERATION_NOTIFICATIONS = env_bool("ASU_GENERATION_NOTIFICATIONS", True)
ASU_CONTACT = env_str("ASU_CONTACT", "")
# The usign secret key images are signed with (`usign -G` output); or ASU_SIGNING_KEY_FILE.
ASU_SIGNING_KEY = env_str("ASU_SIGNING_KEY").strip()
if ASU_SIGNING_KEY:
    try:
        usign.read_secret_key(ASU_SIGNING_KEY)
    except usign.SignatureError as exc:
        raise ImproperlyConfigured(f"ASU_SIGNING_KEY: {exc}") from None
# /metrics is open unless set; then it wants `Authorization: Bearer <token>`.
ASU_METRICS_TOKEN = env_str("ASU_METRICS_TOKEN", "")
ASU_STATS_DAYS = env_int("ASU_STATS_DAYS", 190, minimum=31)  # daily counts kept
# A Firmware Selector that builds through this server, linked from the pages; empty: none.
# Kept as given (the device page appends its query string), after env_url checked it.
ASU_FIRMWARE_SELECTOR_URL = env_str("ASU_FIRMWARE_SELECTOR_URL").strip()
if ASU_FIRMWARE_SELECTOR_URL:
    env_url("ASU_FIRMWARE_SELECTOR_URL", "", ("http", "https"))
ASU_SERVER_VERSION = "0.1.0"

CELERY_TASK_TIME_LIMIT = ASU_BUILD_TIMEOUT + 120  # make's own timeout fires first
CELERY_BEAT_SCHEDULE = {
    "sync-upstream": {
        "task": "packages.tasks.sync_upstream",
        "schedule": timedelta(minutes=ASU_SYNC_INTERVAL),
    },
    "expire-builds": {"task": "builds.tasks.expire_builds", "schedule": timedelta(hours=1)},
    # Snapshot ImageBuilders change daily: the day's snapshot builds go at midnight.
    "expire-snapshot-builds": {
        "task": "builds.tasks.expire_builds",
        "schedule": crontab(minute=0, hour=0),  # CELERY_TIMEZONE: UTC
    },
    # Sends builds the broker never got or lost, fails builds whose worker is gone.
    "reconcile-builds": {
        "task": "builds.tasks.reconcile_builds",
        "schedule": timedelta(minutes=1),
        "options": {"expires": 55},  # a tick missed while the broker was down is dropped
    },
}
