"""Every write to an incident goes through a function here.

Each one validates the change, applies it in one transaction with the incident row locked, and
writes the matching timeline event. Invalid changes raise an IncidentError; repeating a change
that is already in effect is a no-op.
"""

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from .models import (
    Account,
    Alert,
    AlertGroup,
    CustomerReport,
    Incident,
    IncidentMember,
    ReferenceCounter,
    RoleAssignment,
    Severity,
    TimelineEvent,
    sees_all_incidents,
)
from .rollups import rollup_after_event
from .signals import timeline_event_committed

Status = Incident.Status
Kind = TimelineEvent.Kind

# Clocks differ a little between machines; a time this far ahead is still "now".
CLOCK_SKEW = timedelta(minutes=2)
FIRST_INCIDENT_NUMBER = 1001
BEYOND_RESPONDING = (Status.MITIGATED, Status.RESOLVED, Status.POSTMORTEM, Status.CLOSED, Status.DISMISSED)


class IncidentError(Exception):
    """A change the incident rules do not allow. The message is meant for the person who asked."""


class InvalidTransition(IncidentError):
    def __init__(self, incident, to):
        self.from_status, self.to_status = incident.status, to
        allowed = ", ".join(incident.allowed_transitions()) or "none"
        super().__init__(
            f"{incident.reference} cannot move from {incident.get_status_display().lower()} "
            f"to {Status(to).label.lower()} (allowed: {allowed})."
        )


class StaleIncident(IncidentError):
    def __init__(self, incident, expected_version):
        self.current_version, self.expected_version = incident.version, expected_version
        super().__init__(
            f"{incident.reference} was changed by someone else since you loaded it "
            f"(version {expected_version}, now {incident.version}). Reload it and apply your change again."
        )


# Other apps may refuse a transition (an unpublished required review blocks closing, say) without
# incidents importing them: they register a guard from their AppConfig.ready().
_transition_guards = []


def transition_guard_register(guard):
    """guard(incident, to) runs under the incident's row lock and raises IncidentError to refuse."""
    if guard not in _transition_guards:
        _transition_guards.append(guard)


def _lock(incident):
    return Incident.objects.select_for_update().get(pk=incident.pk)


def _iso(value):
    return value.isoformat() if value is not None else None


def _username(user):
    return user.get_username() if user is not None else None


def _when(at):
    """The time a change happened: now by default, or an earlier time when writing up history."""
    now = timezone.now()
    if at is None:
        return now
    if at > now + CLOCK_SKEW:
        raise IncidentError("A change cannot be dated in the future.")
    return at


def _next_incident_number():
    counter = ReferenceCounter.objects.select_for_update().filter(name="incident").first()
    if counter is None:
        # First incident ever (or an emptied database): continue after the highest number in use.
        highest = Incident.objects.aggregate(highest=Max("number"))["highest"]
        try:
            with transaction.atomic():
                ReferenceCounter.objects.create(name="incident", last_value=highest or FIRST_INCIDENT_NUMBER - 1)
        except IntegrityError:
            pass  # another declare created it first; its row lock orders us after it
        counter = ReferenceCounter.objects.select_for_update().get(name="incident")
    counter.last_value += 1
    counter.save(update_fields=["last_value"])
    return counter.last_value


# A person declaring, taking a role, writing a note or taking any other step has acknowledged the
# incident. Alerts are machines; status changes stamp it themselves (a dismissal does not count).
NOT_ACKNOWLEDGING_KINDS = frozenset({Kind.ALERT, Kind.ACKNOWLEDGED, Kind.STATUS_CHANGED})


