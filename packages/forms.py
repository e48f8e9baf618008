"""Forms of the package-change admin: the rule editor and the "try it" page."""

import re

from django import forms

from packages.changes import UnknownScope, find_scope
from packages.models import PackageChange
from targets.models import Version

SEPARATORS_RE = re.compile(r"[\s,]+")


class NamesField(forms.CharField):
    """A list of names typed one per line (or separated by spaces or commas)."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def __init__(self, *args, keep_commas: bool = False, **kwargs) -> None:
        kwargs.setdefault("required", False)
        super().__init__(*args, **kwargs)
        # Board names carry commas ("tplink,archer-c7-v5"): there a comma is part of
        # the name and becomes "_", as build requests do.
        self.keep_commas = keep_commas

    def prepare_value(self, value: object) -> object:
        if isinstance(value, list | tuple):
            return "\n".join(value)
        return value

    def to_python(self, value: object) -> list[str]:
        if isinstance(value, list | tuple):
            value = "\n".join(value)
        text = super().to_python(value) or ""
        if self.keep_commas:
            names = [name.replace(",", "_") for name in text.split()]
        else:
            names = [name for name in SEPARATORS_RE.split(text) if name]
        return list(dict.fromkeys(names))  # repeats dropped, order kept

    def has_changed(self, initial: object, data: object) -> bool:
        return self.to_python(initial or []) != self.to_python(data)


class PackageChangeForm(forms.ModelForm):
    targets = NamesField(help_text="One per line, like ath79/generic. Empty: every target.")
    profiles = NamesField(
        keep_commas=True,
        help_text="One per line, profile or board name. Empty: every profile.",
    )
    link = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text=PackageChange._meta.get_field("link").help_text,
    )

    class Meta:
        model = PackageChange
        fields = [
            "kind",
            "source",
            "target",
            "mandatory",
            "only_if",
            "revision",
            "branch",
            "later_branches",
            "targets",
            "profiles",
            "apply_on_build",
            "publish",
            "order",
            "enabled",
            "note",
            "link",
        ]
        widgets = {"note": forms.Textarea(attrs={"rows": 3, "cols": 60})}


class TryForm(forms.Form):
    """A package list and a version, target and profile to run the rules on."""

    packages = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "cols": 60}),
        help_text="One per line, or separated by spaces or commas. -name removes a package.",
    )
    version = forms.ModelChoiceField(
        queryset=Version.objects.select_related("branch").order_by("-branch__order", "-name"),
        to_field_name="name",
    )
    target = forms.CharField(max_length=64, help_text="Like ath79/generic.")
    profile = forms.CharField(
        max_length=128, required=False, help_text="Profile or board name; empty: none."
    )

    def clean_packages(self) -> list[str]:
        names = [
            name.removeprefix("+") for name in SEPARATORS_RE.split(self.cleaned_data["packages"])
        ]
        return [name for name in names if name]

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        try:
            version, target, profile = find_scope(
                data["version"].name, data["target"].strip(), data["profile"].strip()
            )
        except UnknownScope as exc:
            raise forms.ValidationError(str(exc)) from exc
        data.update(version=version, target=target, profile=profile)
        return data
