"""Admin pieces shared by the apps."""

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the catalogue sync owns and would overwrite: staff browse and search them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def set_up_site(site: admin.AdminSite) -> None:
    """The admin as maintainers see it: this server's name, and none of Celery's tables.

    Celery's models are unregistered, for everyone: the periodic tasks come from
    CELERY_BEAT_SCHEDULE in the settings and beat writes them over at each start, so an
    edit there would be silently lost; task results repeat what the builds admin shows,
    with the build's own state being the truth."""
    site.site_header = "OpenWrt Attended Sysupgrade"
    site.site_title = "Attended Sysupgrade admin"
    site.index_title = "Builds, package changes and the catalogue"
    site.site_url = "/"
    for model in list(site._registry):
        if model._meta.app_label in ("django_celery_results", "django_celery_beat"):
            site.unregister(model)
