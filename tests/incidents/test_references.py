"""Incident references: INC-<number>, handed out without gaps and never twice."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from incidents import services
from incidents.models import Incident, ReferenceCounter
from incidents.services import IncidentError
from tests.incidents.factories import SeverityFactory, declare

THREADS = 20


def numbers():
    return list(Incident.objects.order_by("number").values_list("number", flat=True))


@pytest.mark.django_db
def test_references_are_consecutive_inc_numbers():
    incidents = [declare(f"Alert {i}") for i in range(5)]

    first = services.FIRST_INCIDENT_NUMBER
    assert [i.number for i in incidents] == list(range(first, first + 5))
    assert [i.reference for i in incidents] == [f"INC-{n}" for n in range(first, first + 5)]
    assert str(incidents[0]) == f"INC-{first} Alert 0"
    assert numbers() == list(range(first, first + 5))
    assert ReferenceCounter.objects.get(name="incident").last_value == first + 4


@pytest.mark.django_db
def test_numbering_continues_after_the_highest_number_when_the_counter_is_gone():
    declare()
    latest = declare()
    Incident.objects.filter(pk=latest.pk).update(number=5000)  # e.g. imported from an older tool
    ReferenceCounter.objects.all().delete()

    assert declare().number == 5001
    assert declare().number == 5002


def _timeline_breaks(monkeypatch):
    def broken_record(**kwargs):
        raise RuntimeError("timeline unavailable")

    monkeypatch.setattr(services, "timeline_event_record", broken_record)
    with pytest.raises(RuntimeError):
        declare("Never recorded")
    monkeypatch.undo()


def _caller_rolls_back(monkeypatch):
    with pytest.raises(RuntimeError), transaction.atomic():
        declare("Rolled back by the caller")
        raise RuntimeError("the request failed after declaring")


def _invalid_declaration(monkeypatch):
    now = timezone.now()
    with pytest.raises(IncidentError):
        declare("Impact after detection", detected_at=now, started_at=now + timedelta(minutes=1))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "failure", [_timeline_breaks, _caller_rolls_back, _invalid_declaration], ids=lambda f: f.__name__.strip("_")
)
def test_a_failed_declaration_leaves_no_gap(failure, monkeypatch):
    first = declare("Before")

    failure(monkeypatch)

    assert Incident.objects.count() == 1
    assert ReferenceCounter.objects.get(name="incident").last_value == first.number
    assert declare("After").number == first.number + 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("counter_exists", [False, True], ids=["first-ever", "counter-exists"])
def test_concurrent_declarations_get_distinct_consecutive_numbers(counter_exists):
    severity = SeverityFactory(level=2)
    start = declare("Already there", severity=severity).number + 1 if counter_exists else services.FIRST_INCIDENT_NUMBER
    if counter_exists:
        assert ReferenceCounter.objects.filter(name="incident").exists()
    else:
        assert not ReferenceCounter.objects.exists() and not Incident.objects.exists()
    barrier = threading.Barrier(THREADS)
    got, errors = [], []

    def declare_one(i):
        try:
            barrier.wait(timeout=10)
            got.append(declare(f"Alert storm {i}", severity=severity).number)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=declare_one, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert sorted(got) == list(range(start, start + THREADS))
    assert numbers()[-THREADS:] == sorted(got)
    assert ReferenceCounter.objects.get(name="incident").last_value == start + THREADS - 1
