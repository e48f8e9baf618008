"""Small formatting helpers for the public pages."""

from datetime import UTC, datetime, timedelta

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def ago(value: datetime | None) -> str:
    """ "3 hours ago", with one unit only, which is what a table cell has room for."""
    if not value:
        return ""
    if timezone.now() - value < timedelta(minutes=1):
        return "just now"
    return f"{timesince(value, depth=1)} ago"


@register.filter
def seconds(value: timedelta | None) -> str:
    """A build duration: "42 s" or "3 min 5 s"."""
    if value is None:
        return ""
    total = max(int(value.total_seconds()), 0)
    minutes, secs = divmod(total, 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


@register.simple_tag
def site_info() -> dict:
    """Facts about this server shared by the pages: footer, links and limits."""
    upstream = settings.ASU_UPSTREAM_URL
    return {
        "server_version": settings.ASU_SERVER_VERSION,
        "contact": settings.ASU_CONTACT,
        # A file:// mirror is a path on the server's disk: nothing a visitor can open.
        "upstream_url": upstream if upstream.startswith(("http://", "https://")) else "",
        "selector_url": settings.ASU_FIRMWARE_SELECTOR_URL,
        "allow_defaults": settings.ASU_ALLOW_DEFAULTS,
        "max_defaults_length": settings.ASU_MAX_DEFAULTS_LENGTH,
        "max_rootfs_size_mb": settings.ASU_MAX_ROOTFS_SIZE_MB,
        "max_pending_jobs": settings.ASU_MAX_PENDING_JOBS,
        "build_ttl": _span(settings.ASU_BUILD_TTL),
        "extra_feeds": bool(settings.ASU_REPOSITORY_ALLOW_LIST),
    }


def _span(seconds: int) -> str:
    """A length of time in words: "1 day", "2 hours, 30 minutes"."""
    start = datetime(2000, 1, 1, tzinfo=UTC)
    return timesince(start, start + timedelta(seconds=seconds), depth=2)
