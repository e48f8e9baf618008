"""manage.py sync_upstream."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from targets.models import Target, Version


def run(*args: str, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("sync_upstream", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def test_it_prints_one_line_per_version_and_target_and_a_summary(upstream, db):
    out, err = run()
    lines = out.splitlines()
    assert lines[0] == f"Reading {upstream}"
    assert "24.10.1: 3 targets, 3 package architectures (releases/24.10.1)" in lines
    assert "  24.10.1 x86/64: updated (1 profiles, 8 target packages, 47 kmods)" in lines
    assert "  24.10.1 packages/x86_64: 5 of 5 feeds updated (136 packages)" in lines
    assert any(line.startswith("24.10-SNAPSHOT: not published") for line in lines)
    assert lines[-1] == (
        "Done: 4 versions, 11 targets: 11 targets and 55 feed indexes updated, 0 removed, 0 errors"
    )
    assert err == ""


def test_a_second_run_says_unchanged(upstream, db):
    run()
    out, _ = run()
    assert (
        "25.12.0: release unchanged, 3 targets already read, 0 targets and 0 package "
        "architectures to read (releases/25.12.0)"
    ) in out
    assert "  SNAPSHOT ath79/generic: unchanged" in out
    assert "  SNAPSHOT packages/mips_24kc: 5 feeds unchanged" in out
    out, _ = run("--thorough")
    assert "  25.12.0 ath79/generic: unchanged" in out


def test_it_takes_a_version_and_a_target(upstream, db):
    out, _ = run("--version", "25.12.0", "--target", "x86/64")
    assert list(Target.objects.values_list("version__name", "name")) == [("25.12.0", "x86/64")]
    assert out.splitlines()[-1].startswith("Done: 1 versions, 1 targets")


def test_it_takes_options_by_name(upstream, db):
    run(version="SNAPSHOT")
    assert list(Version.objects.values_list("name", flat=True)) == ["SNAPSHOT"]


def test_it_lists_errors_and_exits_cleanly_unless_strict(settings, db, refused_url):
    settings.ASU_UPSTREAM_URL = refused_url
    out, err = run("--version", "24.10.1")
    assert f"error: {refused_url}/releases/24.10.1/.targets.json: connection failed" in err
    assert "24.10.1: ERROR" in out
    with pytest.raises(CommandError, match="1 upstream files could not be read"):
        run("--version", "24.10.1", "--strict")


def test_verbosity_0_prints_only_errors_and_the_summary(upstream, db):
    out, _ = run(verbosity=0)
    assert out.splitlines()[1:] == [
        "Done: 4 versions, 11 targets: 11 targets and 55 feed indexes updated, 0 removed, 0 errors"
    ]
