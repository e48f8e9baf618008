"""Small formatting helpers for the public pages."""

from datetime import datetime, timedelta

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
    """Footer facts shared by every page."""
    return {
        "server_version": settings.ASU_SERVER_VERSION,
        "contact": settings.ASU_CONTACT,
        "upstream_url": settings.ASU_UPSTREAM_URL,
    }
