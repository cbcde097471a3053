"""What the status page keeps of its own: the version of the public state (see comms/status/cache.py)."""

from django.db import models


class StatusPageVersion(models.Model):
    """One row (pk 1): a random token replaced after every committed change the public may see.

    The cached public documents are valid for one token. A random token (not a counter) never comes
    back, even after a database is restored from a backup, so a stale document can never look current.
    """

    token = models.CharField(max_length=32)
    changed_at = models.DateTimeField()

    class Meta:
        verbose_name = "status page version"

    def __str__(self):
        return f"{self.token} ({self.changed_at:%Y-%m-%d %H:%M:%S})"
