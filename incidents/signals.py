"""What incidents announce to the apps built on them (they import incidents; incidents imports neither).

`timeline_event_committed` is sent once the transaction that wrote a timeline event has committed,
so listeners (outbound webhooks, say) never act on a change that was rolled back. Every change to an
incident writes exactly one timeline event, so this one signal covers them all.
Arguments: event_id, incident_id, kind.
"""

from django.dispatch import Signal

timeline_event_committed = Signal()
