"""Updates: drafts from templates, review, approval, publishing and corrections; who is told and when."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from incidents.models import TimelineEvent
from incidents.services import timeline_event_record

from .. import rendering
from ..models import ComponentStatus, Update, UpdateComponent
from .deliveries import update_deliveries_create
from .notices import update_review_requested


class UpdateError(Exception):
    """An update change the rules refuse; the message is for the person who asked (API: 400)."""


class UpdateStepError(UpdateError):
    """A workflow step that is not allowed in the update's current state (API: 409)."""


class UpdatePermissionError(UpdateError):
    """The person may not take this step (approve, publish externally) (API: 403)."""


APPROVE_PERMISSION = "comms.approve_update"
PUBLISH_EXTERNAL_PERMISSION = "comms.publish_external_update"

EDITABLE_UPDATE_FIELDS = ("title", "body", "public_status")


def _lock_update(update):
    return (
        Update.objects.select_for_update(of=("self",))
        .select_related("incident__severity", "author", "submitted_by")
        .get(pk=update.pk)
    )


def update_placeholders_check(**texts):
    """Raise UpdateError naming every placeholder not on the fixed list (field → text)."""
    for field, text in texts.items():
        unknown = rendering.unknown_placeholders(text)
        if unknown:
            error = UpdateError(rendering.unknown_placeholders_message(unknown))
            error.field = field
            raise error


def update_internal_placeholders_check(**texts):
    """External texts: raise UpdateError naming an internal-only placeholder ({{ incident.reference }})."""
    for field, text in texts.items():
        used = rendering.internal_only_placeholders(text)
        if used:
            error = UpdateError(f"{', '.join(used)} is internal: it never reaches the public. Leave it out.")
            error.field = field
            raise error


def update_content_check(*, audience, public_status, body, components):
    if audience not in Update.Audience.values:
        raise UpdateError(f"Unknown audience {audience!r}: internal or external.")
    if audience == Update.Audience.EXTERNAL:
        if public_status not in Update.PublicStatus.values:
            raise UpdateError("An external update needs a public status: investigating, identified, monitoring, "
                              "resolved or postmortem.")
    elif public_status:
        raise UpdateError("Only external updates carry a public status.")
    if not (body or "").strip():
        raise UpdateError("An update needs a body.")
    if len(body) > rendering.BODY_MAX_CHARS:
        error = UpdateError(f"The body is {len(body):,} characters long: at most {rendering.BODY_MAX_CHARS:,}.")
        error.field = "body"
        raise error
    if components:
        if audience != Update.Audience.EXTERNAL:
            raise UpdateError("Only external updates name status-page components.")
        seen = set()
        for service, status in components:
            if status not in ComponentStatus.values:
                raise UpdateError(f"Unknown component status {status!r}.")
            if not service.is_public:
                raise UpdateError(f"{service.name} is not on the public status page, so it is not a component.")
            if service.pk in seen:
                raise UpdateError(f"{service.name} is named twice.")
            seen.add(service.pk)


def _components_set(update, components):
    if components is None:
        return
    update.components.all().delete()
    UpdateComponent.objects.bulk_create(
        UpdateComponent(update=update, service=service, status=status) for service, status in components
    )


def update_preview(*, incident, audience, public_status="", title="", body="", now=None):
    """(title, body, html) as they would read if published now: placeholders filled, Markdown rendered."""
    update_placeholders_check(title=title, body=body)
    if audience == Update.Audience.EXTERNAL:
        update_internal_placeholders_check(title=title, body=body)
    values = rendering.placeholder_values(
        incident=incident, audience=audience, public_status=public_status, now=now
    )
    filled_body = rendering.placeholders_fill(body, values)
    return rendering.placeholders_fill(title, values), filled_body, rendering.markdown_render(filled_body)


def _rerender(update):
    _title, _body, update.body_html = update_preview(
        incident=update.incident,
        audience=update.audience,
        public_status=update.public_status,
        title=update.title,
        body=update.body,
    )