def _acknowledge_by_working_on(incident, at):
    """Acknowledged by a person's first step on an open incident (never before its detection)."""
    stamped = (
        Incident.objects.filter(pk=incident.pk, status__in=Incident.OPEN_STATUSES)
        .filter(Q(acknowledged_at__isnull=True) | Q(acknowledged_at__gt=at, detected_at__lt=F("acknowledged_at")))
        .update(acknowledged_at=Greatest(Value(at), F("detected_at")))
    )
    if stamped:
        incident.acknowledged_at = Incident.objects.values_list("acknowledged_at", flat=True).get(pk=incident.pk)


def timeline_event_record(*, incident, kind, actor=None, occurred_at=None, body="", data=None):
    """The one place timeline rows are written. Callers hold the incident's transaction."""
    event = TimelineEvent.objects.create(
        incident=incident, kind=kind, actor=actor, occurred_at=occurred_at or timezone.now(), body=body, data=data or {}
    )
    Incident.objects.filter(pk=incident.pk, last_activity_at__lt=event.occurred_at).update(
        last_activity_at=event.occurred_at
    )
    if actor is not None and kind not in NOT_ACKNOWLEDGING_KINDS:
        _acknowledge_by_working_on(incident, event.occurred_at)
    # The daily metric roll-ups follow the change in this same transaction (incidents/rollups.py).
    rollup_after_event(incident=incident, kind=kind, data=event.data, occurred_at=event.occurred_at)
    transaction.on_commit(
        lambda: timeline_event_committed.send(
            sender=TimelineEvent, event_id=event.pk, incident_id=incident.pk, kind=event.kind
        )
    )
    return event


@transaction.atomic
def incident_declare(
    *,
    title,
    severity,
    actor,
    summary="",
    services=(),
    started_at=None,
    detected_at=None,
    recurrence_of=None,
    restricted=False,
):
    detected_at = _when(detected_at)
    if started_at is not None and started_at > detected_at:
        raise IncidentError("Impact cannot start after the incident was detected.")
    incident = Incident.objects.create(
        number=_next_incident_number(),
        title=title,
        summary=summary,
        severity=severity,
        started_at=started_at,
        detected_at=detected_at,
        last_activity_at=detected_at,
        recurrence_of=recurrence_of,
        is_restricted=restricted,
    )
    incident.services.set(services)
    timeline_event_record(
        incident=incident,
        kind=Kind.DECLARED,
        actor=actor,
        occurred_at=detected_at,
        body=title,
        data={
            "severity": severity.level,
            "services": sorted(s.slug for s in services),
            "started_at": _iso(started_at),
            "recurrence_of": recurrence_of.reference if recurrence_of else None,
            "restricted": restricted,
        },
    )
    return incident


@transaction.atomic
def incident_declare_by_person(*, person, commander, restricted=False, **details):
    """A person declares an incident (the admin's add page, the API): `commander` takes command in the
    same transaction (the person unless they chose someone else; None for nobody yet), and a restricted
    incident stays visible to the person who declared it (a member when they do not command it)."""
    incident = incident_declare(actor=person, restricted=restricted, **details)
    if commander is not None:
        role_assign(incident=incident, role=RoleAssignment.Role.COMMANDER, user=commander, actor=person)
    if restricted and commander != person and not sees_all_incidents(person):
        incident_member_add(incident=incident, user=person, actor=person)
    return incident


def _apply_status(incident, to, at, actor, going_back):
    """Set the status and keep the timestamps consistent with it. Returns {field: (before, after)}."""
    before = {f: getattr(incident, f) for f in ("acknowledged_at", "mitigated_at", "resolved_at", "closed_at")}
    if going_back:
        incident.mitigated_at = incident.resolved_at = incident.closed_at = None
        incident.duplicate_of = None
    if actor is not None and to != Status.DISMISSED and (incident.acknowledged_at is None or at < incident.acknowledged_at):
        incident.acknowledged_at = at  # a person working on it has acknowledged it (by their first step)
    if to in Incident.MITIGATED_OR_LATER_STATUSES and incident.mitigated_at is None:
        incident.mitigated_at = at  # skipped forward: mitigated no later than resolved
    if to in Incident.RESOLVED_OR_LATER_STATUSES and incident.resolved_at is None:
        incident.resolved_at = at
    if to in (Status.CLOSED, Status.DISMISSED):
        incident.closed_at = at
    incident.status = to
    return {f: (old, getattr(incident, f)) for f, old in before.items() if getattr(incident, f) != old}


