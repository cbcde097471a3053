"""Subscribers: the public double opt-in form, one-click unsubscribe, the admin and the API."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext

from comms import services
from comms.models import Subscriber
from tests.api import api_client_for
from tests.comms.factories import SubscriberFactory
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory

pytestmark = pytest.mark.django_db


def link_in(message, name):
    match = re.search(rf"http://\S+/subscribe/{name}/[^/\s]+/", message.body)
    assert match, message.body
    return match[0].split("http://127.0.0.1:8000", 1)[1]


def test_public_subscription_is_double_opt_in(client, django_capture_on_commit_callbacks):
    checkout = ServiceFactory(slug="checkout", name="Checkout", is_public=True)
    ServiceFactory(slug="internal-db", name="Internal DB", is_public=False)
    sev2 = SeverityFactory(level=2)
    form = client.get("/subscribe/")
    assert form.status_code == 200 and "Checkout" in form.content.decode()
    assert "Internal DB" not in form.content.decode()  # only public services are offered
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            "/subscribe/", {"email": "Ana@Example.com", "services": [checkout.pk], "min_severity": sev2.pk}
        )
    assert answer.status_code == 200 and "Check your inbox" in answer.content.decode()
    subscriber = Subscriber.objects.get()
    assert subscriber.email == "ana@example.com" and subscriber.source == "public"
    assert not subscriber.is_active  # unconfirmed: it gets nothing yet
    assert services.subscriber_list_for(services=[checkout]).count() == 0
    assert [m.to for m in mail.outbox] == [["ana@example.com"]]
    confirm = link_in(mail.outbox[0], "confirm")
    # Following the link (or a mail scanner fetching it) changes nothing: the button does.
    assert client.get(confirm).status_code == 200
    assert not Subscriber.objects.get().is_active
    done = Client().post(confirm)
    assert done.status_code == 200 and "You are subscribed" in done.content.decode()
    subscriber.refresh_from_db()
    assert subscriber.is_active and list(subscriber.services.all()) == [checkout] and subscriber.min_severity == sev2
    assert list(services.subscriber_list_for(services=[checkout], severity=SeverityFactory(level=1))) == [subscriber]
    assert list(services.subscriber_list_for(services=[checkout], severity=SeverityFactory(level=3))) == []
    assert Client().post(confirm).status_code == 200  # repeating is harmless
    # Subscribing again while confirmed sends nothing and answers the same.
    with django_capture_on_commit_callbacks(execute=True):
        again = client.post("/subscribe/", {"email": "ana@example.com"})
    assert "Check your inbox" in again.content.decode() and len(mail.outbox) == 1


def test_only_the_latest_confirmation_link_works(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/subscribe/", {"email": "ana@example.com"})
    # A new link goes out only after the resend window (issue 11: at most one per address per 10 minutes).
    Subscriber.objects.update(confirmation_sent_at=F("confirmation_sent_at") - timedelta(minutes=11))
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/subscribe/", {"email": "ana@example.com"})
    first, second = (link_in(m, "confirm") for m in mail.outbox)
    refused = client.post(first)
    assert refused.status_code == 400 and "newer confirmation link" in refused.content.decode()
    assert client.post(second).status_code == 200
    assert Subscriber.objects.get().is_active
    assert client.post("/subscribe/confirm/forged-token/").status_code == 400


def test_invalid_form_is_answered_with_the_errors(client):
    answer = client.post("/subscribe/", {"email": "not-an-address"})
    assert answer.status_code == 400 and "Enter a valid email address" in answer.content.decode()
    assert not Subscriber.objects.exists()


def test_one_click_unsubscribe_works_without_login_or_csrf():
    subscriber = SubscriberFactory(email="ana@example.com")
    path = services.subscriber_unsubscribe_url(subscriber).split("http://127.0.0.1:8000", 1)[1]
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(path)
    assert page.status_code == 200 and "Stop sending status updates" in page.content.decode()
    assert Subscriber.objects.get().is_active  # a GET never unsubscribes
    # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click to the List-Unsubscribe URL.
    answer = browser.post(path, {"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert not Subscriber.objects.get().is_active
    assert browser.post(path).status_code == 200  # again: still unsubscribed, no error
    tampered = path[:-3] + "xx/"
    assert browser.post(tampered).status_code == 400


def test_staff_add_a_confirmed_subscriber_in_the_admin(client):
    writer = UserFactory(username="erin", groups=["Communications"])
    checkout = ServiceFactory(slug="checkout")
    client.force_login(writer)
    answer = client.post(
        "/admin/comms/subscriber/add/",
        {"channel": "email", "email": "CTO@Customer.example", "url": "", "services": [checkout.pk], "active": "on"},
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    subscriber = Subscriber.objects.get()
    assert subscriber.email == "cto@customer.example" and subscriber.is_active and subscriber.source == "staff"
    assert list(subscriber.services.all()) == [checkout]
    listing = client.get("/admin/comms/subscriber/", {"state": "active", "channel__exact": "email"})
    assert "cto@customer.example" in listing.content.decode()
    # A webhook subscriber needs a URL.
    answer = client.post("/admin/comms/subscriber/add/", {"channel": "webhook", "email": "", "url": ""})
    assert answer.status_code == 200 and "needs a URL" in answer.content.decode()


def test_viewers_cannot_see_subscribers(client):
    client.force_login(UserFactory(username="victor", groups=["Viewers"]))
    assert client.get("/admin/comms/subscriber/").status_code == 403


# ---- API ----


def api(user):
    return api_client_for(user, name="test")


@pytest.fixture
def writer(db):
    return UserFactory(username="erin", groups=["Communications"])


def test_api_create_edit_unsubscribe_and_delete(writer):
    ServiceFactory(slug="checkout")
    SeverityFactory(level=2)
    client = api(writer)
    created = client.post(
        "/api/v1/subscribers/",
        {"channel": "slack", "endpoint": "https://hooks.slack.example/T1", "services": ["checkout"], "min_severity": 2},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["active"] and body["source"] == "api" and body["services"] == ["checkout"] and body["min_severity"] == 2
    url = f"/api/v1/subscribers/{body['id']}/"
    duplicate = client.post("/api/v1/subscribers/", {"channel": "slack", "endpoint": "https://hooks.slack.example/T1"})
    assert duplicate.status_code == 400 and "already subscribed" in duplicate.json()["error"]["message"]
    edited = client.patch(url, {"active": False, "services": []}, format="json")
    assert edited.status_code == 200 and not edited.json()["active"] and edited.json()["services"] == []
    assert client.get("/api/v1/subscribers/", {"active": "false"}).json()["results"][0]["id"] == body["id"]
    bad = client.post("/api/v1/subscribers/", {"channel": "webhook", "endpoint": "ftp://x.example/"}, format="json")
    assert bad.status_code == 400
    assert client.delete(url).status_code == 204
    assert not Subscriber.objects.exists()


def test_api_needs_the_subscriber_permissions(writer):
    viewer = UserFactory(username="victor", groups=["Viewers"])
    assert api(viewer).get("/api/v1/subscribers/").status_code == 403
    assert api(writer).get("/api/v1/subscribers/").status_code == 200


def test_api_list_costs_the_same_queries_at_page_size_1_and_100(writer):
    services_ = [ServiceFactory(slug=f"s{n}") for n in range(3)]
    sev = SeverityFactory(level=2)
    for n in range(30):
        SubscriberFactory(email=f"p{n}@example.com", services=services_[: n % 3], min_severity=sev if n % 2 else None)
    client = api(writer)
    client.get("/api/v1/subscribers/")  # the key's first use is recorded once
    counts = []
    for size in (1, 100):
        with CaptureQueriesContext(connection) as queries:
            answer = client.get("/api/v1/subscribers/", {"page_size": size})
        assert answer.status_code == 200 and len(answer.json()["results"]) == min(size, 30)
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