@transaction.atomic
def update_draft_create(
    *, incident, actor, audience=None, title="", body="", public_status="", template=None, components=None
):
    """A new draft, written freely or started from a template (its title and body fill the empty ones).

    Placeholders stay in the draft (its preview shows them filled) and are filled for good when it is
    published. components: [(service, component status)], external updates only.
    """
    if template is not None:
        audience = audience or template.audience
        if template.audience != audience:
            raise UpdateError(f"The template {template.name!r} is for {template.get_audience_display().lower()} updates.")
        if template.severity_id is not None and template.severity_id != incident.severity_id:
            raise UpdateError(f"The template {template.name!r} is for {template.severity.label} incidents.")
        if audience == Update.Audience.EXTERNAL:
            public_status = public_status or template.public_status or Update.PublicStatus.INVESTIGATING
        title = title or template.title
        body = body or template.body
    if audience is None:
        raise UpdateError("Choose the audience (internal or external) or a template.")
    update_content_check(audience=audience, public_status=public_status, body=body, components=components)
    update = Update(
        incident=incident,
        audience=audience,
        public_status=public_status,
        title=title,
        body=body,
        template=template,
        author=actor,
    )
    _rerender(update)
    update.save()
    _components_set(update, components)
    return update


@transaction.atomic
def update_edit(*, update, actor, components=None, **fields):
    """Change a draft's title, body, public status or components. Only drafts can be edited."""
    unknown = set(fields) - set(EDITABLE_UPDATE_FIELDS)
    if unknown:
        raise UpdateError(f"These cannot be edited: {', '.join(sorted(unknown))}.")
    update = _lock_update(update)
    if update.status != Update.Status.DRAFT:
        raise UpdateStepError(
            f"Only drafts can be edited; this update is {update.get_status_display().lower()}."
            + (" Send it back to draft first." if update.status != Update.Status.PUBLISHED else " Correct it instead.")
        )
    changed = [name for name, value in fields.items() if getattr(update, name) != value]
    for name in changed:
        setattr(update, name, fields[name])
    current = [(c.service, c.status) for c in update.components.select_related("service")]
    update_content_check(
        audience=update.audience,
        public_status=update.public_status,
        body=update.body,
        components=components if components is not None else current,
    )
    _rerender(update)
    update.save()
    _components_set(update, components)
    return update


@transaction.atomic
def update_submit(*, update, actor):
    """Draft → in review. Submitting again is a no-op."""
    update = _lock_update(update)
    if update.status == Update.Status.IN_REVIEW:
        return update
    if update.status != Update.Status.DRAFT:
        raise UpdateStepError(f"Only a draft can be submitted for review; this update is {update.get_status_display().lower()}.")
    update.status = Update.Status.IN_REVIEW
    update.submitted_by, update.submitted_at = actor, timezone.now()
    update.save(update_fields=["status", "submitted_by", "submitted_at", "updated_at"])
    update_review_requested(update=update)
    return update


@transaction.atomic
def update_return(*, update, actor):
    """In review or approved → back to draft for changes (the approval is dropped). A draft stays one."""
    update = _lock_update(update)
    if update.status == Update.Status.DRAFT:
        return update
    if update.status == Update.Status.PUBLISHED:
        raise UpdateStepError("A published update cannot go back to draft; correct it instead.")
    update.status = Update.Status.DRAFT
    update.submitted_by = update.submitted_at = update.approved_by = update.approved_at = None
    update.save(update_fields=["status", "submitted_by", "submitted_at", "approved_by", "approved_at", "updated_at"])
    return update


def approval_required(update):
    """External updates need a second person's approval when the incident's severity says so."""
    return update.audience == Update.Audience.EXTERNAL and update.incident.severity.update_approval_required


