"""What the server counts: per-day counts for the statistics pages, and running totals
for Prometheus. Both only ever grow by increments (`tally.counting`), from any number
of web and worker processes at once."""

from django.db import models


class DailyCount(models.Model):
    """How often something happened on one day (UTC). `key` and `detail` name what was
    counted; their meaning depends on `kind` (see `Kind`)."""

    class Kind(models.TextChoices):
        REQUESTS = "requests"  # POST /api/v1/build, whatever the answer
        CACHE_HITS = "cache_hits"  # ... answered at once with a finished image
        CLIENTS = "client"  # key: luci, owut, auc, ofs or other
        BUILDS = "builds"  # builds the workers finished; key: the hour, "00" to "23"
        FAILURES = "failures"  # builds that failed; key: the reason
        VERSIONS = "version"  # builds by version; detail: its branch
        TARGETS = "target"  # builds by target
        PROFILES = "profile"  # builds by profile; detail: its target
        PACKAGES = "package"  # packages requested, per build; detail: the branch
        DURATIONS = "duration"  # done builds; key: target, detail: bucket's upper bound (s)

    day = models.DateField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    key = models.CharField(max_length=200, blank=True)
    detail = models.CharField(max_length=64, blank=True)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # One row per thing and day: increments find it, concurrent creates collide.
            models.UniqueConstraint(
                fields=["day", "kind", "key", "detail"], name="daily_count_unique"
            ),
        ]
        indexes = [
            # Serves the charts: one kind over a range of days.
            models.Index(fields=["kind", "day"], name="daily_count_kind_day"),
        ]

    def __str__(self) -> str:
        what = " ".join(part for part in (self.kind, self.key, self.detail) if part)
        return f"{self.day}: {what} = {self.count}"


class Total(models.Model):
    """A Prometheus counter kept in the database, so that every web and worker process,
    on any host, adds to the one value `/metrics` shows. `labels` is a JSON object with
    sorted keys; a histogram keeps one row per bucket (non-cumulative) and one `_sum`."""

    name = models.CharField(max_length=100)
    labels = models.CharField(max_length=400, blank=True)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "labels"], name="total_name_labels_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} = {self.value:g}"