def _check_not_before_history(incident, at, *, by_person=False):
    # Going back clears the stamps it undoes, so the last status change counts too. A person's step
    # dated before the acknowledgement moves the acknowledgement back to it (their first step).
    last_move = TimelineEvent.objects.filter(incident=incident, kind=Kind.STATUS_CHANGED).aggregate(
        at=Max("occurred_at")
    )
    stamps = (
        incident.detected_at,
        None if by_person else incident.acknowledged_at,
        incident.mitigated_at,
        incident.resolved_at,
        incident.closed_at,
        last_move["at"],
    )
    latest = max(t for t in stamps if t)
    if at < latest:
        raise IncidentError(f"This change cannot be dated before {latest:%Y-%m-%d %H:%M} (the incident's latest time).")


def _original_of(incident):
    """The incident a duplicate stands for, read from the database (the caller's copy may be stale)."""
    incident, seen = Incident.objects.get(pk=incident.pk), set()
    while incident.duplicate_of_id is not None and incident.pk not in seen:
        seen.add(incident.pk)
        incident = Incident.objects.get(pk=incident.duplicate_of_id)
    return incident


@transaction.atomic
def incident_transition(*, incident, to, actor, note="", at=None, duplicate_of=None):
    """Move an incident through its lifecycle (skipping forward, reopening and dismissing included)."""
    incident = _lock(incident)
    to = Status(to)
    if incident.status == to:
        return incident
    if to not in Incident.TRANSITIONS[incident.status]:
        raise InvalidTransition(incident, to)
    for guard in _transition_guards:
        guard(incident, to)
    at = _when(at)
    _check_not_before_history(incident, at, by_person=actor is not None and to != Status.DISMISSED)
    # Reopening, regressing after mitigation, or undoing a dismissal.
    going_back = to in (Status.RESPONDING, Status.TRIAGING) and incident.status in BEYOND_RESPONDING
    if duplicate_of is not None:
        if to != Status.DISMISSED:
            raise IncidentError("Only a dismissal can mark an incident as a duplicate.")
        # Point at the original, never at another duplicate.
        duplicate_of = _original_of(duplicate_of)
        if duplicate_of.pk == incident.pk:
            raise IncidentError("An incident cannot duplicate itself.")

    from_status = incident.status
    changed = _apply_status(incident, to, at, actor, going_back)
    incident.duplicate_of = duplicate_of if to == Status.DISMISSED else incident.duplicate_of
    incident.version += 1
    incident.save(update_fields=["status", "duplicate_of", "version", "updated_at", *changed])
    data = {
        "from": from_status,
        "to": to.value,
        "reopened": from_status in Incident.RESOLVED_OR_LATER_STATUSES and going_back,
        "timestamps": {f: [_iso(old), _iso(new)] for f, (old, new) in changed.items()},
    }
    if duplicate_of is not None:
        data["duplicate_of"] = duplicate_of.reference
    timeline_event_record(
        incident=incident, kind=Kind.STATUS_CHANGED, actor=actor, occurred_at=at, body=note, data=data
    )
    return incident


