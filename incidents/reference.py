"""Severities and services as the busy admin lists read them: once per process, for REFERENCE_SECONDS.

Both are short tables of reference data that every incident list request reads (filter choices, the
per-severity actions, the "needs someone" targets); under load each query is a round trip that waits
for a core. Saving or deleting one clears this process's copy at once (and again when the change
commits); another process sees the change within REFERENCE_SECONDS, as it does API keys
(API_KEY_CACHE_SECONDS) and the API's service slugs.
"""

import time

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .models import Service, Severity

REFERENCE_SECONDS = 10


class ProcessCopy:
    """The result of read(), kept for REFERENCE_SECONDS; clear() forgets it."""

    def __init__(self, read):
        self.read = read
        self.kept = None  # (value, monotonic time it was read), replaced as a whole

    def get(self):
        kept, now = self.kept, time.monotonic()
        if kept is None or now - kept[1] >= REFERENCE_SECONDS:
            kept = self.kept = (self.read(), now)
        return kept[0]

    def clear(self, **_signal_kwargs):
        self.kept = None
        # A request between the save and its commit may have read the old rows again.
        transaction.on_commit(self._forget)

    def _forget(self):
        self.kept = None


severities = ProcessCopy(lambda: list(Severity.objects.all()))  # by level
services = ProcessCopy(lambda: list(Service.objects.values_list("slug", "name")))  # by name

for _model, _copy in ((Severity, severities), (Service, services)):
    post_save.connect(_copy.clear, sender=_model, dispatch_uid=f"incidents-reference-{_model.__name__}-save")
    post_delete.connect(_copy.clear, sender=_model, dispatch_uid=f"incidents-reference-{_model.__name__}-delete")


def forget_all():
    """Tests: a rolled-back test's rows must not outlive it here (no signal says so)."""
    for copy in (severities, services):
        copy.kept = None
