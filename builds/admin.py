"""The builds in the admin: maintainers look a build up (by hash, profile or package),
see recent failures (the status filter, the same rows `/api/v1/build-errors` publishes),
build one again or expire it now.

The rows stay read-only: the two actions go through the code the API and the retention
sweep use (`builds.queue.build_again`, `builds.retention.delete_builds`), and need the
"change build" and "delete build" permissions.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from asuproject.admin import ReadOnlyAdmin
from builds.errors import BuildRejected
from builds.memory import memory
from builds.models import Build
from builds.queue import QueueUnavailable, build_again
from builds.retention import delete_builds


@admin.register(Build)
class BuildAdmin(ReadOnlyAdmin):
    list_display = ["short_hash", "version", "target", "profile", "status", "enqueued_at", "error"]
    list_filter = ["status", "version", "target", "enqueued_at"]
    # Hash prefix, profile, client and package names: `Build.objects.matching`.
    search_fields = ["client"]
    search_help_text = (
        "A request hash (its first 6 characters or more), profile, package or client."
    )
    date_hierarchy = "enqueued_at"
    show_full_result_count = False  # the table grows large; counting it costs more than a page
    # The logs are large and shown on the build's own page (/builds/<hash>/).
    exclude = ["stdout", "stderr"]
    actions = ["rebuild", "expire_now"]

    @admin.display(description="request hash", ordering="request_hash")
    def short_hash(self, build: Build) -> str:
        return build.request_hash[:12]

    @admin.display(description="error")
    def error(self, build: Build) -> str:
        return build.detail[:120]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Build]:
        return super().get_queryset(request).defer("stdout", "stderr", "result", "manifest")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term.strip():
            found |= queryset.matching(search_term)
        return found, may_have_duplicates

    def has_rebuild_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("builds.change_build")

    def has_expire_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("builds.delete_build")

    @admin.action(description="Build the selected builds again", permissions=["rebuild"])
    def rebuild(self, request: HttpRequest, queryset: QuerySet) -> None:
        queued = skipped = 0
        for build in queryset.only("pk", "request_hash", "status"):
            try:
                again = build_again(build)
            except (BuildRejected, QueueUnavailable) as exc:
                self.message_user(request, f"Stopped: {exc}", messages.ERROR)
                break
            memory.drop_answer(build.request_hash)
            queued, skipped = queued + again, skipped + (not again)
        self.message_user(request, f"{queued} build(s) queued again.")
        if skipped:
            self.message_user(
                request, f"{skipped} build(s) were queued or running already.", messages.WARNING
            )

    @admin.action(description="Expire the selected builds now", permissions=["expire"])
    def expire_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        builds = list(queryset.only("pk", "request_hash", "status", "bin_dir"))
        deleted, bin_dirs = delete_builds(builds)
        for build in deleted:
            memory.drop_answer(build.request_hash)
        self.message_user(
            request,
            f"{len(deleted)} build(s) deleted, {len(bin_dirs)} store folder(s) with them.",
        )
        if len(deleted) < len(builds):
            self.message_user(
                request,
                f"{len(builds) - len(deleted)} build(s) queued or running were left alone.",
                messages.WARNING,
            )
