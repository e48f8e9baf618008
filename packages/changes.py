"""Package changes between releases, applied to package lists and published to clients.

The rules are `PackageChange` rows that maintainers edit in the admin. Every build
request runs `apply_package_changes`, so the rules are kept in memory per process and
reloaded when the catalogue's shared generation (`targets.generation`, read once per
request) moved on: every write to the rules or the branches moves it, from any process
and any write path, in the web server and in every worker alike.
"""

import logging
import re
import threading
from dataclasses import dataclass, replace

from packages.models import PackageChange
from targets import generation
from targets.models import Branch, Profile, Target, Version

log = logging.getLogger(__name__)

REVISION_RE = re.compile(r"^r(\d+)")


@dataclass(frozen=True)
class Rule:
    """A PackageChange row as the functions below need it, detached from the ORM."""

    id: int
    kind: str
    source: str
    target: str
    mandatory: bool
    revision: int | None
    branch_id: int | None
    branch_name: str
    branch_order: int
    later_branches: bool
    targets: tuple[str, ...]
    profiles: tuple[str, ...]
    only_if: str
    apply_on_build: bool
    publish: bool
    note: str
    link: str

    @classmethod
    def from_row(cls, row: PackageChange) -> "Rule":
        return cls(
            id=row.pk,
            kind=row.kind,
            source=row.source,
            target=row.target,
            mandatory=row.mandatory,
            revision=row.revision,
            branch_id=row.branch_id,
            branch_name=row.branch.name if row.branch_id else "",
            branch_order=row.branch.order if row.branch_id else 0,
            later_branches=row.later_branches,
            targets=tuple(row.targets or ()),
            profiles=tuple(row.profiles or ()),
            only_if=row.only_if,
            apply_on_build=row.apply_on_build,
            publish=row.publish,
            note=row.note,
            link=row.link,
        )

    def covers_branch(self, branch_id: int | None, branch_order: int) -> bool:
        if not self.branch_id:
            return True
        if branch_id == self.branch_id:
            return True
        return self.later_branches and branch_order > self.branch_order

    def covers(self, scope: "Scope") -> bool:
        """True if the rule is in effect for this version, target and profile."""
        if self.revision is not None and scope.revision is not None:
            if scope.revision < self.revision:
                return False
        if not self.covers_branch(scope.branch_id, scope.branch_order):
            return False
        if self.targets and scope.target is not None and scope.target not in self.targets:
            return False
        return not self.profiles or scope.profile is None or scope.profile in self.profiles

    def as_dict(self) -> dict:
        """The whole rule, as the package-changes API lists it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source or None,
            "target": self.target or None,
            "mandatory": self.mandatory,
            "revision": self.revision,
            "branch": self.branch_name or None,
            "later_branches": self.later_branches,
            "targets": list(self.targets),
            "profiles": list(self.profiles),
            "only_if": self.only_if or None,
            "apply_on_build": self.apply_on_build,
            "publish": self.publish,
            "note": self.note,
            "link": self.link,
        }


@dataclass(frozen=True)
class Scope:
    """What a rule is matched against: a version's branch and revision, a target, a profile."""

    branch_id: int | None
    branch_order: int
    # None: newest, every revision rule is in effect.
    revision: int | None
    # None: any, for listing what may apply somewhere; "" matches no limited rule.
    target: str | None
    profile: str | None


def effective_revision(branch: Branch | None, target: Target | None) -> int | None:
    """The revision number rules are compared with.

    A release branch counts as its branch-off revision, as openwrt/asu publishes it:
    its own revisions (24.10.0 is r28427) run on past master's and would wrongly take
    in master's later changes (opkg to apk at r28056). Snapshots of master count as
    their target's revision, or as newest when it is not known.
    """
    if branch is not None and not branch.snapshot and branch.branch_off_rev:
        return branch.branch_off_rev
    match = REVISION_RE.match(target.version_code or "") if target is not None else None
    return int(match.group(1)) if match else None


