"""The action-item admin: filters people use, "my action items", bulk actions (won't do asks why), saving
through the services, the inline on the review page, and restricted incidents' items staying hidden."""

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from incidents import services as incident_services
from incidents.models import TimelineEvent
from postmortems.models import ActionItem, Review
from tests.incidents.factories import ServiceFactory, UserFactory, declare
from tests.postmortems.factories import action_item

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:postmortems_actionitem_changelist")


def days(n):
    return timezone.localdate() + timedelta(days=n)


def listed(client, **query):
    response = client.get(CHANGELIST, query)
    assert response.status_code == 200
    return sorted(item.title for item in response.context["cl"].result_list)


@pytest.fixture
def world(db, client):
    class W:
        alice = UserFactory(username="alice", groups=["Responders"])
        bob = UserFactory(username="bob", groups=["Responders"])
        checkout = ServiceFactory(slug="checkout", name="Checkout")

    W.inc1 = declare("Checkout errors", services=[W.checkout])
    W.inc2 = declare("Search slow")
    monday = timezone.localdate() - timedelta(days=timezone.localdate().weekday())
    W.this_sunday = monday + timedelta(days=6)
    W.a_overdue = action_item(W.inc1, title="a overdue", owner=W.alice, due_date=days(-1), priority="high")
    W.a_week = action_item(W.inc1, title="a this week", owner=W.alice, due_date=W.this_sunday, kind="detect")
    W.b_later = action_item(W.inc2, title="b later", owner=W.bob, due_date=days(30), kind="process")
    W.nobody = action_item(W.inc2, title="nobody", priority="low")
    client.force_login(W.alice)
    W.client = client
    return W


def test_filters(world):
    c = world.client
    assert listed(c) == ["a overdue", "a this week", "b later", "nobody"]
    assert listed(c, due="overdue") == ["a overdue"]
    assert "a this week" in listed(c, due="week") and "b later" not in listed(c, due="week")
    assert listed(c, due="none") == ["nobody"]
    assert listed(c, mine="yes") == ["a overdue", "a this week"]
    assert listed(c, owner=str(world.bob.pk)) == ["b later"]
    assert listed(c, owner="none") == ["nobody"]
    assert listed(c, service="checkout") == ["a overdue", "a this week"]
    assert listed(c, priority__exact="high") == ["a overdue"]
    assert listed(c, kind__exact="process") == ["b later"]
    assert listed(c, status__exact="open") == ["a overdue", "a this week", "b later", "nobody"]
    assert listed(c, q=world.inc2.reference) == ["b later", "nobody"]
    assert listed(c, q="search slow") == ["b later", "nobody"]
    body = c.get(CHANGELIST).content.decode()
    assert "My action items" in body and "(overdue)" in body


def test_done_is_no_longer_overdue_or_mine_open(world):
    world.client.post(CHANGELIST, {"action": "mark_done", ACTION_CHECKBOX_NAME: [world.a_overdue.pk]})
    assert listed(world.client, due="overdue") == []
    assert listed(world.client, mine="open") == ["a this week"]


def test_bulk_mark_done_and_in_progress(world):
    c = world.client
    response = c.post(
        CHANGELIST, {"action": "mark_done", ACTION_CHECKBOX_NAME: [world.a_overdue.pk, world.nobody.pk]}, follow=True
    )
    assert "2 action item(s) marked done" in response.content.decode()
    assert set(ActionItem.objects.filter(status="done").values_list("pk", flat=True)) == {
        world.a_overdue.pk,
        world.nobody.pk,
    }
    assert all(i.completed_at for i in ActionItem.objects.filter(status="done"))
    c.post(CHANGELIST, {"action": "mark_in_progress", ACTION_CHECKBOX_NAME: [world.b_later.pk]})
    assert ActionItem.objects.get(pk=world.b_later.pk).status == "in_progress"
    events = TimelineEvent.objects.filter(kind="action_item", data__action="status_changed", actor=world.alice)
    assert events.count() == 3


def test_bulk_wont_do_asks_for_a_reason_first(world):
    c = world.client
    selected = {"action": "mark_wont_do", ACTION_CHECKBOX_NAME: [world.a_week.pk, world.b_later.pk]}
    response = c.post(CHANGELIST, selected)
    assert response.status_code == 200 and "say why" in response.content.decode()
    assert "a this week" in response.content.decode()
    assert not ActionItem.objects.filter(status="wont_do").exists()
    # An empty reason is refused on the same page.
    response = c.post(CHANGELIST, {**selected, "apply": "1", "reason": "  "})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert not ActionItem.objects.filter(status="wont_do").exists()
    response = c.post(CHANGELIST, {**selected, "apply": "1", "reason": "Replaced by the new queue"}, follow=True)
    assert "2 action item(s) marked won" in response.content.decode()
    assert set(ActionItem.objects.filter(status="wont_do").values_list("wont_do_reason", flat=True)) == {
        "Replaced by the new queue"
    }


