"""Every write in comms goes through a function here (one per change), in modules by concern:

- updates:      drafts, templates, review, approval, publishing, corrections, who is told
- subscribers:  the public double opt-in, staff/API changes, who hears of what
- deliveries:   one row per recipient of a published update, sent by Celery
- nudges:       update-cadence reminders and acknowledgement escalation
- maintenance:  scheduled maintenance and its notices
- public:       an incident's public identity (public title, impact statement)
- notices:      approvers told of updates to review, the communications lead of a drafted resolution
- resolution:   the public "resolved" update drafted (and reviewed) when an incident is resolved
- enqueue:      the one place work is handed to Celery (services never import comms.tasks)

The names below are the package's interface: `from comms import services; services.update_publish(…)`.
"""
# ruff: noqa: F401  (re-exports: the package's interface)

from ..enqueue import task_enqueue
from .deliveries import (
    CHANNEL_DIRECT_OUTREACH,
    CHANNEL_EMAIL_SUBSCRIBERS,
    CHANNEL_STAKEHOLDERS,
    CHANNEL_STATUS_PAGE,
    DeliveryProgress,
    DeliveryRetry,
    deliveries_enqueue,
    deliveries_enqueue_safely,
    deliveries_send,
    deliveries_sweep,
    delivery_retry_countdown,
    subject_status_tag,
    update_channels,
    update_deliveries_create,
    update_deliveries_fan_out,
    update_delivery_progress,
    update_recipient_summary,
    update_stakeholder_emails,
)
from .maintenance import (
    MAINTENANCE_EDITABLE_FIELDS,
    MAINTENANCE_MESSAGES,
    MaintenanceError,
    maintenance_edit,
    maintenance_notices_create,
    maintenance_notices_enqueue,
    maintenance_notices_send,
    maintenance_recipients,
    maintenance_schedule,
    maintenance_sweep,
    maintenance_transition,
)
from .notices import NOTICE_KINDS, approvers_of, notice_create, update_review_requested
from .nudges import ack_escalation_sweep, nudge_send, nudges_send_pending, update_cadence_sweep
from .public import incident_public_identity_set
from .resolution import incident_resolution_draft
from .subscribers import (
    SubscriberError,
    outreach_contacts_for,
    subscriber_confirm,
    subscriber_confirm_url,
    subscriber_confirmation_send,
    subscriber_create,
    subscriber_delete,
    subscriber_from_unsubscribe_token,
    subscriber_list_for,
    subscriber_subscribe,
    subscriber_unsubscribe,
    subscriber_unsubscribe_url,
    subscriber_update,
)
from .updates import (
    APPROVE_PERMISSION,
    EDITABLE_UPDATE_FIELDS,
    PUBLISH_EXTERNAL_PERMISSION,
    UpdateError,
    UpdatePermissionError,
    UpdateStepError,
    approval_required,
    incident_next_update_due,
    update_approve,
    update_content_check,
    update_correct,
    update_draft_create,
    update_edit,
    update_placeholders_check,
    update_preview,
    update_publish,
    update_return,
    update_submit,
)
