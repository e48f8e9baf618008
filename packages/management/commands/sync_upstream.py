"""manage.py sync_upstream: read the OpenWrt catalogue and its package indexes from the
downloads server."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from packages.sync import sync_upstream


class _Quiet:
    """Progress sink for --verbosity 0: only the errors and the summary get through."""

    def __init__(self, out) -> None:
        self.out = out

    def write(self, text: str) -> None:
        if "ERROR" in text or text.startswith("Done:"):
            self.out.write(text)


class Command(BaseCommand):
    help = (
        "Read versions, targets, profiles and package indexes of the enabled branches from "
        "ASU_UPSTREAM_URL into the catalogue. Unchanged files cost no database writes; a "
        "broken upstream file keeps the last good data and is reported as URL: reason."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        # --version names an OpenWrt version here, not this program's version.
        kwargs.setdefault("conflict_handler", "resolve")
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--version",
            dest="only_version",
            metavar="V",
            help='Only this version, e.g. "24.10.1", "24.10-SNAPSHOT" or "SNAPSHOT".',
        )
        parser.add_argument(
            "--target",
            dest="only_target",
            metavar="T",
            help='Only this target of each version, e.g. "ath79/generic".',
        )
        parser.add_argument(
            "--thorough",
            action="store_true",
            help="Also re-read every file of releases whose .targets.json did not change "
            "(normally only snapshots are re-read in full).",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Exit with status 1 when any upstream file could not be read.",
        )

    def handle(
        self, *args, only_version=None, only_target=None, thorough=False, strict=False, **options
    ):
        self.stdout.write(f"Reading {settings.ASU_UPSTREAM_URL}")
        out = self.stdout if options["verbosity"] > 0 else _Quiet(self.stdout)
        report = sync_upstream(
            version=only_version, target=only_target, stdout=out, thorough=thorough
        )
        for error in report.errors:
            self.stderr.write(f"error: {error}")
        if strict and report.errors:
            raise CommandError(f"{len(report.errors)} upstream files could not be read")
