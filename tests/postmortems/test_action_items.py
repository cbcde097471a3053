"""Action items: every change through the services, on the incident's timeline; the rules people rely on."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from incidents import services as incident_services
from incidents.models import TimelineEvent
from postmortems import services
from postmortems.models import ActionItem, Review
from tests.incidents.factories import UserFactory, declare
from tests.postmortems.factories import ActionItemFactory, action_item

pytestmark = pytest.mark.django_db
Status = ActionItem.Status


def events(incident):
    return list(TimelineEvent.objects.filter(incident=incident, kind=TimelineEvent.Kind.ACTION_ITEM).order_by("id"))


def test_create_records_it_on_the_incident_timeline(responder):
    owner = UserFactory(username="olga")
    incident = declare(actor=responder)
    due = timezone.localdate() + timedelta(days=10)
    item = services.action_item_create(
        incident=incident,
        title="  Alert on queue depth ",
        actor=responder,
        owner=owner,
        due_date=due,
        priority="high",
        kind="detect",
        tracker_url="https://tracker.example.com/OPS-12",
    )
    assert item.title == "Alert on queue depth" and item.status == Status.OPEN and item.completed_at is None
    assert item.created_by == responder
    [event] = events(incident)
    assert event.actor == responder
    assert event.data == {
        "action": "created",
        "item": item.pk,
        "title": "Alert on queue depth",
        "owner": "olga",
        "due_date": due.isoformat(),
        "priority": "high",
        "kind": "detect",
        "review": None,
    }
    assert "Alert on queue depth" in event.body and "olga" in event.body


def test_create_links_the_incidents_review():
    incident = declare()
    review = Review.objects.create(incident=incident)
    item = action_item(incident)
    assert item.review == review
    other = Review.objects.create(incident=declare("Another"))
    with pytest.raises(services.ActionItemError, match="another incident"):
        services.action_item_update(item=item, actor=None, review=other)


def test_reviews_created_later_collect_the_items():
    incident = declare()
    first, second = action_item(incident), action_item(incident, title="Second")
    review = Review.objects.create(incident=incident)
    assert services.action_items_attach_to_review(review=review) == 2
    assert set(review.action_items.all()) == {first, second}


@pytest.mark.parametrize(
    "url,ok",
    [
        ("https://jira.example.com/browse/OPS-1", True),
        ("http://tracker.local/1", True),
        ("ftp://files.example.com/x", False),
        ("javascript:alert(1)", False),
        ("not a url", False),
    ],
)
def test_tracker_url_must_be_http_or_https(url, ok):
    if ok:
        assert action_item(tracker_url=url).tracker_url == url
    else:
        with pytest.raises(services.ActionItemError, match="http or https"):
            action_item(tracker_url=url)


def test_title_is_required():
    with pytest.raises(services.ActionItemError, match="title"):
        action_item(title="   ")


def test_update_records_before_and_after(responder):
    item = action_item(owner=UserFactory(username="olga"), priority="low")
    new_owner = UserFactory(username="pat")
    due = timezone.localdate() + timedelta(days=3)
    services.action_item_update(item=item, actor=responder, owner=new_owner, due_date=due, priority="high")
    item.refresh_from_db()
    assert (item.owner, item.due_date, item.priority) == (new_owner, due, "high")
    event = events(item.incident)[-1]
    assert event.actor == responder and event.data["action"] == "updated"
    assert event.data["changes"] == {
        "owner": ["olga", "pat"],
        "due_date": [None, due.isoformat()],
        "priority": ["low", "high"],
    }
    # Repeating the same edit changes nothing and records nothing.
    count = len(events(item.incident))
    services.action_item_update(item=item, actor=responder, owner=new_owner, priority="high")
    assert len(events(item.incident)) == count


def test_update_refuses_status_and_unknown_fields():
    item = action_item()
    with pytest.raises(services.ActionItemError, match="cannot be edited here: status"):
        services.action_item_update(item=item, actor=None, status="done")


@pytest.mark.parametrize("to", [Status.IN_PROGRESS, Status.DONE, Status.OPEN])
def test_every_status_change_is_on_the_timeline(responder, to):
    item = action_item()
    if to == Status.OPEN:
        item = services.action_item_status_set(item=item, status=Status.DONE, actor=responder)
    item = services.action_item_status_set(item=item, status=to, actor=responder)
    event = events(item.incident)[-1]
    assert event.data["action"] == "status_changed" and event.data["to"] == to and event.actor == responder
    assert (item.completed_at is not None) == (to == Status.DONE)


def test_done_stamps_completion_and_reopening_clears_it(responder):
    item = action_item()
    item = services.action_item_status_set(item=item, status=Status.IN_PROGRESS, actor=responder)
    assert item.completed_at is None
    item = services.action_item_status_set(item=item, status=Status.DONE, actor=responder)
    stamped = item.completed_at
    assert stamped is not None
    # Done again: a no-op, the first completion time stays, nothing more on the timeline.
    count = len(events(item.incident))
    item = services.action_item_status_set(item=item, status=Status.DONE, actor=responder)
    assert item.completed_at == stamped and len(events(item.incident)) == count
    item = services.action_item_status_set(item=item, status=Status.OPEN, actor=responder)
    assert item.completed_at is None
    last = events(item.incident)[-1]
    assert last.data["from"] == "done" and last.data["to"] == "open" and "reopened" in last.body


def test_wont_do_needs_a_reason_and_records_it(responder):
    item = action_item()
    with pytest.raises(services.ActionItemError, match="won't be done"):
        services.action_item_status_set(item=item, status=Status.WONT_DO, actor=responder, reason="  ")
    item.refresh_from_db()
    assert item.status == Status.OPEN
    item = services.action_item_status_set(
        item=item, status=Status.WONT_DO, actor=responder, reason="The service is being retired"
    )
    assert item.wont_do_reason == "The service is being retired" and item.completed_at is not None
    event = events(item.incident)[-1]
    assert event.data["to"] == "wont_do" and event.data["reason"] == "The service is being retired"
    # Reopening clears the reason on the item; the timeline keeps it.
    item = services.action_item_status_set(item=item, status=Status.IN_PROGRESS, actor=responder)
    assert item.wont_do_reason == "" and item.completed_at is None
    assert events(item.incident)[-1].data["previous_reason"] == "The service is being retired"


def test_database_refuses_inconsistent_rows():
    item = ActionItemFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        ActionItem.objects.filter(pk=item.pk).update(status=Status.WONT_DO, completed_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        ActionItem.objects.filter(pk=item.pk).update(status=Status.DONE)  # no completion time


def test_bulk_status_reports_refusals_and_applies_the_rest(responder):
    incident = declare()
    a, b, c = (action_item(incident, title=t) for t in ("A", "B", "C"))
    services.action_item_status_set(item=c, status=Status.DONE, actor=responder)
    changed, refused = services.action_item_bulk_status_set(items=[a, b, c], status=Status.DONE, actor=responder)
    assert {i.pk for i in changed} == {a.pk, b.pk} and not refused
    changed, refused = services.action_item_bulk_status_set(items=[a, b], status=Status.WONT_DO, actor=responder)
    assert not changed and set(refused) == {a, b}
    assert set(ActionItem.objects.values_list("status", flat=True)) == {"done"}


def test_owner_of_an_item_on_a_restricted_incident_becomes_a_member(responder):
    # Issue 11: the owner must see the item, so assigning them adds them to the incident (on its timeline).
    outsider = UserFactory(username="otto", groups=["Responders"])
    incident = declare("Payroll leak", actor=responder, restricted=True)
    incident_services.role_assign(incident=incident, role="commander", user=responder, actor=responder)
    assert action_item(incident, owner=outsider).owner == outsider
    assert incident.members.filter(user=outsider).exists()


def test_items_follow_their_incidents_visibility(responder):
    outsider = UserFactory(username="otto", groups=["Responders"])
    secret = declare("Payroll leak", actor=responder, restricted=True)
    incident_services.role_assign(incident=secret, role="commander", user=responder, actor=responder)
    hidden, shown = action_item(secret), action_item(declare("Search slow"))
    assert list(services.action_items_visible_to(outsider)) == [shown]
    assert set(services.action_items_visible_to(responder)) == {hidden, shown}
