"""Package changes between releases, applied to package lists and published to clients.

PLACEHOLDER until the package-changes work lands: the signatures below are the interface
the rest of the server uses.
"""

from targets.models import Branch, Profile, Target, Version


def apply_package_changes(
    packages: list[str], version: Version, target: Target, profile: Profile
) -> tuple[list[str], list[dict]]:
    """Return the package list with the rules applied, and the rules that fired."""
    return list(packages), []


def published_changes(branch: Branch) -> list[dict]:
    """The branch's `package_changes` as overview.json and branches.json publish them."""
    return []