def test_add_and_change_go_through_the_services(world):
    c = world.client
    data = {
        "incident": world.inc1.pk,
        "title": "Alert on checkout latency",
        "description": "",
        "owner": world.bob.pk,
        "due_date": days(5).isoformat(),
        "priority": "high",
        "kind": "detect",
        "status": "open",
        "wont_do_reason": "",
        "tracker_url": "https://tracker.example.com/OPS-3",
        "reminders-TOTAL_FORMS": 0,
        "reminders-INITIAL_FORMS": 0,
    }
    response = c.post(reverse("admin:postmortems_actionitem_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    item = ActionItem.objects.get(title="Alert on checkout latency")
    assert item.created_by == world.alice and item.owner == world.bob
    created = TimelineEvent.objects.filter(incident=world.inc1, kind="action_item").last()
    assert created.data["action"] == "created" and created.actor == world.alice

    change = reverse("admin:postmortems_actionitem_change", args=[item.pk])
    data.pop("incident")
    # Won't do without a reason: refused on the form, nothing changes.
    response = c.post(change, {**data, "status": "wont_do"})
    assert response.status_code == 200 and "wont_do_reason" in response.context["adminform"].form.errors
    response = c.post(change, {**data, "owner": world.alice.pk, "status": "done"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    item.refresh_from_db()
    assert item.owner == world.alice and item.status == "done" and item.completed_at is not None
    actions = list(
        TimelineEvent.objects.filter(incident=world.inc1, data__item=item.pk)
        .order_by("id")
        .values_list("data__action", flat=True)
    )
    assert actions == ["created", "updated", "status_changed"]
    # A non-http tracker URL is refused.
    response = c.post(change, {**data, "status": "done", "tracker_url": "ftp://x.example.com/"})
    assert response.status_code == 200 and "tracker_url" in response.context["adminform"].form.errors


def test_items_are_never_deleted(world):
    assert world.client.post(reverse("admin:postmortems_actionitem_delete", args=[world.nobody.pk])).status_code == 403
    assert "delete_selected" not in world.client.get(CHANGELIST).content.decode()


def test_restricted_incidents_items_are_hidden_from_others(world):
    secret = declare("Payroll leak Quokka", actor=world.bob, restricted=True)
    incident_services.role_assign(incident=secret, role="commander", user=world.bob, actor=world.bob)
    hidden = action_item(secret, title="Rotate payroll keys", owner=world.bob, due_date=days(-1))
    c = world.client
    assert "Rotate payroll keys" not in listed(c)
    assert "Rotate payroll keys" not in listed(c, due="overdue")
    response = c.get(reverse("admin:postmortems_actionitem_change", args=[hidden.pk]), follow=True)
    assert "doesn’t exist" in response.content.decode()
    # A bulk action naming it does nothing to it.
    c.post(CHANGELIST, {"action": "mark_done", ACTION_CHECKBOX_NAME: [hidden.pk]})
    assert ActionItem.objects.get(pk=hidden.pk).status == "open"
    # The incident cannot be chosen on the add form either.
    response = c.post(reverse("admin:postmortems_actionitem_add"), {"incident": secret.pk, "title": "x"})
    assert response.status_code == 200 and "incident" in response.context["adminform"].form.errors
    c.force_login(world.bob)
    assert "Rotate payroll keys" in listed(c)


def test_inline_on_the_review_page(world):
    c = world.client
    world.alice.is_superuser = True
    world.alice.save()
    review = Review.objects.create(incident=world.inc1)
    ActionItem.objects.filter(incident=world.inc1).update(review=review)
    url = reverse("admin:postmortems_review_change", args=[review.pk])
    response = c.get(url)
    assert response.status_code == 200
    formsets = {fs.formset.prefix: fs for fs in response.context["inline_admin_formsets"]}
    assert "action_items" in formsets
    assert {f.original.title for f in formsets["action_items"] if f.original} == {"a overdue", "a this week"}


def _form_data(response):
    """The POST a browser would send back for this change page, unchanged."""
    data = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, field in formset.management_form.fields.items():
            data[f"{formset.prefix}-{name}"] = formset.management_form.initial.get(name, field.initial)
        forms += formset.forms
    for form in forms:
        for name, field in form.fields.items():
            value = form[name].value()
            if value is None:
                continue
            if isinstance(value, list | tuple):
                data[form.add_prefix(name)] = [str(v) for v in value]
            elif isinstance(value, bool):
                if value:
                    data[form.add_prefix(name)] = "on"
            else:
                data[form.add_prefix(name)] = field.widget.format_value(value) if hasattr(value, "isoformat") else value
    return data


def test_inline_on_the_review_page_saves_through_the_services(world):
    c = world.client
    world.alice.is_superuser = True
    world.alice.save()
    review = Review.objects.create(incident=world.inc1)
    ActionItem.objects.filter(incident=world.inc1).update(review=review)
    url = reverse("admin:postmortems_review_change", args=[review.pk])
    data = _form_data(c.get(url))
    rows = {data[key]: key.rsplit("-", 1)[0] for key in data if key.startswith("action_items-") and key.endswith("-title")}
    done_row = rows["a overdue"]
    data[f"{done_row}-status"] = "done"
    # A new row added on the review page.
    n = int(data["action_items-TOTAL_FORMS"])
    data.update(
        {
            "action_items-TOTAL_FORMS": n + 1,
            f"action_items-{n}-title": "Document the failover",
            f"action_items-{n}-owner": world.bob.pk,
            f"action_items-{n}-due_date": days(7).isoformat(),
            f"action_items-{n}-priority": "medium",
            f"action_items-{n}-kind": "process",
            f"action_items-{n}-status": "open",
            f"action_items-{n}-wont_do_reason": "",
            f"action_items-{n}-tracker_url": "",
            f"action_items-{n}-review": review.pk,
        }
    )
    response = c.post(url, data)
    assert response.status_code == 302, [
        (fs.formset.prefix, fs.formset.errors, fs.formset.non_form_errors())
        for fs in response.context["inline_admin_formsets"]
    ] + [response.context["adminform"].form.errors]
    assert ActionItem.objects.get(pk=world.a_overdue.pk).status == "done"
    new = ActionItem.objects.get(title="Document the failover")
    assert (new.review, new.incident, new.owner, new.created_by) == (review, world.inc1, world.bob, world.alice)
    actions = set(
        TimelineEvent.objects.filter(incident=world.inc1, kind="action_item", actor=world.alice).values_list(
            "data__action", flat=True
        )
    )
    assert actions == {"created", "status_changed"}