_lock = threading.Lock()
_loaded: tuple[int, list[Rule]] | None = None
_branches: dict[int, Branch] = {}


def enabled_rules() -> list[Rule]:
    """The enabled rules in their order, from this process's copy unless the table changed."""
    global _loaded
    signature = generation.current().catalogue
    loaded = _loaded
    if loaded is not None and loaded[0] == signature:
        return loaded[1]
    with _lock:
        rows = PackageChange.objects.filter(enabled=True).select_related("branch")
        rules = [Rule.from_row(row) for row in rows.order_by("order", "id")]
        _branches.clear()
        _branches.update({branch.pk: branch for branch in Branch.objects.all()})
        _loaded = (signature, rules)
    return rules


def _bare(entry: str) -> str:
    return entry[1:] if entry[:1] in ("-", "+") else entry


def _match(pattern: str, name: str) -> str | None:
    """What "*" stands for when `name` matches `pattern`, "" for an exact match, else None."""
    if "*" not in pattern:
        return "" if name == pattern else None
    prefix, _, suffix = pattern.partition("*")
    if len(name) > len(prefix) + len(suffix) and name.startswith(prefix):
        if name.endswith(suffix):
            return name[len(prefix) : len(name) - len(suffix)]
    return None


def _fire(rule: Rule, packages: list[str]) -> list[tuple[str | None, str | None]]:
    """Apply one rule to the list in place; return what it did as (source, target) pairs."""
    fired: list[tuple[str | None, str | None]] = []
    if rule.kind == PackageChange.Kind.ADD:
        present = {_bare(entry) for entry in packages}
        # "-pkg" in a request is the user removing it: they win, as in the ImageBuilder.
        if rule.target not in present:
            packages.append(rule.target)
            fired.append((None, rule.target))
        return fired
    index = 0
    while index < len(packages):
        entry = packages[index]
        sign = entry[:1] if entry[:1] in ("-", "+") else ""
        name = entry[len(sign) :]
        wildcard = _match(rule.source, name)
        if wildcard is None:
            index += 1
            continue
        if rule.kind == PackageChange.Kind.REMOVE:
            del packages[index]
            fired.append((name, None))
            continue
        new_name = rule.target.replace("*", wildcard, 1)
        new_entry = f"{sign}{new_name}"
        if new_entry in packages:
            del packages[index]  # already there: the old name just goes
        else:
            packages[index] = new_entry
            index += 1
        fired.append((name, new_name))
    return fired


def apply_rules(packages: list[str], rules: list[Rule]) -> tuple[list[str], list[dict]]:
    """Apply rules in their order, again and again until the list settles.

    Repeating makes chains work whatever the order (A to B, then B to C gives C) and
    makes the result a fixed point: applying the rules to it changes nothing.
    """
    result = list(packages)
    applied: list[dict] = []
    for _ in range(2 * len(rules) + 2):
        changed = False
        for rule in rules:
            if rule.only_if and rule.only_if not in result:
                continue
            for source, target in _fire(rule, result):
                changed = True
                applied.append(
                    {
                        "id": rule.id,
                        "kind": rule.kind,
                        "source": source,
                        "target": target,
                        "note": rule.note,
                    }
                )
        if not changed:
            return result, applied
    # Only rules that undo each other get here (A to B and B to A in one scope).
    log.warning("package-change rules do not settle for %s; check rules %s", packages, rules)
    return result, applied


def _branch_of(version: Version) -> Branch:
    # Callers usually hold the version with its branch; otherwise this process's copy
    # of the branches saves the query on every build request.
    if Version.branch.is_cached(version):
        return version.branch
    branch = _branches.get(version.branch_id)
    return branch if branch is not None else version.branch