@transaction.atomic
def incident_acknowledge(*, incident, actor, note="", at=None):
    """A person takes the incident on: stamps acknowledged_at once, and starts triage if nobody has."""
    incident = _lock(incident)
    if incident.acknowledged_at is not None:
        return incident
    if incident.status not in Incident.OPEN_STATUSES:
        raise IncidentError(
            f"{incident.reference} is {incident.get_status_display().lower()}; there is nothing to acknowledge."
        )
    at = _when(at)
    _check_not_before_history(incident, at)
    incident.acknowledged_at = at
    incident.version += 1
    incident.save(update_fields=["acknowledged_at", "version", "updated_at"])
    timeline_event_record(
        incident=incident,
        kind=Kind.ACKNOWLEDGED,
        actor=actor,
        occurred_at=at,
        body=note,
        data={"acknowledged_at": _iso(at)},
    )
    if incident.status == Status.DETECTED:
        incident = incident_transition(incident=incident, to=Status.TRIAGING, actor=actor, at=at)
    return incident


@transaction.atomic
def incident_severity_change(*, incident, severity, actor, note="", at=None):
    incident = _lock(incident)
    if incident.severity_id == severity.pk:
        return incident
    previous = Severity.objects.get(pk=incident.severity_id)
    incident.severity = severity
    incident.version += 1
    incident.save(update_fields=["severity", "version", "updated_at"])
    timeline_event_record(
        incident=incident,
        kind=Kind.SEVERITY_CHANGED,
        actor=actor,
        occurred_at=_when(at),
        body=note,
        data={"from": previous.level, "to": severity.level},
    )
    return incident


EDITABLE_FIELDS = ("title", "summary", "started_at", "detected_at", "recurrence_of")
# The public identity: changed here (timeline, version) but only through comms' service, which checks
# that the person may speak for the company in public.
PUBLIC_FIELDS = ("public_title", "public_impact")


@transaction.atomic
def incident_update(*, incident, actor, expected_version=None, services=None, **fields):
    """Edit an incident's details. With expected_version, an edit based on a stale copy is refused."""
    unknown = set(fields) - set(EDITABLE_FIELDS) - set(PUBLIC_FIELDS)
    if unknown:
        raise IncidentError(f"These fields cannot be edited here: {', '.join(sorted(unknown))}.")
    incident = _lock(incident)
    if expected_version is not None and incident.version != expected_version:
        raise StaleIncident(incident, expected_version)

    changes = {}
    for name, value in fields.items():
        old = getattr(incident, name)
        if old != value:
            setattr(incident, name, value)
            changes[name] = [_display(old), _display(value)]
    if incident.recurrence_of_id is not None and incident.recurrence_of_id == incident.pk:
        raise IncidentError("An incident cannot be a recurrence of itself.")
    if incident.started_at and incident.started_at > incident.detected_at:
        raise IncidentError("Impact cannot start after the incident was detected.")
    if "detected_at" in changes:
        _when(incident.detected_at)  # not in the future
    later = [
        t for t in (incident.acknowledged_at, incident.mitigated_at, incident.resolved_at, incident.closed_at) if t
    ]
    if later and incident.detected_at > min(later):
        raise IncidentError("Detection cannot be later than the acknowledgement, mitigation, resolution or closing.")

    if services is not None:
        old_slugs = sorted(incident.services.values_list("slug", flat=True))
        new_slugs = sorted(s.slug for s in services)
        if old_slugs != new_slugs:
            incident.services.set(services)
            changes["services"] = [old_slugs, new_slugs]
    if not changes:
        return incident
    incident.version += 1
    incident.save(update_fields=[*(f for f in changes if f != "services"), "version", "updated_at"])
    timeline_event_record(incident=incident, kind=Kind.FIELDS_CHANGED, actor=actor, data=changes)
    return incident


def _display(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Incident):
        return value.reference
    return value


