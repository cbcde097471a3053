"""Daily metric roll-ups (issue 14): what the metrics and the dashboard need, per UTC day of detection.

Imported by incidents.models so that Django sees the models; written only by incidents.rollups.
"""

from django.db import models


class MetricsRollup(models.Model):
    """The sums of one UTC day of detection, for one severity (0: all) and one service (0: all, each
    incident once), restricted incidents apart. Dismissed incidents and duplicates are left out."""

    day = models.DateField()
    severity_id = models.PositiveIntegerField(help_text="A severity's id; 0 for every severity.")
    service_id = models.PositiveIntegerField(help_text="A service's id; 0 for every service (each incident once).")
    restricted = models.BooleanField()
    incidents = models.PositiveIntegerField(default=0)
    recurrences = models.PositiveIntegerField(default=0)
    reopened = models.PositiveIntegerField(default=0)
    detected_by_alert = models.PositiveIntegerField(default=0)
    # Impact (see incidents.metrics.impact_seconds_expression): ended impact summed in microseconds; for
    # impact still going on, how many and the sum of their starts (epoch microseconds), so that
    # "up to now" is worked out when read.
    impact_ended_us = models.BigIntegerField(default=0)
    impact_open = models.PositiveIntegerField(default=0)
    impact_open_start_us = models.BigIntegerField(default=0)
    # {duration key: [incidents measured, sum of the durations in microseconds]}.
    durations = models.JSONField(default=dict)
    # zlib of little-endian uint32 bucket counts, one block of rollups.BUCKETS per duration key in
    # rollups.DURATION_KEYS order (log buckets 0.8% wide, see incidents/rollups.py).
    histograms = models.BinaryField(default=b"")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "severity_id", "service_id", "restricted"], name="metricsrollup_unique_key"
            )
        ]
        indexes = [models.Index(fields=["service_id", "severity_id", "day"], name="metricsrollup_read_idx")]

    def __str__(self):
        return f"{self.day} severity {self.severity_id} service {self.service_id}"


class MetricsRollupDay(models.Model):
    """One row per day that has been rolled up: locked while the day is recomputed, so concurrent
    changes of incidents of the same day are rolled up one after the other."""

    day = models.DateField(primary_key=True)
    computed_at = models.DateTimeField(auto_now=True)
    version = models.BigIntegerField(
        default=0,
        help_text="A new random number at every recomputation of the day: what a read memoizes is keyed by the "
        "versions of the days it read (incidents.rollups.Read), so it is never reused once a day has changed.",
    )

    def __str__(self):
        return str(self.day)


class MetricsRollupState(models.Model):
    """A single row once the whole history has been rolled up (``manage.py metrics_rollup_rebuild``):
    until then the metrics are computed from the incidents directly."""

    built_at = models.DateTimeField()

    def __str__(self):
        return f"built at {self.built_at}"