def scope_of(version: Version, target: Target | None, profile: Profile | None) -> Scope:
    """The scope rules are matched against; a missing target or profile matches any."""
    branch = _branch_of(version)
    return Scope(
        branch_id=branch.pk,
        branch_order=branch.order,
        revision=effective_revision(branch, target),
        target=target.name if target is not None else None,
        profile=profile.name if profile is not None else None,
    )


def rules_in_effect(
    version: Version, target: Target | None = None, profile: Profile | None = None
) -> list[Rule]:
    """The enabled rules in effect for a version, and for a target and profile when given.

    Without a target (or profile), the rules limited to some targets (or profiles) are
    listed too: the answer is what may apply somewhere in that version.
    """
    rules = enabled_rules()  # first: it also refreshes the copy of the branches
    scope = scope_of(version, target, profile)
    return [rule for rule in rules if rule.covers(scope)]


def apply_package_changes(
    packages: list[str], version: Version, target: Target, profile: Profile
) -> tuple[list[str], list[dict]]:
    """Return the package list with the rules applied, and the rules that fired.

    Each applied rule is `{"id", "kind", "source", "target", "note"}` with the package
    names it acted on (a pattern rule names the package it renamed). The input list is
    not changed. Costs one query while the rules are unchanged.
    """
    rules = enabled_rules()  # first: it also refreshes the copy of the branches
    scope = scope_of(version, target, profile)
    if scope.target is None or scope.profile is None:
        # No target or profile: the rules limited to some match none.
        scope = replace(scope, target=scope.target or "", profile=scope.profile or "")
    return apply_rules(packages, [r for r in rules if r.apply_on_build and r.covers(scope)])


def published_changes(branch: Branch) -> list[dict]:
    """The branch's `package_changes` as overview.json and branches.json publish them.

    Entries are `{"source", "target", "revision", "mandatory"}` as owut and auc read
    them, in revision order: a rename has both names, a removal only `source` (the
    package that goes away), an addition only `target`. A release gets the rules up
    to its branch-off revision, as openwrt/asu publishes them; SNAPSHOT gets them all.
    """
    changes = []
    for rule in enabled_rules():
        if not rule.publish or rule.revision is None:
            continue
        if not rule.covers_branch(branch.pk, branch.order):
            continue
        if not branch.snapshot and branch.branch_off_rev and rule.revision > branch.branch_off_rev:
            continue
        entry: dict = {}
        if rule.source:
            entry["source"] = rule.source
        if rule.target:
            entry["target"] = rule.target
        entry["revision"] = rule.revision
        entry["mandatory"] = rule.mandatory
        changes.append((rule.revision, entry))
    changes.sort(key=lambda item: item[0])  # stable: equal revisions keep the rule order
    return [entry for _, entry in changes]


class UnknownScope(Exception):
    """A version, target or profile the catalogue does not have; the message says which."""


def find_scope(
    version: str, target: str = "", profile: str = ""
) -> tuple[Version, Target | None, Profile | None]:
    """The catalogue rows a dry run names, by name; a board name works as a profile.

    Unlike a build request this never asks upstream: an unknown name is an error.
    """
    version_row = Version.objects.select_related("branch").filter(name=version).first()
    if version_row is None:
        raise UnknownScope(f"Unsupported version: {version}. It is not in the catalogue.")
    if not target:
        if profile:
            raise UnknownScope("A profile needs its target: give target too.")
        return version_row, None, None
    target_row = Target.objects.filter(version=version_row, name=target).first()
    if target_row is None:
        raise UnknownScope(
            f"Unsupported target: {target}. {version} has no such target in the catalogue."
        )
    target_row.version = version_row
    if not profile:
        return version_row, target_row, None
    found = Profile.objects.filter(target=target_row).answering_to(profile)
    if not found:
        raise UnknownScope(
            f"Unsupported profile: {profile}. {target} in {version} has no device of that "
            "name: use the profile name or board name of the target's profiles.json."
        )
    found.target = target_row
    return version_row, target_row, found
