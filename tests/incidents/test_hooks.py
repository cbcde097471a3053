"""How the apps built on incidents take part in its changes without incidents importing them."""

import pytest
from django.db import transaction

from incidents import services
from incidents.models import Incident, TimelineEvent
from incidents.services import IncidentError
from incidents.signals import timeline_event_committed
from tests.incidents.factories import declare

pytestmark = pytest.mark.django_db


@pytest.fixture
def guard():
    """A guard that refuses closing; removed again after the test."""

    def refuse_closing(incident, to):
        if to == Incident.Status.CLOSED:
            raise IncidentError(f"{incident.reference} has unfinished business.")

    services.transition_guard_register(refuse_closing)
    yield refuse_closing
    services._transition_guards.remove(refuse_closing)


@pytest.fixture
def heard():
    events = []

    def listen(sender, event_id, incident_id, kind, **kwargs):
        events.append((event_id, incident_id, kind))

    timeline_event_committed.connect(listen)
    yield events
    timeline_event_committed.disconnect(listen)


def test_a_guard_refuses_a_transition_with_its_message_and_nothing_changes(guard):
    incident = declare()
    services.incident_transition(incident=incident, to=Incident.Status.RESOLVED, actor=None)
    events_before = incident.timeline.count()

    with pytest.raises(IncidentError, match="has unfinished business"):
        services.incident_transition(incident=incident, to=Incident.Status.CLOSED, actor=None)

    incident.refresh_from_db()
    assert incident.status == Incident.Status.RESOLVED
    assert incident.closed_at is None
    assert incident.timeline.count() == events_before


def test_a_guard_leaves_other_transitions_alone(guard):
    incident = declare()
    services.incident_transition(incident=incident, to=Incident.Status.RESOLVED, actor=None)
    services.incident_transition(incident=incident, to=Incident.Status.POSTMORTEM, actor=None)
    assert Incident.objects.get(pk=incident.pk).status == Incident.Status.POSTMORTEM


def test_registering_a_guard_twice_runs_it_once(guard):
    services.transition_guard_register(guard)
    assert services._transition_guards.count(guard) == 1


def test_listeners_hear_each_timeline_event_once_its_transaction_commits(heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        incident = declare()
        services.incident_transition(incident=incident, to=Incident.Status.RESOLVED, actor=None)
        assert heard == []  # nothing before commit

    kinds = [kind for _event_id, _incident_id, kind in heard]
    assert kinds == [TimelineEvent.Kind.DECLARED, TimelineEvent.Kind.STATUS_CHANGED]
    assert {incident_id for _e, incident_id, _k in heard} == {incident.pk}
    assert [event_id for event_id, _i, _k in heard] == list(incident.timeline.values_list("pk", flat=True))


def test_listeners_hear_nothing_of_a_change_that_was_rolled_back(heard, django_capture_on_commit_callbacks):
    incident = declare()
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                services.timeline_note_add(incident=incident, actor=None, body="never happened")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
    assert heard == []
