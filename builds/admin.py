"""The builds in the admin: staff look up a build, and maintainers see recent failures
(the status filter), the same rows `/api/v1/build-errors` publishes."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from asuproject.admin import ReadOnlyAdmin
from builds.models import Build


@admin.register(Build)
class BuildAdmin(ReadOnlyAdmin):
    list_display = ["short_hash", "version", "target", "profile", "status", "enqueued_at", "error"]
    list_filter = ["status", "version", "target"]
    search_fields = ["request_hash", "profile", "client"]
    date_hierarchy = "enqueued_at"
    show_full_result_count = False  # the table grows large; counting it costs more than a page
    # The logs are large and shown on the build's own page (/builds/<hash>/).
    exclude = ["stdout", "stderr"]

    @admin.display(description="request hash", ordering="request_hash")
    def short_hash(self, build: Build) -> str:
        return build.request_hash[:12]

    @admin.display(description="error")
    def error(self, build: Build) -> str:
        return build.detail[:120]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Build]:
        return super().get_queryset(request).defer("stdout", "stderr", "result", "manifest")
