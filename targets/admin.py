"""Admin: maintainers switch branches on and off; the rest of the catalogue is read-only,
since the sync owns it and would overwrite any edit."""

from django.contrib import admin
from django.db.models import Count

from asuproject.admin import ReadOnlyAdmin
from targets.models import Branch, Profile, Target, Version


@admin.register(Branch)
class BranchAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "path", "snapshot", "branch_off_rev", "order", "versions"]
    list_editable = ["enabled"]
    list_filter = ["enabled", "snapshot"]
    search_fields = ["name"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    @admin.display(ordering="version_count")
    def versions(self, branch: Branch) -> int:
        return branch.version_count


@admin.register(Version)
class VersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "branch", "targets", "synced_at"]
    list_filter = ["branch"]
    search_fields = ["name"]
    list_select_related = ["branch"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(target_count=Count("targets"))

    @admin.display(ordering="target_count")
    def targets(self, version: Version) -> int:
        return version.target_count


@admin.register(Target)
class TargetAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "arch_packages", "version_code", "synced_at"]
    list_filter = ["version__branch", "version", "arch_packages"]
    search_fields = ["name", "arch_packages", "version_code", "version__name"]
    list_select_related = ["version"]


@admin.register(Profile)
class ProfileAdmin(ReadOnlyAdmin):
    list_display = ["name", "target_name", "version_name"]
    list_filter = ["target__version__branch", "target__version"]
    search_fields = ["name", "target__name", "supported_devices", "image_prefix"]
    list_select_related = ["target__version"]

    @admin.display(ordering="target__name", description="target")
    def target_name(self, profile: Profile) -> str:
        return profile.target.name

    @admin.display(ordering="target__version__name", description="version")
    def version_name(self, profile: Profile) -> str:
        return profile.target.version.name