@transaction.atomic
def role_assign(*, incident, role, user, actor, at=None):
    """Give a role to a person. For single-holder roles the current holder is handed over from."""
    incident = _lock(incident)
    role = RoleAssignment.Role(role)
    active = RoleAssignment.objects.filter(incident=incident, role=role, relieved_at__isnull=True)
    if active.filter(user=user).exists():
        return active.get(user=user)
    at = _when(at)
    previous = None
    if role in RoleAssignment.SINGLE_HOLDER_ROLES:
        previous = active.select_related("user").first()
        if previous is not None:
            if at < previous.assigned_at:
                raise IncidentError("A handover cannot be dated before the current holder was assigned.")
            previous.relieved_at = at
            previous.save(update_fields=["relieved_at"])
    assignment = RoleAssignment.objects.create(
        incident=incident, role=role, user=user, assigned_at=at, assigned_by=actor
    )
    if role == RoleAssignment.Role.COMMANDER:
        incident.commander = user
        incident.version += 1
        incident.save(update_fields=["commander", "version", "updated_at"])
    timeline_event_record(
        incident=incident,
        kind=Kind.ROLE_ASSIGNED,
        actor=actor,
        occurred_at=at,
        data={"role": role.value, "from": _username(previous.user) if previous else None, "to": _username(user)},
    )
    return assignment


@transaction.atomic
def incident_take_command(*, incident, actor, note=""):
    """The person acting becomes the commander in one step, handing over from the current one."""
    assignment = role_assign(incident=incident, role=RoleAssignment.Role.COMMANDER, user=actor, actor=actor)
    if note.strip():
        timeline_note_add(incident=incident, actor=actor, body=note)
    return assignment


@transaction.atomic
def role_relieve(*, assignment, actor, at=None):
    """End someone's role without a successor (a handover goes through role_assign)."""
    incident = _lock(assignment.incident)  # first: read the assignment as the last writer left it
    assignment = RoleAssignment.objects.select_related("user").get(pk=assignment.pk)
    if assignment.relieved_at is not None:
        return assignment
    at = _when(at)
    if at < assignment.assigned_at:
        raise IncidentError("A role cannot end before it was assigned.")
    assignment.relieved_at = at
    assignment.save(update_fields=["relieved_at"])
    if assignment.role == RoleAssignment.Role.COMMANDER:
        incident.commander = None
        incident.version += 1
        incident.save(update_fields=["commander", "version", "updated_at"])
    timeline_event_record(
        incident=incident,
        kind=Kind.ROLE_RELIEVED,
        actor=actor,
        occurred_at=at,
        data={"role": assignment.role, "from": _username(assignment.user), "to": None},
    )
    return assignment


@transaction.atomic
def timeline_note_add(*, incident, actor, body, occurred_at=None):
    """A person's note. It may be dated in the past when writing up what happened earlier."""
    body = body.strip()
    if not body:
        raise IncidentError("A note needs some text.")
    incident = _lock(incident)
    return timeline_event_record(
        incident=incident, kind=Kind.NOTE, actor=actor, occurred_at=_when(occurred_at), body=body
    )


def incident_restriction_may_lift(*, incident, user):
    """Lifting a restriction opens the incident to everyone: its commander or the global permission only.

    Any member may restrict (or keep restricted); the system (user None) may do either.
    """
    return (
        user is None
        or sees_all_incidents(user)
        or (incident.commander_id is not None and incident.commander_id == user.pk)
    )


@transaction.atomic
def incident_restriction_set(*, incident, restricted, actor, note=""):
    """Restrict an incident to its participants, or lift the restriction; both are on the timeline."""
    incident = _lock(incident)
    if incident.is_restricted == restricted:
        return incident
    if not restricted and not incident_restriction_may_lift(incident=incident, user=actor):
        raise IncidentError(
            f"Only {incident.reference}'s commander, or someone who may view all restricted incidents, "
            "can lift its restriction."
        )
    incident.is_restricted = restricted
    incident.version += 1
    incident.save(update_fields=["is_restricted", "version", "updated_at"])
    timeline_event_record(
        incident=incident,
        kind=Kind.RESTRICTION_CHANGED,
        actor=actor,
        body=note,
        data={"from": not restricted, "to": restricted},
    )
    return incident


