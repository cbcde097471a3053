"""/api/v1/action-items/: filters (overdue, owner, status, …), create, PATCH with status changes, visibility,
keyset pagination and a query count that does not grow with the page."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from incidents import services as incident_services
from incidents.models import TimelineEvent
from postmortems import services
from postmortems.models import ActionItem
from tests.api import api_client_for as client_for
from tests.incidents.factories import ServiceFactory, UserFactory, declare
from tests.postmortems.factories import action_item

pytestmark = pytest.mark.django_db
LIST = "/api/v1/action-items/"


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    cache.clear()


def days(n):
    return timezone.localdate() + timedelta(days=n)


def titles(response):
    assert response.status_code == 200, response.content
    return sorted(item["title"] for item in response.json()["results"])


@pytest.fixture
def world(db):
    class W:
        alice = UserFactory(username="alice", groups=["Responders"])
        bob = UserFactory(username="bob", groups=["Responders"])
        checkout = ServiceFactory(slug="checkout")
        search = ServiceFactory(slug="search")

    W.inc1 = declare("Checkout errors", services=[W.checkout])
    W.inc2 = declare("Search slow", services=[W.search])
    a = W.alice
    W.items = {
        "alice overdue": action_item(W.inc1, title="alice overdue", owner=a, due_date=days(-2), priority="high"),
        "alice soon": action_item(W.inc1, title="alice soon", owner=a, due_date=days(2), kind="detect"),
        "alice done late": action_item(W.inc2, title="alice done late", owner=a, due_date=days(-5)),
        "bob overdue": action_item(W.inc2, title="bob overdue", owner=W.bob, due_date=days(-1), kind="process"),
        "nobody's": action_item(W.inc2, title="nobody's", priority="low"),
    }
    services.action_item_status_set(item=W.items["alice done late"], status="done", actor=a)
    W.api = client_for(W.alice)
    return W


def test_overdue_items_of_one_owner(world):
    assert titles(world.api.get(LIST, {"overdue": "true", "owner": "alice"})) == ["alice overdue"]
    assert titles(world.api.get(LIST, {"overdue": "true"})) == ["alice overdue", "bob overdue"]
    assert titles(world.api.get(LIST, {"overdue": "false", "owner": "alice"})) == ["alice done late", "alice soon"]


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"status": "done"}, ["alice done late"]),
        ({"status": "open,in_progress", "owner": "bob"}, ["bob overdue"]),
        ({"priority": "high,low"}, ["alice overdue", "nobody's"]),
        ({"kind": "detect"}, ["alice soon"]),
        ({"service": "checkout"}, ["alice overdue", "alice soon"]),
        ({"owner": "alice,bob", "due_before": "x"}, None),
        ({"due_before": days(-2).isoformat()}, ["alice done late", "alice overdue"]),
        ({"due_after": days(0).isoformat()}, ["alice soon"]),
        ({"search": "NOBODY"}, ["nobody's"]),
        ({"overdue": "maybe"}, None),
        ({"status": "finished"}, None),
        ({"incident": "INC-nope"}, None),
    ],
)
def test_filters(world, query, expected):
    response = world.api.get(LIST, query)
    if expected is None:
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    else:
        assert titles(response) == expected


def test_incident_filter(world):
    assert titles(world.api.get(LIST, {"incident": world.inc1.reference})) == ["alice overdue", "alice soon"]
    assert titles(world.api.get(LIST, {"incident": f"{world.inc1.number}"})) == ["alice overdue", "alice soon"]


def test_item_json(world):
    item = world.items["alice overdue"]
    data = world.api.get(f"{LIST}{item.pk}/").json()
    assert data["incident"] == world.inc1.reference and data["owner"] == "alice"
    assert data["is_overdue"] is True and data["status"] == "open" and data["completed_at"] is None
    assert data["url"].endswith(f"{LIST}{item.pk}/") and data["due_date"] == days(-2).isoformat()


def test_create(world):
    response = world.api.post(
        LIST,
        {
            "incident": world.inc1.reference,
            "title": "Canary the config push",
            "owner": "bob",
            "due_date": days(14).isoformat(),
            "priority": "high",
            "kind": "prevent",
            "tracker_url": "https://tracker.example.com/OPS-7",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert response["Location"] == data["url"]
    item = ActionItem.objects.get(pk=data["id"])
    assert (item.incident, item.owner, item.priority, item.created_by) == (
        world.inc1,
        world.bob,
        "high",
        world.alice,
    )
    event = TimelineEvent.objects.filter(incident=world.inc1, kind="action_item").last()
    assert event.data["action"] == "created" and event.actor == world.alice


@pytest.mark.parametrize(
    "body,field",
    [
        ({"title": "x", "incident": "INC-999999"}, "incident"),
        ({"title": "x", "incident": "REF", "tracker_url": "ftp://x.example.com/"}, "tracker_url"),
        ({"title": "x", "incident": "REF", "owner": "ghost"}, "owner"),
        ({"title": "", "incident": "REF"}, "title"),
    ],
)
def test_create_refuses_bad_input(world, body, field):
    body = {k: (world.inc1.reference if v == "REF" else v) for k, v in body.items()}
    response = world.api.post(LIST, body, format="json")
    assert response.status_code == 400 and field in response.json()["error"]["fields"], response.content
    assert not ActionItem.objects.filter(title="x").exists()


def test_patch_fields_and_status(world):
    item = world.items["alice soon"]
    url = f"{LIST}{item.pk}/"
    response = world.api.patch(url, {"owner": "bob", "status": "in_progress"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["owner"] == "bob" and response.json()["status"] == "in_progress"
    # Won't do needs a reason.
    response = world.api.patch(url, {"status": "wont_do"}, format="json")
    assert response.status_code == 400 and "won't be done" in response.json()["error"]["message"]
    response = world.api.patch(url, {"status": "wont_do", "wont_do_reason": "Covered by OPS-9"}, format="json")
    data = response.json()
    assert data["status"] == "wont_do" and data["wont_do_reason"] == "Covered by OPS-9" and data["completed_at"]
    # Reopen clears completion.
    data = world.api.patch(url, {"status": "open"}, format="json").json()
    assert data["status"] == "open" and data["completed_at"] is None and data["wont_do_reason"] == ""
    actions = list(
        TimelineEvent.objects.filter(incident=item.incident, kind="action_item", data__item=item.pk)
        .order_by("id")
        .values_list("data__action", flat=True)
    )
    assert actions == ["created", "updated", "status_changed", "status_changed", "status_changed"]


def test_permissions_mirror_the_admin(world):
    viewer = client_for(UserFactory(username="vic", groups=["Viewers"]))
    item = world.items["alice soon"]
    assert viewer.get(LIST).status_code == 200
    assert viewer.patch(f"{LIST}{item.pk}/", {"status": "done"}, format="json").status_code == 403
    assert viewer.post(LIST, {"title": "x", "incident": world.inc1.reference}, format="json").status_code == 403
    assert APIClient().get(LIST).status_code == 401
    assert world.api.delete(f"{LIST}{item.pk}/").status_code in (403, 405)  # never deleted: won't do instead
    assert ActionItem.objects.filter(pk=item.pk).exists()


def test_restricted_incidents_items_are_404_and_left_out(world):
    secret = declare("Payroll leak", actor=world.bob, restricted=True)
    incident_services.role_assign(incident=secret, role="commander", user=world.bob, actor=world.bob)
    hidden = action_item(secret, title="Rotate payroll keys", owner=world.bob)
    assert "Rotate payroll keys" not in titles(world.api.get(LIST))
    assert world.api.get(f"{LIST}{hidden.pk}/").status_code == 404
    assert world.api.patch(f"{LIST}{hidden.pk}/", {"status": "done"}, format="json").status_code == 404
    response = world.api.post(LIST, {"title": "x", "incident": secret.reference}, format="json")
    assert response.status_code == 400 and "There is no incident" in response.content.decode()
    assert ActionItem.objects.get(pk=hidden.pk).status == "open"
    bob = client_for(world.bob)
    assert "Rotate payroll keys" in titles(bob.get(LIST))


def test_keyset_pages_walk_every_item_once(world):
    seen, url = [], f"{LIST}?page_size=2"
    while url:
        page = world.api.get(url).json()
        seen += [item["id"] for item in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(i.pk for i in world.items.values()) and len(seen) == len(set(seen))


def count_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(queries), len(response.json()["results"])


@pytest.mark.parametrize("query", ["", "overdue=true&owner=alice", "service=checkout&status=open"])
def test_same_queries_at_page_size_1_and_100(world, query):
    for n in range(30):
        action_item(world.inc1, title=f"more {n}", owner=world.alice if n % 2 else world.bob, due_date=days(-n))
    world.api.get(LIST)  # the key's first use writes last_used_at once
    small, one = count_queries(world.api, f"{LIST}?page_size=1&{query}")
    large, many = count_queries(world.api, f"{LIST}?page_size=100&{query}")
    assert one == 1 and many > 10
    assert small == large <= 4  # key, the user's permissions (2), the page
