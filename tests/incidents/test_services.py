"""The incident service layer: lifecycle, timestamps, timeline, edits and roles.

Every test drives incidents through incidents.services, the way the admin, the API and the tasks do,
and dates each step explicitly so the stamped times can be asserted exactly.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from incidents import services
from incidents.models import Incident, RoleAssignment, TimelineEvent
from incidents.services import IncidentError, InvalidTransition, StaleIncident
from tests.incidents.factories import PATH_TO, ServiceFactory, SeverityFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db

S = Incident.Status
Kind = TimelineEvent.Kind
Role = RoleAssignment.Role
STATUSES = list(S)
ALLOWED = [(source, target) for source in STATUSES for target in STATUSES if target in Incident.TRANSITIONS[source]]
DENIED = [
    (source, target)
    for source in STATUSES
    for target in STATUSES
    if target != source and target not in Incident.TRANSITIONS[source]
]
STAMPS = ("acknowledged_at", "mitigated_at", "resolved_at", "closed_at")


def _pair_id(pair):
    return f"{pair[0]}->{pair[1]}"


def minutes(t, n):
    return t + timedelta(minutes=n)


def iso(value):
    return value.isoformat() if value is not None else None


def reload(incident):
    return Incident.objects.get(pk=incident.pk)


def timeline(incident):
    return list(TimelineEvent.objects.filter(incident=incident).order_by("id"))


def snapshot(incident):
    """Everything a refused change must leave alone."""
    row = reload(incident)
    return {
        "status": row.status,
        "version": row.version,
        "severity": row.severity_id,
        "title": row.title,
        "started_at": row.started_at,
        "detected_at": row.detected_at,
        "duplicate_of": row.duplicate_of_id,
        "commander": row.commander_id,
        "last_activity_at": row.last_activity_at,
        **{f: getattr(row, f) for f in STAMPS},
        "events": TimelineEvent.objects.filter(incident=incident).count(),
    }


@pytest.fixture
def t0():
    """Detection time, a day ago: every later step of a test is dated explicitly after it."""
    return timezone.now() - timedelta(days=1)


@pytest.fixture
def other():
    return UserFactory(username="omar")


# --- the lifecycle table --------------------------------------------------------------------------


def test_the_lifecycle_is_the_designed_one():
    """Written out, so that changing Incident.TRANSITIONS is a decision a test has to be told about."""
    assert Incident.TRANSITIONS == {
        S.DETECTED: {S.TRIAGING, S.RESPONDING, S.MITIGATED, S.RESOLVED, S.DISMISSED},
        S.TRIAGING: {S.RESPONDING, S.MITIGATED, S.RESOLVED, S.DISMISSED},
        S.RESPONDING: {S.MITIGATED, S.RESOLVED},
        S.MITIGATED: {S.RESPONDING, S.RESOLVED},
        S.RESOLVED: {S.POSTMORTEM, S.CLOSED, S.RESPONDING},
        S.POSTMORTEM: {S.CLOSED, S.RESPONDING},
        S.CLOSED: set(),
        S.DISMISSED: {S.TRIAGING},
    }


def test_transition_table_and_setup_paths_cover_every_status(t0):
    assert set(Incident.TRANSITIONS) == set(STATUSES)
    assert set(PATH_TO) == set(STATUSES)
    assert len(ALLOWED) + len(DENIED) + len(STATUSES) == len(STATUSES) ** 2
    for status in STATUSES:
        assert reload(drive(declare(detected_at=t0), status, at=t0)).status == status


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=map(_pair_id, ALLOWED))
def test_allowed_transition_moves_stamps_and_records_it(source, target, t0, responder):
    incident = drive(declare(detected_at=t0), source, at=t0)  # by the system: nobody has acknowledged yet
    before = reload(incident)
    assert before.status == source and before.acknowledged_at is None
    events_before = len(timeline(incident))
    at = minutes(t0, 60)

    returned = services.incident_transition(incident=incident, to=target, actor=responder, note="moving on", at=at)

    after = reload(incident)
    assert returned.status == after.status == target
    assert after.version == before.version + 1
    expected = {
        # a person moving it has acknowledged it, except when dismissing it as not an incident
        "acknowledged_at": None if target == S.DISMISSED else at,
        # stamped once, filled when skipped over, cleared when going back
        "mitigated_at": (before.mitigated_at or at) if target in Incident.MITIGATED_OR_LATER_STATUSES else None,
        "resolved_at": (before.resolved_at or at) if target in Incident.RESOLVED_OR_LATER_STATUSES else None,
        "closed_at": at if target in (S.CLOSED, S.DISMISSED) else None,
    }
    assert {f: getattr(after, f) for f in STAMPS} == expected
    assert after.duplicate_of is None

    events = timeline(incident)
    assert len(events) == events_before + 1
    event = events[-1]
    assert (event.kind, event.actor, event.occurred_at, event.body) == (Kind.STATUS_CHANGED, responder, at, "moving on")
    assert event.data == {
        "from": source.value,
        "to": target.value,
        "reopened": source in Incident.RESOLVED_OR_LATER_STATUSES and target == S.RESPONDING,
        "timestamps": {
            f: [iso(getattr(before, f)), iso(value)] for f, value in expected.items() if getattr(before, f) != value
        },
    }
    assert after.last_activity_at == at


@pytest.mark.parametrize(("source", "target"), DENIED, ids=map(_pair_id, DENIED))
def test_denied_transition_is_refused_and_changes_nothing(source, target, t0, responder):
    incident = drive(declare(detected_at=t0), source, at=t0)
    before = snapshot(incident)

    with pytest.raises(InvalidTransition) as raised:
        services.incident_transition(incident=incident, to=target, actor=responder, at=minutes(t0, 60))

    assert (raised.value.from_status, raised.value.to_status) == (source, target)
    assert incident.reference in str(raised.value)
    assert snapshot(incident) == before


@pytest.mark.parametrize("status", STATUSES)
def test_repeating_a_transition_is_a_no_op(status, t0, responder):
    incident = drive(declare(detected_at=t0), status, at=t0)
    before = snapshot(incident)

    returned = services.incident_transition(incident=incident, to=status, actor=responder, at=minutes(t0, 60))

    assert returned.status == status
    assert snapshot(incident) == before  # no timeline row, same version, nothing acknowledged


def test_unknown_status_is_refused(t0, responder):
    incident = declare(detected_at=t0)
    with pytest.raises(ValueError):
        services.incident_transition(incident=incident, to="exploded", actor=responder)
    assert reload(incident).status == S.DETECTED


# --- timestamps -----------------------------------------------------------------------------------


def test_skipping_forward_from_detected_to_resolved_fills_mitigation_and_resolution(t0):
    incident = declare(detected_at=t0)
    at = minutes(t0, 3)

    services.incident_transition(incident=incident, to=S.RESOLVED, actor=None, at=at)

    row = reload(incident)
    assert (row.mitigated_at, row.resolved_at, row.closed_at, row.acknowledged_at) == (at, at, None, None)
    assert timeline(incident)[-1].data["timestamps"] == {
        "mitigated_at": [None, iso(at)],
        "resolved_at": [None, iso(at)],
    }


def test_a_person_moving_the_incident_acknowledges_it_once(t0, responder, other):
    incident = declare(detected_at=t0)
    services.incident_transition(incident=incident, to=S.RESPONDING, actor=responder, at=minutes(t0, 4))
    services.incident_transition(incident=incident, to=S.MITIGATED, actor=other, at=minutes(t0, 9))

    row = reload(incident)
    assert row.acknowledged_at == minutes(t0, 4)
    assert "acknowledged_at" not in timeline(incident)[-1].data["timestamps"]


def test_the_system_moving_the_incident_does_not_acknowledge_it(t0):
    incident = declare(detected_at=t0)
    for step, status in enumerate(PATH_TO[S.CLOSED], start=1):
        services.incident_transition(incident=incident, to=status, actor=None, at=minutes(t0, step))
        assert reload(incident).acknowledged_at is None, status


def test_dismissing_is_not_an_acknowledgement(t0, responder):
    incident = declare(detected_at=t0)
    services.incident_transition(incident=incident, to=S.DISMISSED, actor=responder, at=minutes(t0, 2))

    row = reload(incident)
    assert (row.status, row.acknowledged_at, row.closed_at) == (S.DISMISSED, None, minutes(t0, 2))


def test_each_timestamp_is_stamped_once(t0, responder):
    incident = drive(declare(detected_at=t0), S.RESPONDING, actor=responder, at=t0)  # triaging +5, responding +10
    services.incident_transition(incident=incident, to=S.MITIGATED, actor=responder, at=minutes(t0, 20))
    services.incident_transition(incident=incident, to=S.RESOLVED, actor=responder, at=minutes(t0, 30))
    services.incident_transition(incident=incident, to=S.POSTMORTEM, actor=responder, at=minutes(t0, 40))
    services.incident_transition(incident=incident, to=S.CLOSED, actor=responder, at=minutes(t0, 50))

    row = reload(incident)
    assert [getattr(row, f) for f in STAMPS] == [minutes(t0, n) for n in (5, 20, 30, 50)]


@pytest.mark.parametrize("source", [S.RESOLVED, S.POSTMORTEM])
def test_reopening_clears_mitigation_and_resolution_and_is_recorded(source, t0, responder):
    incident = drive(declare(detected_at=t0), source, actor=responder, at=t0)
    before = reload(incident)
    at = minutes(t0, 60)

    services.incident_transition(incident=incident, to=S.RESPONDING, actor=responder, note="It is back", at=at)

    row = reload(incident)
    assert row.status == S.RESPONDING
    assert (row.mitigated_at, row.resolved_at, row.closed_at) == (None, None, None)
    assert row.acknowledged_at == before.acknowledged_at == minutes(t0, 5)  # the first acknowledgement stays
    event = timeline(incident)[-1]
    assert event.data["reopened"] is True
    assert event.data["timestamps"] == {
        "mitigated_at": [iso(before.mitigated_at), None],
        "resolved_at": [iso(before.resolved_at), None],
    }

    # Resolving it again stamps the new times.
    services.incident_transition(incident=incident, to=S.RESOLVED, actor=responder, at=minutes(t0, 90))
    row = reload(incident)
    assert (row.mitigated_at, row.resolved_at) == (minutes(t0, 90), minutes(t0, 90))


def test_going_back_from_mitigated_is_not_a_reopen(t0, responder):
    incident = drive(declare(detected_at=t0), S.MITIGATED, actor=responder, at=t0)

    services.incident_transition(incident=incident, to=S.RESPONDING, actor=responder, at=minutes(t0, 60))

    row = reload(incident)
    assert (row.status, row.mitigated_at) == (S.RESPONDING, None)
    assert timeline(incident)[-1].data["reopened"] is False


# --- dismissing as a duplicate --------------------------------------------------------------------


def test_dismissing_as_duplicate_points_at_the_original(t0, responder):
    original = declare("Checkout down", detected_at=t0)
    duplicate = declare("Payments failing", detected_at=minutes(t0, 1))

    services.incident_transition(
        incident=duplicate, to=S.DISMISSED, actor=responder, duplicate_of=original, at=minutes(t0, 2)
    )

    row = reload(duplicate)
    assert (row.status, row.duplicate_of, row.closed_at) == (S.DISMISSED, original, minutes(t0, 2))
    assert timeline(duplicate)[-1].data["duplicate_of"] == original.reference
    assert list(original.duplicates.all()) == [row]


def test_a_duplicate_of_a_duplicate_points_at_the_original(t0, responder):
    original = declare("Checkout down", detected_at=t0)
    first = declare("Payments failing", detected_at=t0)
    second = declare("Cart empty", detected_at=t0)
    # `first` is the caller's copy from before its dismissal: the original is looked up, not taken from it.
    services.incident_transition(incident=first, to=S.DISMISSED, actor=responder, duplicate_of=original)

    services.incident_transition(incident=second, to=S.DISMISSED, actor=responder, duplicate_of=first)

    assert reload(second).duplicate_of == original
    assert timeline(second)[-1].data["duplicate_of"] == original.reference


def test_an_incident_cannot_duplicate_itself(t0, responder):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="itself"):
        services.incident_transition(incident=incident, to=S.DISMISSED, actor=responder, duplicate_of=incident)

    assert snapshot(incident) == before


def test_an_incident_cannot_duplicate_its_own_duplicate(t0, responder):
    original = declare("Checkout down", detected_at=t0)
    duplicate = declare("Payments failing", detected_at=t0)
    services.incident_transition(incident=duplicate, to=S.DISMISSED, actor=responder, duplicate_of=original)
    before = snapshot(original)

    # The original of `duplicate` is `original` itself.
    with pytest.raises(IncidentError, match="itself"):
        services.incident_transition(incident=original, to=S.DISMISSED, actor=responder, duplicate_of=duplicate)

    assert snapshot(original) == before


def test_only_a_dismissal_marks_a_duplicate(t0, responder):
    original = declare(detected_at=t0)
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="dismissal"):
        services.incident_transition(incident=incident, to=S.RESOLVED, actor=responder, duplicate_of=original)

    assert snapshot(incident) == before


def test_undoing_a_dismissal_returns_to_triage_and_forgets_the_duplicate(t0, responder):
    original = declare(detected_at=t0)
    incident = declare(detected_at=t0)
    services.incident_transition(
        incident=incident, to=S.DISMISSED, actor=None, duplicate_of=original, at=minutes(t0, 5)
    )

    services.incident_transition(incident=incident, to=S.TRIAGING, actor=responder, at=minutes(t0, 10))

    row = reload(incident)
    assert (row.status, row.duplicate_of, row.closed_at) == (S.TRIAGING, None, None)
    assert row.acknowledged_at == minutes(t0, 10)
    event = timeline(incident)[-1]
    assert (event.data["from"], event.data["to"], event.data["reopened"]) == ("dismissed", "triaging", False)
    assert event.data["timestamps"]["closed_at"] == [iso(minutes(t0, 5)), None]
    assert "duplicate_of" not in event.data


# --- dating a change ------------------------------------------------------------------------------


def _transition(incident, actor, at):
    return services.incident_transition(incident=incident, to=S.RESPONDING, actor=actor, at=at)


def _acknowledge(incident, actor, at):
    return services.incident_acknowledge(incident=incident, actor=actor, at=at)


def _severity(incident, actor, at):
    return services.incident_severity_change(incident=incident, severity=SeverityFactory(level=1), actor=actor, at=at)


def _note(incident, actor, at):
    return services.timeline_note_add(incident=incident, actor=actor, body="Rolled back", occurred_at=at)


def _role(incident, actor, at):
    return services.role_assign(incident=incident, role=Role.COMMANDER, user=actor, actor=actor, at=at)


DATED_CHANGES = [_transition, _acknowledge, _severity, _note, _role]


@pytest.mark.parametrize("change", DATED_CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_a_change_dated_in_the_future_is_refused(change, t0, responder):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="future"):
        change(incident, responder, timezone.now() + timedelta(hours=1))

    assert snapshot(incident) == before
    assert not incident.role_assignments.exists()


def test_a_clock_slightly_ahead_still_counts_as_now(t0, responder):
    incident = declare(detected_at=t0)
    at = timezone.now() + timedelta(seconds=30)

    services.incident_transition(incident=incident, to=S.RESPONDING, actor=responder, at=at)

    assert reload(incident).acknowledged_at == at


def test_a_transition_dated_before_the_latest_timestamp_is_refused(t0):
    incident = drive(declare(detected_at=t0), S.RESOLVED, at=t0)  # resolved at t0 + 20 minutes
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="cannot be dated before"):
        services.incident_transition(incident=incident, to=S.CLOSED, actor=None, at=minutes(t0, 19))
    assert snapshot(incident) == before

    services.incident_transition(incident=incident, to=S.CLOSED, actor=None, at=minutes(t0, 20))  # same time is fine
    assert reload(incident).closed_at == minutes(t0, 20)


def test_a_transition_dated_before_detection_is_refused(t0, responder):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="cannot be dated before"):
        services.incident_transition(incident=incident, to=S.RESPONDING, actor=responder, at=minutes(t0, -1))

    assert snapshot(incident) == before


@pytest.mark.parametrize(
    ("source", "back_to", "then"),
    [(S.RESOLVED, S.RESPONDING, S.MITIGATED), (S.DISMISSED, S.TRIAGING, S.RESPONDING)],
    ids=["reopened", "dismissal-undone"],
)
def test_after_going_back_a_change_cannot_be_dated_before_the_going_back(source, back_to, then, t0, responder):
    incident = drive(declare(detected_at=t0), source, actor=responder, at=t0)  # acknowledged at t0 + 5 minutes
    services.incident_transition(incident=incident, to=back_to, actor=responder, at=minutes(t0, 60))
    before = snapshot(incident)

    # Later than every timestamp still on the incident, but before it went back.
    with pytest.raises(IncidentError, match="cannot be dated before"):
        services.incident_transition(incident=incident, to=then, actor=responder, at=minutes(t0, 45))

    assert snapshot(incident) == before


# --- acknowledging --------------------------------------------------------------------------------


def test_acknowledging_a_detected_incident_stamps_it_and_starts_triage(t0, responder):
    incident = declare(detected_at=t0)
    at = minutes(t0, 3)

    services.incident_acknowledge(incident=incident, actor=responder, note="On it", at=at)

    row = reload(incident)
    assert (row.status, row.acknowledged_at, row.version) == (S.TRIAGING, at, 3)
    acknowledged, moved = timeline(incident)[-2:]
    assert (acknowledged.kind, acknowledged.actor, acknowledged.occurred_at, acknowledged.body) == (
        Kind.ACKNOWLEDGED,
        responder,
        at,
        "On it",
    )
    assert acknowledged.data == {"acknowledged_at": iso(at)}
    assert (moved.kind, moved.actor, moved.occurred_at) == (Kind.STATUS_CHANGED, responder, at)
    assert (moved.data["from"], moved.data["to"]) == ("detected", "triaging")


def test_acknowledging_an_incident_already_being_worked_keeps_its_status(t0, responder):
    incident = drive(declare(detected_at=t0), S.MITIGATED, at=t0)  # by the system
    events_before = len(timeline(incident))

    services.incident_acknowledge(incident=incident, actor=responder, at=minutes(t0, 30))

    row = reload(incident)
    assert (row.status, row.acknowledged_at) == (S.MITIGATED, minutes(t0, 30))
    assert [e.kind for e in timeline(incident)[events_before:]] == [Kind.ACKNOWLEDGED]


def test_acknowledging_twice_is_a_no_op(t0, responder, other):
    incident = declare(detected_at=t0)
    services.incident_acknowledge(incident=incident, actor=responder, at=minutes(t0, 3))
    before = snapshot(incident)

    services.incident_acknowledge(incident=incident, actor=other, at=minutes(t0, 5))

    assert snapshot(incident) == before


@pytest.mark.parametrize("status", [S.RESOLVED, S.POSTMORTEM, S.CLOSED, S.DISMISSED])
def test_an_incident_no_longer_open_cannot_be_acknowledged(status, t0, responder):
    incident = drive(declare(detected_at=t0), status, at=t0)  # by the system: never acknowledged
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="nothing to acknowledge"):
        services.incident_acknowledge(incident=incident, actor=responder, at=minutes(t0, 60))

    assert snapshot(incident) == before


def test_an_acknowledgement_dated_before_detection_is_refused(t0, responder):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="cannot be dated before"):
        services.incident_acknowledge(incident=incident, actor=responder, at=minutes(t0, -5))

    assert snapshot(incident) == before


# --- severity -------------------------------------------------------------------------------------


def test_changing_severity_is_a_timeline_event(t0, responder, sev1, sev3):
    incident = declare(severity=sev3, detected_at=t0)

    services.incident_severity_change(
        incident=incident, severity=sev1, actor=responder, note="Most users affected", at=minutes(t0, 7)
    )

    row = reload(incident)
    assert (row.severity, row.version) == (sev1, 2)
    event = timeline(incident)[-1]
    assert (event.kind, event.actor, event.occurred_at, event.body) == (
        Kind.SEVERITY_CHANGED,
        responder,
        minutes(t0, 7),
        "Most users affected",
    )
    assert event.data == {"from": 3, "to": 1}


def test_setting_the_same_severity_is_a_no_op(t0, responder, sev3):
    incident = declare(severity=sev3, detected_at=t0)
    before = snapshot(incident)

    services.incident_severity_change(incident=incident, severity=sev3, actor=responder)

    assert snapshot(incident) == before


# --- editing details ------------------------------------------------------------------------------


def test_editing_details_records_before_and_after(t0, responder):
    earlier = declare("Checkout down last week", detected_at=minutes(t0, -60 * 24 * 7))
    api, web = ServiceFactory(slug="api"), ServiceFactory(slug="web")
    incident = declare("Checkout errors", summary="", services=[api], detected_at=t0)

    services.incident_update(
        incident=incident,
        actor=responder,
        expected_version=1,
        title="Checkout returns 502",
        summary="Card payments fail.",
        started_at=minutes(t0, -10),
        recurrence_of=earlier,
        services=[api, web],
    )

    row = reload(incident)
    assert (row.title, row.summary, row.started_at, row.recurrence_of, row.version) == (
        "Checkout returns 502",
        "Card payments fail.",
        minutes(t0, -10),
        earlier,
        2,
    )
    assert sorted(row.services.values_list("slug", flat=True)) == ["api", "web"]
    event = timeline(incident)[-1]
    assert (event.kind, event.actor) == (Kind.FIELDS_CHANGED, responder)
    assert event.data == {
        "title": ["Checkout errors", "Checkout returns 502"],
        "summary": ["", "Card payments fail."],
        "started_at": [None, iso(minutes(t0, -10))],
        "recurrence_of": [None, earlier.reference],
        "services": [["api"], ["api", "web"]],
    }


def test_an_edit_that_changes_nothing_is_a_no_op(t0, responder):
    api = ServiceFactory(slug="api")
    incident = declare("Checkout errors", services=[api], detected_at=t0)
    before = snapshot(incident)

    services.incident_update(incident=incident, actor=responder, title="Checkout errors", services=[api])

    assert snapshot(incident) == before


def test_an_edit_based_on_a_stale_version_is_refused_and_changes_nothing(t0, responder, other):
    incident = declare("Checkout errors", detected_at=t0)
    services.incident_update(incident=incident, actor=other, expected_version=1, title="Checkout 502s")
    before = snapshot(incident)

    with pytest.raises(StaleIncident) as raised:
        services.incident_update(
            incident=incident, actor=responder, expected_version=1, title="Checkout slow", services=[ServiceFactory()]
        )

    assert (raised.value.expected_version, raised.value.current_version) == (1, 2)
    assert snapshot(incident) == before
    assert reload(incident).title == "Checkout 502s"
    assert not reload(incident).services.exists()


@pytest.mark.parametrize("field", ["status", "number", "resolved_at", "version", "commander"])
def test_fields_owned_by_other_services_cannot_be_edited(field, t0, responder):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match=field):
        services.incident_update(incident=incident, actor=responder, **{field: None})

    assert snapshot(incident) == before


def test_impact_cannot_start_after_detection(t0, responder):
    incident = declare(detected_at=t0, started_at=minutes(t0, -30))
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="start after"):
        services.incident_update(incident=incident, actor=responder, started_at=minutes(t0, 1))
    with pytest.raises(IncidentError, match="start after"):
        services.incident_update(incident=incident, actor=responder, detected_at=minutes(t0, -31))

    assert snapshot(incident) == before


def test_an_incident_cannot_recur_itself(t0, responder):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="itself"):
        services.incident_update(incident=incident, actor=responder, recurrence_of=incident)

    assert snapshot(incident) == before


@pytest.mark.parametrize("status", [S.TRIAGING, S.RESOLVED, S.CLOSED, S.DISMISSED])
def test_detection_cannot_be_moved_after_the_incident_progressed(status, t0, responder):
    incident = drive(declare(detected_at=t0), status, at=t0)  # by the system: nothing acknowledged
    if status == S.TRIAGING:
        services.incident_acknowledge(incident=incident, actor=responder, at=minutes(t0, 10))
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="Detection cannot be later"):
        services.incident_update(incident=incident, actor=responder, detected_at=minutes(t0, 60 * 12))

    assert snapshot(incident) == before


def test_detection_cannot_be_moved_into_the_future(t0, responder):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="future"):
        services.incident_update(incident=incident, actor=responder, detected_at=timezone.now() + timedelta(hours=1))

    assert snapshot(incident) == before


def test_detection_can_be_corrected_earlier(t0, responder):
    incident = drive(declare(detected_at=t0), S.RESOLVED, actor=responder, at=t0)

    services.incident_update(incident=incident, actor=responder, detected_at=minutes(t0, -15))

    assert reload(incident).detected_at == minutes(t0, -15)
    assert timeline(incident)[-1].data == {"detected_at": [iso(t0), iso(minutes(t0, -15))]}


# --- declaring ------------------------------------------------------------------------------------


def test_declaring_records_who_what_and_when(t0, responder, sev2):
    earlier = declare("Checkout down last week", detected_at=minutes(t0, -60 * 24 * 7))
    api, web = ServiceFactory(slug="api"), ServiceFactory(slug="web")

    incident = services.incident_declare(
        title="Checkout errors",
        severity=sev2,
        actor=responder,
        summary="502s",
        services=[web, api],
        started_at=minutes(t0, -20),
        detected_at=t0,
        recurrence_of=earlier,
    )

    row = reload(incident)
    assert (row.status, row.version, row.severity, row.recurrence_of) == (S.DETECTED, 1, sev2, earlier)
    assert (row.started_at, row.detected_at, row.last_activity_at) == (minutes(t0, -20), t0, t0)
    # A person declaring it has acknowledged it (issue 12); the other stamps wait for their steps.
    assert [getattr(row, f) for f in STAMPS] == [t0, None, None, None]
    [event] = timeline(incident)
    assert (event.kind, event.actor, event.occurred_at, event.body) == (Kind.DECLARED, responder, t0, "Checkout errors")
    assert event.data == {
        "severity": 2,
        "services": ["api", "web"],
        "started_at": iso(minutes(t0, -20)),
        "recurrence_of": earlier.reference,
        "restricted": False,
    }


def test_a_declaration_with_impact_after_detection_is_refused(t0, responder):
    with pytest.raises(IncidentError, match="start after"):
        declare(actor=responder, detected_at=t0, started_at=minutes(t0, 1))
    assert not Incident.objects.exists()


def test_a_declaration_dated_in_the_future_is_refused(responder):
    with pytest.raises(IncidentError, match="future"):
        declare(actor=responder, detected_at=timezone.now() + timedelta(hours=1))
    assert not Incident.objects.exists()


# --- roles ----------------------------------------------------------------------------------------


def test_assigning_a_role_is_recorded(t0, responder, other):
    incident = declare(detected_at=t0)

    assignment = services.role_assign(
        incident=incident, role=Role.TECHNICAL_LEAD, user=other, actor=responder, at=minutes(t0, 2)
    )

    assert (assignment.role, assignment.user, assignment.assigned_by) == (Role.TECHNICAL_LEAD, other, responder)
    assert (assignment.assigned_at, assignment.relieved_at) == (minutes(t0, 2), None)
    event = timeline(incident)[-1]
    assert (event.kind, event.actor, event.occurred_at) == (Kind.ROLE_ASSIGNED, responder, minutes(t0, 2))
    assert event.data == {"role": "technical_lead", "from": None, "to": "omar"}
    assert reload(incident).commander is None


def test_assigning_the_commander_sets_it_on_the_incident(t0, responder):
    incident = declare(detected_at=t0)

    services.role_assign(incident=incident, role=Role.COMMANDER, user=responder, actor=responder)

    row = reload(incident)
    assert (row.commander, row.version) == (responder, 2)


def test_handing_over_a_role_relieves_the_previous_holder_and_keeps_history(t0, responder, other):
    incident = declare(detected_at=t0)
    first = services.role_assign(
        incident=incident, role=Role.COMMANDER, user=responder, actor=responder, at=minutes(t0, 2)
    )

    second = services.role_assign(
        incident=incident, role=Role.COMMANDER, user=other, actor=responder, at=minutes(t0, 30)
    )

    first.refresh_from_db()
    assert (first.assigned_at, first.relieved_at) == (minutes(t0, 2), minutes(t0, 30))
    assert (second.assigned_at, second.relieved_at) == (minutes(t0, 30), None)
    assert list(incident.role_assignments.values_list("user__username", "relieved_at")) == [
        ("rita", minutes(t0, 30)),
        ("omar", None),
    ]
    assert reload(incident).commander == other
    event = timeline(incident)[-1]
    assert (event.kind, event.occurred_at) == (Kind.ROLE_ASSIGNED, minutes(t0, 30))
    assert event.data == {"role": "commander", "from": "rita", "to": "omar"}


def test_a_handover_cannot_be_dated_before_the_current_holder_started(t0, responder, other):
    incident = declare(detected_at=t0)
    services.role_assign(incident=incident, role=Role.SCRIBE, user=responder, actor=responder, at=minutes(t0, 20))
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="handover"):
        services.role_assign(incident=incident, role=Role.SCRIBE, user=other, actor=responder, at=minutes(t0, 10))

    assert snapshot(incident) == before
    assert list(incident.role_assignments.values_list("user__username", "relieved_at")) == [("rita", None)]


@pytest.mark.parametrize("role", list(Role))
def test_assigning_the_current_holder_again_is_a_no_op(role, t0, responder):
    incident = declare(detected_at=t0)
    first = services.role_assign(incident=incident, role=role, user=responder, actor=responder, at=minutes(t0, 2))
    before = snapshot(incident)

    again = services.role_assign(incident=incident, role=role, user=responder, actor=responder, at=minutes(t0, 9))

    assert again == first
    assert snapshot(incident) == before
    assert incident.role_assignments.count() == 1


def test_the_expert_role_has_several_holders(t0, responder, other):
    incident = declare(detected_at=t0)
    services.role_assign(incident=incident, role=Role.EXPERT, user=responder, actor=responder, at=minutes(t0, 2))

    services.role_assign(incident=incident, role=Role.EXPERT, user=other, actor=responder, at=minutes(t0, 3))

    assert sorted(
        incident.role_assignments.filter(role=Role.EXPERT, relieved_at__isnull=True).values_list(
            "user__username", flat=True
        )
    ) == ["omar", "rita"]
    assert timeline(incident)[-1].data == {"role": "expert", "from": None, "to": "omar"}


def test_relieving_a_role_is_recorded(t0, responder, other):
    incident = declare(detected_at=t0)
    assignment = services.role_assign(
        incident=incident, role=Role.COMMANDER, user=other, actor=responder, at=minutes(t0, 2)
    )
    version = reload(incident).version

    services.role_relieve(assignment=assignment, actor=responder, at=minutes(t0, 40))

    assignment.refresh_from_db()
    assert assignment.relieved_at == minutes(t0, 40)
    row = reload(incident)
    assert (row.commander, row.version) == (None, version + 1)
    event = timeline(incident)[-1]
    assert (event.kind, event.actor, event.occurred_at) == (Kind.ROLE_RELIEVED, responder, minutes(t0, 40))
    assert event.data == {"role": "commander", "from": "omar", "to": None}

    # Relieving again changes nothing.
    before = snapshot(incident)
    services.role_relieve(assignment=assignment, actor=responder, at=minutes(t0, 50))
    assignment.refresh_from_db()
    assert assignment.relieved_at == minutes(t0, 40)
    assert snapshot(incident) == before


def test_a_role_cannot_end_before_it_began(t0, responder):
    incident = declare(detected_at=t0)
    assignment = services.role_assign(
        incident=incident, role=Role.SCRIBE, user=responder, actor=responder, at=minutes(t0, 20)
    )
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="before it was assigned"):
        services.role_relieve(assignment=assignment, actor=responder, at=minutes(t0, 10))

    assignment.refresh_from_db()
    assert assignment.relieved_at is None
    assert snapshot(incident) == before


# --- notes and the timeline -----------------------------------------------------------------------


def test_a_note_is_recorded_with_its_author_and_moves_last_activity(t0, responder):
    incident = declare(detected_at=t0)

    note = services.timeline_note_add(incident=incident, actor=responder, body="  Rolled back the deploy.\n")

    assert (note.kind, note.actor, note.body) == (Kind.NOTE, responder, "Rolled back the deploy.")
    assert not note.is_system
    assert timezone.now() - note.occurred_at < timedelta(minutes=1)
    assert reload(incident).last_activity_at == note.occurred_at
    assert reload(incident).version == 1  # a note is not an edit of the incident


def test_a_backdated_note_keeps_its_date_and_does_not_move_last_activity_back(t0, responder):
    incident = drive(declare(detected_at=t0), S.RESPONDING, actor=responder, at=t0)  # last change t0 + 10 min
    earlier = minutes(t0, -30)  # before detection: writing up what led to it

    note = services.timeline_note_add(
        incident=incident, actor=responder, body="Deploy 4411 went out", occurred_at=earlier
    )

    assert note.occurred_at == earlier
    assert reload(incident).last_activity_at == minutes(t0, 10)
    assert timeline(incident)[-1] == note
    assert list(TimelineEvent.objects.filter(incident=incident))[0] == note  # ordered by when it happened


@pytest.mark.parametrize("body", ["", "   \n\t"])
def test_an_empty_note_is_refused(body, t0, responder):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    with pytest.raises(IncidentError, match="needs some text"):
        services.timeline_note_add(incident=incident, actor=responder, body=body)

    assert snapshot(incident) == before


def test_last_activity_only_moves_forward(t0, responder):
    incident = declare(detected_at=t0)
    services.timeline_note_add(incident=incident, actor=responder, body="Now", occurred_at=minutes(t0, 30))
    assert reload(incident).last_activity_at == minutes(t0, 30)

    services.incident_transition(incident=incident, to=S.RESPONDING, actor=responder, at=minutes(t0, 20))
    services.role_assign(incident=incident, role=Role.SCRIBE, user=responder, actor=responder, at=minutes(t0, 25))
    services.timeline_note_add(incident=incident, actor=responder, body="Earlier", occurred_at=minutes(t0, 5))

    assert reload(incident).last_activity_at == minutes(t0, 30)
    services.incident_transition(incident=incident, to=S.MITIGATED, actor=responder, at=minutes(t0, 45))
    assert reload(incident).last_activity_at == minutes(t0, 45)


def test_every_change_writes_one_event_with_its_actor(t0, responder, other, sev1):
    bot = None
    incident = declare(actor=bot, detected_at=t0)
    services.incident_acknowledge(incident=incident, actor=responder, at=minutes(t0, 1))
    services.incident_severity_change(incident=incident, severity=sev1, actor=responder, at=minutes(t0, 2))
    commander = services.role_assign(
        incident=incident, role=Role.COMMANDER, user=responder, actor=responder, at=minutes(t0, 3)
    )
    services.role_assign(incident=incident, role=Role.EXPERT, user=other, actor=responder, at=minutes(t0, 4))
    services.timeline_note_add(incident=incident, actor=other, body="Found it", occurred_at=minutes(t0, 5))
    services.incident_transition(incident=incident, to=S.MITIGATED, actor=other, at=minutes(t0, 6))
    services.role_relieve(assignment=commander, actor=responder, at=minutes(t0, 7))
    services.incident_update(incident=incident, actor=responder, title="Checkout 502s")
    services.incident_transition(incident=incident, to=S.RESOLVED, actor=bot, at=minutes(t0, 8))

    assert [(e.kind, e.actor) for e in timeline(incident)] == [
        (Kind.DECLARED, None),
        (Kind.ACKNOWLEDGED, responder),
        (Kind.STATUS_CHANGED, responder),
        (Kind.SEVERITY_CHANGED, responder),
        (Kind.ROLE_ASSIGNED, responder),
        (Kind.ROLE_ASSIGNED, responder),
        (Kind.NOTE, other),
        (Kind.STATUS_CHANGED, other),
        (Kind.ROLE_RELIEVED, responder),
        (Kind.FIELDS_CHANGED, responder),
        (Kind.STATUS_CHANGED, None),
    ]


def test_timeline_events_cannot_be_changed(t0, responder):
    incident = declare(detected_at=t0)
    note = services.timeline_note_add(incident=incident, actor=responder, body="Rolled back")

    note.body = "Never happened"
    with pytest.raises(ValueError, match="append-only"):
        note.save()
    loaded = TimelineEvent.objects.get(pk=note.pk)
    loaded.kind = Kind.DECLARED
    with pytest.raises(ValueError, match="append-only"):
        loaded.save(update_fields=["kind"])

    assert (TimelineEvent.objects.get(pk=note.pk).body, TimelineEvent.objects.get(pk=note.pk).kind) == (
        "Rolled back",
        Kind.NOTE,
    )


def test_a_change_that_fails_half_way_leaves_nothing_behind(t0, responder, monkeypatch):
    incident = declare(detected_at=t0)
    before = snapshot(incident)

    def broken_record(**kwargs):
        raise RuntimeError("timeline unavailable")

    monkeypatch.setattr(services, "timeline_event_record", broken_record)
    with pytest.raises(RuntimeError):
        services.incident_transition(incident=incident, to=S.RESOLVED, actor=responder, at=minutes(t0, 5))
    with pytest.raises(RuntimeError):
        services.role_assign(incident=incident, role=Role.COMMANDER, user=responder, actor=responder)

    assert snapshot(incident) == before
    assert not incident.role_assignments.exists()


# --- two people at once (PostgreSQL: SQLite serialises whole transactions) ------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_relieving_a_role_twice_at_once_records_it_once(t0, responder, other):
    incident = declare(detected_at=t0)
    assignment = services.role_assign(
        incident=incident, role=Role.COMMANDER, user=other, actor=responder, at=minutes(t0, 2)
    )
    errors = []

    def relieve_late():
        try:
            services.role_relieve(assignment=assignment, actor=other)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    second = threading.Thread(target=relieve_late)
    with transaction.atomic():
        services.role_relieve(assignment=assignment, actor=responder, at=minutes(t0, 40))
        # The second request starts while the first still holds the incident's lock, and waits for it.
        second.start()
        for _ in range(200):
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                if cursor.fetchone()[0]:
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the second relieve never waited for the incident lock")
    second.join(timeout=10)

    assert not second.is_alive() and errors == []
    assignment.refresh_from_db()
    assert assignment.relieved_at == minutes(t0, 40)
    assert [e.actor for e in timeline(incident) if e.kind == Kind.ROLE_RELIEVED] == [responder]