@transaction.atomic
def incident_member_add(*, incident, user, actor):
    """Let someone see a restricted incident without giving them a role."""
    incident = _lock(incident)
    member, created = IncidentMember.objects.get_or_create(incident=incident, user=user, defaults={"added_by": actor})
    if created:
        timeline_event_record(incident=incident, kind=Kind.MEMBER_ADDED, actor=actor, data={"user": _username(user)})
    return member


# Other apps say what taking someone off a restricted incident leaves behind (action items they still
# own, say) without incidents importing them: fn(incident, user) -> list of sentences.
_member_removal_notices = []


def member_removal_notice_register(notice):
    if notice not in _member_removal_notices:
        _member_removal_notices.append(notice)


@transaction.atomic
def incident_member_remove(*, member, actor):
    """Take someone off an incident. Returns what they leave behind (sentences to show to the actor)."""
    incident = _lock(member.incident)
    deleted, _ = IncidentMember.objects.filter(pk=member.pk).delete()
    notices = []
    if deleted:
        if incident.is_restricted and not Incident.objects.visible_to(member.user).filter(pk=incident.pk).exists():
            notices = [line for notice in _member_removal_notices for line in notice(incident, member.user)]
        timeline_event_record(
            incident=incident,
            kind=Kind.MEMBER_REMOVED,
            actor=actor,
            body=" ".join(notices),
            data={"user": _username(member.user)},
        )
    return notices


# ---- Merging duplicates (issue 15) ----------------------------------------------------------------


def _count(n, word, plural=None):
    return f"{n} {word if n == 1 else plural or word + 's'}"


@transaction.atomic
def incident_merge(*, duplicate, original, actor, note=""):
    """Dismiss `duplicate` as a duplicate of `original` and move what it gathered to the original.

    Its alert groups (with their alerts) move, so the group's next posts update the original instead
    of opening incidents; its customer reports move; its people (members and role holders) become
    members of the original. Both timelines record it. Repeating a merge is a no-op.
    """
    # Alert groups first: ingestion locks a group and then its incident, so this order cannot deadlock.
    groups = list(AlertGroup.objects.select_for_update().filter(incident=duplicate).order_by("pk"))
    current = _lock(duplicate)
    target = _original_of(original)
    if current.status == Status.DISMISSED:
        if current.duplicate_of_id is not None and _original_of(current).pk == target.pk:
            return current
        raise IncidentError(f"{current.reference} is already dismissed: undo its dismissal first.")
    if target.pk == current.pk:
        raise IncidentError("An incident cannot duplicate itself.")
    if target.status == Status.DISMISSED:
        raise IncidentError(f"{target.reference} is dismissed: merge into the incident that is being worked on.")
    if current.is_restricted and not target.is_restricted:
        # Its alerts and customer reports would become visible to everyone.
        raise IncidentError(
            f"{current.reference} is restricted and {target.reference} is not: restrict {target.reference} first."
        )
    duplicate = incident_transition(incident=current, to=Status.DISMISSED, actor=actor, note=note, duplicate_of=target)
    original = _lock(target)

    alerts = Alert.objects.filter(incident=duplicate).update(incident=original)
    AlertGroup.objects.filter(pk__in=[g.pk for g in groups]).update(incident=original)
    reports = CustomerReport.objects.filter(incident=duplicate).update(incident=original)
    people = [p for p in duplicate.participants().order_by("username") if p not in set(original.participants())]
    for person in people:
        incident_member_add(incident=original, user=person, actor=actor)

    moved = {
        "alert_groups": len(groups),
        "alerts": alerts,
        "customer_reports": reports,
        "members": [_username(p) for p in people],
    }
    # References stay in `data` (the timeline leaves out those a reader may not see), not in the text.
    body = (
        f"Merged as a duplicate: {_count(len(groups), 'alert group')} ({_count(alerts, 'alert')}), "
        f"{_count(reports, 'customer report')} and {_count(len(people), 'person', 'people')} moved."
    )
    for incident, other in ((duplicate, {"into": original.reference}), (original, {"from": duplicate.reference})):
        timeline_event_record(incident=incident, kind=Kind.MERGED, actor=actor, body=body, data={**other, **moved})
    return duplicate