@transaction.atomic
def update_approve(*, update, actor):
    """In review → approved, by someone with the approve permission who neither wrote nor submitted it."""
    update = _lock_update(update)
    if update.status == Update.Status.APPROVED:
        return update
    if update.status == Update.Status.PUBLISHED:
        raise UpdateStepError("This update is already published.")
    if update.status == Update.Status.DRAFT:
        raise UpdateStepError("Submit this draft for review before approving it.")
    if not actor.has_perm(APPROVE_PERMISSION):
        raise UpdatePermissionError("Only the Communications group (or someone allowed to approve updates) can approve.")
    if actor.pk in (update.author_id, update.submitted_by_id):
        raise UpdateStepError("An update must be approved by someone other than the person who wrote or submitted it.")
    update.status = Update.Status.APPROVED
    update.approved_by, update.approved_at = actor, timezone.now()
    update.save(update_fields=["status", "approved_by", "approved_at", "updated_at"])
    return update


@transaction.atomic
def update_publish(*, update, actor):
    """Publish: placeholders filled for good, a timeline event on the incident, deliveries created.

    External updates need the publish permission, and an approval first when the severity requires
    one. Internal updates need neither. Publishing again is a no-op.
    """
    update = _lock_update(update)
    if update.status == Update.Status.PUBLISHED:
        return update
    if update.audience == Update.Audience.EXTERNAL and not actor.has_perm(PUBLISH_EXTERNAL_PERMISSION):
        raise UpdatePermissionError("Only the Communications group (or someone allowed to) can publish external updates.")
    if approval_required(update) and update.status != Update.Status.APPROVED:
        raise UpdateStepError(
            f"{update.incident.severity.label} external updates must be approved by another person before "
            "publishing: submit it for review."
        )
    now = timezone.now()
    update.title, update.body, update.body_html = update_preview(
        incident=update.incident,
        audience=update.audience,
        public_status=update.public_status,
        title=update.title,
        body=update.body,
        now=now,
    )
    update.status = Update.Status.PUBLISHED
    update.published_at, update.published_by = now, actor
    update.save()
    data = {"update_id": update.pk, "audience": update.audience, "public_status": update.public_status}
    if update.corrects_id is not None:
        data["corrects"] = update.corrects_id
    summary = update.title or update.body.strip().splitlines()[0][:200]
    label = "Correction" if update.corrects_id else f"{update.get_audience_display().split(' (')[0]} update"
    timeline_event_record(
        incident=update.incident,
        kind=TimelineEvent.Kind.UPDATE_PUBLISHED,
        actor=actor,
        occurred_at=now,
        body=f"{label} published: {summary}",
        data=data,
    )
    update_deliveries_create(update=update)
    return update


@transaction.atomic
def update_correct(*, update, actor, title=None, body=None):
    """A draft correction of a published update (the original stays published as it was).

    It starts as a copy of the original (text, public status, components) and goes through the same
    review and publishing. Asking again while a correction is unpublished returns that one.
    """
    original = _lock_update(update)
    if original.status != Update.Status.PUBLISHED:
        raise UpdateStepError("Only a published update can be corrected; edit the draft instead.")
    # Correcting a correction corrects the same original: it stands in the original's place.
    root = original.corrects if original.corrects_id is not None else original
    pending = root.corrections.exclude(status=Update.Status.PUBLISHED).order_by("id").first()
    if pending is not None:
        return pending
    correction = Update(
        incident=original.incident,
        audience=original.audience,
        public_status=original.public_status,
        title=original.title if title is None else title,
        body=original.body if body is None else body,
        template=original.template,
        corrects=root,
        author=actor,
    )
    update_content_check(audience=correction.audience, public_status=correction.public_status, body=correction.body,
                   components=None)
    _rerender(correction)
    correction.save()
    _components_set(correction, [(c.service, c.status) for c in original.components.select_related("service")])
    return correction


def incident_next_update_due(incident):
    """When the incident's next update is due (a datetime), or None when it is not open.

    Counted from its latest published update (internal or external), or from its detection when none
    was published yet, plus its severity's update_interval_minutes. Overdue when in the past.
    """
    if incident.status not in incident.OPEN_STATUSES:
        return None
    last = (
        Update.objects.filter(incident_id=incident.pk, status=Update.Status.PUBLISHED)
        .order_by("-published_at")
        .values_list("published_at", flat=True)
        .first()
    )
    base = last or incident.detected_at
    return base + timedelta(minutes=incident.severity.update_interval_minutes)


