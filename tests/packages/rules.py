"""Catalogue rows and rules for the package-change tests, made with the ORM."""

from packages.models import PackageChange
from targets.models import Branch, Profile, ProfileName, Target, Version


def branch_name(version: str) -> str:
    return "SNAPSHOT" if version == "SNAPSHOT" else version[:5]


def scope(
    version: str = "24.10.1",
    target: str = "ath79/generic",
    profile: str = "tplink_archer-c7-v5",
    version_code: str = "",
) -> tuple[Version, Target, Profile]:
    """A version, target and profile of the catalogue, created when missing."""
    branch = Branch.objects.get(name=branch_name(version))
    version_row, _ = Version.objects.get_or_create(name=version, defaults={"branch": branch})
    target_row, created = Target.objects.get_or_create(
        version=version_row,
        name=target,
        defaults={"arch_packages": "mips_24kc", "version_code": version_code},
    )
    if not created and version_code and target_row.version_code != version_code:
        target_row.version_code = version_code
        target_row.save()
    profile_row, created = Profile.objects.get_or_create(target=target_row, name=profile)
    if created:
        ProfileName.objects.create(target=target_row, profile=profile_row, name=profile)
    return version_row, target_row, profile_row


def rule(kind: str, source: str = "", target: str = "", **fields) -> PackageChange:
    """A rule, saved after the model's own validation."""
    if isinstance(fields.get("branch"), str):
        fields["branch"] = Branch.objects.get(name=fields["branch"])
    change = PackageChange(kind=kind, source=source, target=target, **fields)
    change.full_clean()
    change.save()
    return change