# ---- Customer reports (issue 6) ---------------------------------------------------------------


def _customer_report_event(incident, report, actor, attached):
    revenue = f"{report.revenue_at_risk} {report.currency}" if report.revenue_at_risk is not None else ""
    verb = "attached" if attached else "received"
    timeline_event_record(
        incident=incident,
        kind=Kind.CUSTOMER_REPORT,
        actor=actor,
        occurred_at=timezone.now() if attached else min(report.received_at, timezone.now()),
        body=f"Customer report from {report.customer_id} via {report.get_channel_display().lower()} {verb}"
        + (f" ({revenue} at risk)" if revenue else "")
        + ".",
        data={
            "report": report.pk,
            "customer_id": report.customer_id,
            "channel": report.channel,
            "sentiment": report.sentiment or None,
            "revenue_at_risk": str(report.revenue_at_risk) if report.revenue_at_risk is not None else None,
            "currency": report.currency if report.revenue_at_risk is not None else None,
            "received_at": _iso(report.received_at),
            "attached": attached,
        },
    )


@transaction.atomic
def customer_report_create(
    *,
    actor,
    customer_id,
    channel="other",
    text="",
    sentiment="",
    revenue_at_risk=None,
    currency="USD",
    received_at=None,
    source_reference="",
    incident=None,
    account=None,
):
    """Record what a customer reported, linked to an incident or not (staff attach it later).

    With a source_reference (the sending tool's ticket id), sending the same report again returns
    the first one and changes nothing. Without an account, the one whose external id is the
    customer id (if any) is linked, so reports count towards that account's impact.
    """
    customer_id = (customer_id or "").strip()
    if not customer_id:
        raise IncidentError("A customer report needs the customer's or account's id.")
    if revenue_at_risk is not None and revenue_at_risk < 0:
        raise IncidentError("Revenue at risk cannot be negative.")
    currency = (currency or "USD").strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise IncidentError("A currency is a three-letter ISO 4217 code, e.g. EUR.")
    received_at = _when(received_at)
    if incident is not None:
        incident = _lock(incident)
    if source_reference:
        existing = CustomerReport.objects.filter(created_by=actor, source_reference=source_reference).first()
        if existing is not None:
            return existing
    fields = dict(
        incident=incident,
        customer_id=customer_id,
        channel=channel,
        text=text,
        sentiment=sentiment or "",
        revenue_at_risk=revenue_at_risk,
        currency=currency,
        received_at=received_at,
        source_reference=source_reference,
        created_by=actor,
        attached_at=timezone.now() if incident is not None else None,
        account=account or Account.objects.filter(external_id=customer_id).first(),
    )
    try:
        with transaction.atomic():
            report = CustomerReport.objects.create(**fields)
    except IntegrityError:
        if not source_reference:
            raise
        # The same report sent twice at once: the other request created it.
        return CustomerReport.objects.get(created_by=actor, source_reference=source_reference)
    if incident is not None:
        _customer_report_event(incident, report, actor, attached=False)
    return report


@transaction.atomic
def customer_report_attach(*, report, incident, actor):
    """Link an unlinked customer report to an incident (attaching it to the same one again is a no-op)."""
    incident = _lock(incident)
    report = CustomerReport.objects.select_for_update().get(pk=report.pk)
    if report.incident_id == incident.pk:
        return report
    if report.incident_id is not None:
        # Not named: the other incident may be restricted from this person.
        raise IncidentError("This customer report is already attached to another incident.")
    report.incident = incident
    report.attached_at = timezone.now()
    report.save(update_fields=["incident", "attached_at"])
    _customer_report_event(incident, report, actor, attached=True)
    return report
