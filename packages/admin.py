"""Admin: the package-change rules maintainers edit, and the package indexes to browse.

Staff with the change permission edit the rules (the "Package change maintainers"
group); the "Package change reviewers" group sees everything and edits nothing. Every
edit is logged with the fields' old and new values, shown in each rule's history.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from asuproject.admin import ReadOnlyAdmin
from packages.changes import apply_package_changes
from packages.forms import PackageChangeForm, TryForm
from packages.models import Package, PackageChange, PackageIndex
from targets.models import Branch


class TargetFilter(admin.SimpleListFilter):
    title = "target"
    parameter_name = "for_target"
    ANY = "_any"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        names = sorted(
            {
                t
                for targets in PackageChange.objects.values_list("targets", flat=True)
                for t in targets or []
            }
        )
        return [(self.ANY, "every target")] + [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        # A handful of rows: filter the JSON lists here, the same on SQLite and PostgreSQL.
        wanted = [
            pk
            for pk, targets in queryset.values_list("pk", "targets")
            if (not targets if value == self.ANY else value in (targets or []))
        ]
        return queryset.filter(pk__in=wanted)


def _shown(field: str, value: object) -> str:
    """A field value as the history shows it."""
    if value in (None, "", []):
        return "(empty)"
    if field == "branch":
        branch = Branch.objects.filter(pk=getattr(value, "pk", value)).first()
        return branch.name if branch else str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return repr(str(value)) if isinstance(value, str) else str(value)


@admin.register(PackageChange)
class PackageChangeAdmin(admin.ModelAdmin):
    form = PackageChangeForm
    change_list_template = "admin/packages/packagechange/change_list.html"
    # Three columns, so the list reads at 1280 px beside the filters: the rule says its
    # kind and scope itself; how it is used is one short phrase.
    list_display = ["__str__", "used", "order"]
    list_filter = ["kind", "branch", TargetFilter, "enabled", "publish", "apply_on_build"]
    search_fields = ["source", "target", "only_if", "note", "link", "targets", "profiles"]
    list_select_related = ["branch"]
    readonly_fields = ["created_at", "updated_at"]
    actions = ["enable", "disable"]
    fieldsets = [
        (None, {"fields": ["kind", "source", "target", "mandatory", "only_if"]}),
        (
            "Where it applies",
            {"fields": ["revision", "branch", "later_branches", "targets", "profiles"]},
        ),
        ("How it is used", {"fields": ["apply_on_build", "publish", "order", "enabled"]}),
        ("Why", {"fields": ["note", "link", "created_at", "updated_at"]}),
    ]

    @admin.display(description="used", ordering="enabled")
    def used(self, rule: PackageChange) -> str:
        """ "builds, published, mandatory", or "disabled"."""
        if not rule.enabled:
            return "disabled"
        flags = [
            ("builds", rule.apply_on_build),
            ("published", rule.publish),
            ("mandatory", rule.mandatory),
        ]
        return ", ".join(name for name, on in flags if on) or "nowhere"

    def get_urls(self) -> list:
        urls = [
            path(
                "try/",
                self.admin_site.admin_view(self.try_view),
                name="packages_packagechange_try",
            )
        ]
        return urls + super().get_urls()

    def save_model(self, request: HttpRequest, obj: PackageChange, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        missing = obj.missing_from_indexes()
        if missing:
            self.message_user(
                request,
                f"The rule brings in {obj.target}, which is not in the package indexes of "
                f"{', '.join(missing)}: builds there fail when it fires. Check the name, or "
                "limit the rule's scope.",
                messages.WARNING,
            )

    def construct_change_message(self, request, form, formsets, add: bool = False):
        """Log the old and new value of every changed field, not only the field names."""
        if add or not form.changed_data:
            return super().construct_change_message(request, form, formsets, add)
        changes = [
            f"{form.fields[name].label or name}: {_shown(name, form.initial.get(name))} "
            f"→ {_shown(name, form.cleaned_data.get(name))}"
            for name in form.changed_data
        ]
        return "Changed " + "; ".join(changes) + "."

    @admin.action(description="Enable the selected rules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected rules", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
        rules = list(queryset.exclude(enabled=enabled))
        # updated_at moves too: it is what tells every process its rules are stale.
        queryset.filter(pk__in=[r.pk for r in rules]).update(
            enabled=enabled, updated_at=timezone.now()
        )
        for rule in rules:
            self.log_change(
                request,
                rule,
                f"Changed enabled: {_shown('', not enabled)} → {_shown('', enabled)}.",
            )
        self.message_user(request, f"{len(rules)} rule(s) {'enabled' if enabled else 'disabled'}.")

    def try_view(self, request: HttpRequest) -> HttpResponse:
        """Paste a package list, pick version, target and profile, see what the rules do."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = TryForm(request.GET or None)
        result = None
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            packages, applied = apply_package_changes(
                data["packages"], data["version"], data["target"], data["profile"]
            )
            result = {
                "packages": packages,
                "applied": applied,
                "added": [p for p in packages if p not in data["packages"]],
                "removed": [p for p in data["packages"] if p not in packages],
            }
        context = {
            **self.admin_site.each_context(request),
            "title": "Try the package changes",
            "opts": self.model._meta,
            "form": form,
            "result": result,
        }
        return TemplateResponse(request, "admin/packages/packagechange/try.html", context)


@admin.register(PackageIndex)
class PackageIndexAdmin(ReadOnlyAdmin):
    list_display = ["version", "kind", "arch_packages", "target", "name", "synced_at"]
    list_filter = ["kind", "version__branch"]
    search_fields = ["version__name", "arch_packages", "target__name", "name", "url"]
    list_select_related = ["version", "target__version"]


@admin.register(Package)
class PackageAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "index"]
    list_filter = ["index__kind", "index__version__branch"]
    # Prefix search: the name index serves it, and a name is what people look for.
    search_fields = ["^name"]
    list_select_related = ["index__version"]
    show_full_result_count = False
