"""Outbound webhooks in the admin and the API: who may set what, the delivery log, visibility."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.urls import reverse

from comms import webhooks
from comms.models import WebhookDelivery, WebhookEndpoint
from tests.api import api_client_for as api
from tests.comms.factories import WebhookEndpointFactory
from tests.incidents.factories import UserFactory, declare

pytestmark = pytest.mark.django_db

ALL_EVENTS = list(WebhookEndpoint.Event.values)
ENDPOINT_PERMS = ["view_webhookendpoint", "add_webhookendpoint", "change_webhookendpoint", "delete_webhookendpoint"]


@pytest.fixture(autouse=True)
def no_throttling(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    cache.clear()


@pytest.fixture(autouse=True)
def enqueued(monkeypatch):
    calls = []
    monkeypatch.setattr(webhooks, "_enqueue", lambda ids, countdown=None: calls.append(list(ids)))
    return calls


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch):
    table = {"hooks.example.com": ["93.184.216.34"], "intranet.example.com": ["10.20.30.40"]}

    def resolve(host, port):
        if host not in table:
            raise OSError(f"unknown host {host}")
        return tuple(table[host])

    monkeypatch.setattr(webhooks, "host_resolve", resolve)
    return table


@pytest.fixture
def superuser():
    return UserFactory(username="root", is_superuser=True)


@pytest.fixture
def manager():
    """Staff given the endpoint permissions (no group has them), but not the private-destination one."""
    user = UserFactory(username="mia", groups=["Communications"])
    perms = Permission.objects.filter(
        content_type__app_label="comms", codename__in=[*ENDPOINT_PERMS, "view_webhookdelivery"]
    )
    user.user_permissions.add(*perms)
    return user


# ---- who may manage endpoints ---------------------------------------------------------------------------


def test_no_group_may_manage_endpoints_by_default(responder, viewer):
    comms_user = UserFactory(username="cara", groups=["Communications"])
    for user in (responder, viewer, comms_user):
        assert not any(user.has_perm(f"comms.{p}") for p in ENDPOINT_PERMS)
        assert not user.has_perm(webhooks.ALLOW_PRIVATE_PERMISSION)
        assert api(user).get("/api/v1/webhook-endpoints/").status_code == 403


def test_only_an_administrator_may_allow_private_destinations_through_the_service(superuser, manager):
    with pytest.raises(Exception) as refused:
        webhooks.webhook_endpoint_create(
            actor=manager, url="http://10.20.30.40/hook", events=ALL_EVENTS, allow_private_destination=True
        )
    assert "allow_private_destination" in refused.value.message_dict
    with pytest.raises(Exception) as refused:
        webhooks.webhook_endpoint_create(actor=manager, url="http://intranet.example.com/hook", events=ALL_EVENTS)
    assert "10.20.30.40" in refused.value.message_dict["url"][0]

    endpoint = webhooks.webhook_endpoint_create(
        actor=superuser, url="http://intranet.example.com/hook", events=ALL_EVENTS, allow_private_destination=True
    )
    # The manager may rename it, but not use the administrator's allowance to point it elsewhere inside.
    webhooks.webhook_endpoint_update(endpoint=endpoint, actor=manager, description="Intranet bridge")
    with pytest.raises(Exception) as refused:
        webhooks.webhook_endpoint_update(endpoint=endpoint, actor=manager, url="http://169.254.169.254/latest/")
    assert "url" in refused.value.message_dict
    # A dedicated permission makes someone an administrator for this.
    manager.user_permissions.add(Permission.objects.get(codename="allow_private_webhook_destination"))
    manager = type(manager).objects.get(pk=manager.pk)
    webhooks.webhook_endpoint_update(endpoint=endpoint, actor=manager, url="http://169.254.169.254/latest/")


# ---- admin ----------------------------------------------------------------------------------------------


def endpoint_form(**overrides):
    data = {
        "url": "https://hooks.example.com/in",
        "description": "Pager bridge",
        "events": ALL_EVENTS,
        "is_active": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_admin_superuser_adds_an_endpoint_to_a_private_destination(client, superuser):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:comms_webhookendpoint_add"),
        endpoint_form(url="http://intranet.example.com/in", allow_private_destination="on"),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.allow_private_destination and endpoint.events == ALL_EVENTS
    page = client.get(reverse("admin:comms_webhookendpoint_change", args=[endpoint.pk])).content.decode()
    assert endpoint.secret in page  # shown for setting up the receiver


def test_admin_refuses_private_destinations_and_hides_the_flag_from_non_administrators(client, manager):
    client.force_login(manager)
    add = reverse("admin:comms_webhookendpoint_add")
    page = client.get(add)
    assert "allow_private_destination" not in page.context["adminform"].form.fields
    response = client.post(add, endpoint_form(url="http://127.0.0.1:9000/in", allow_private_destination="on"))
    assert response.status_code == 200
    assert "loopback" in str(response.context["adminform"].form.errors["url"])
    # The flag is not a field for them: posting it does nothing.
    response = client.post(add, endpoint_form(allow_private_destination="on", include_restricted="on"))
    assert response.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert not endpoint.allow_private_destination and not endpoint.include_restricted


def test_admin_needs_at_least_one_event(client, superuser):
    client.force_login(superuser)
    response = client.post(reverse("admin:comms_webhookendpoint_add"), endpoint_form(events=[]))
    assert response.status_code == 200 and "events" in response.context["adminform"].form.errors


def test_admin_send_test_event_and_delivery_log(client, superuser, enqueued, django_capture_on_commit_callbacks):
    endpoint = WebhookEndpointFactory()
    client.force_login(superuser)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:comms_webhookendpoint_changelist"),
            {"action": "send_test_event", "_selected_action": [endpoint.pk]},
            follow=True,
        )
    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.event_type == "webhook.test" and enqueued == [[delivery.pk]]
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state="failed", attempts=1, response_status_code=410, error="HTTP 410: the receiver refused it; not retried."
    )
    log = client.get(reverse("admin:comms_webhookdelivery_changelist")).content.decode()
    assert "410" in log and "the receiver refused it" in log
    page = client.get(reverse("admin:comms_webhookendpoint_change", args=[endpoint.pk])).content.decode()
    assert "webhook.test" in page and "410" in page
    detail = client.get(reverse("admin:comms_webhookdelivery_change", args=[delivery.pk])).content.decode()
    assert "A test event" in detail  # the body sent
    # Retry puts it back in the queue from the start.
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:comms_webhookdelivery_changelist"), {"action": "retry", "_selected_action": [delivery.pk]}
        )
    delivery.refresh_from_db()
    assert delivery.state == "pending" and delivery.attempts == 0 and enqueued[-1] == [delivery.pk]


def test_delivery_log_hides_restricted_incidents(client, manager, django_capture_on_commit_callbacks, superuser):
    endpoint = WebhookEndpointFactory(include_restricted=True)
    with django_capture_on_commit_callbacks(execute=True):
        secret = declare("Payroll Quokka leak", restricted=True)
        declare("Search slow")
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 2
    client.force_login(manager)
    log = client.get(reverse("admin:comms_webhookdelivery_changelist")).content.decode()
    assert "Search slow" in log and "Quokka" not in log and secret.reference not in log
    hidden = WebhookDelivery.objects.get(incident=secret)
    response = client.get(reverse("admin:comms_webhookdelivery_change", args=[hidden.pk]), follow=True)
    assert "Quokka" not in response.content.decode()
    listed = api(manager).get("/api/v1/webhook-deliveries/").json()["results"]
    assert [d["incident"] for d in listed] == [
        WebhookDelivery.objects.exclude(incident=secret).get().incident.reference
    ]
    assert "Quokka" not in json.dumps(listed)
    assert len(api(superuser).get("/api/v1/webhook-deliveries/").json()["results"]) == 2


# ---- API --------------------------------------------------------------------------------------------------


def test_api_create_list_edit_delete(manager):
    client = api(manager)
    response = client.post(
        "/api/v1/webhook-endpoints/",
        {"url": "https://hooks.example.com/in", "events": ["incident.created", "incident.status_changed"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["secret"].startswith("whsec_") and created["allow_private_destination"] is False
    listed = client.get("/api/v1/webhook-endpoints/").json()["results"]
    assert [e["id"] for e in listed] == [created["id"]]
    response = client.patch(
        f"/api/v1/webhook-endpoints/{created['id']}/",
        {"is_active": False, "events": ["update.published"]},
        format="json",
    )
    assert response.status_code == 200 and response.json()["events"] == ["update.published"]
    assert client.get("/api/v1/webhook-endpoints/", {"is_active": "true"}).json()["results"] == []
    assert client.delete(f"/api/v1/webhook-endpoints/{created['id']}/").status_code == 204
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/in",
        "http://169.254.169.254/latest/",
        "http://10.0.0.1/in",
        "http://[::1]/in",
        "http://localhost/in",
    ],
)
def test_api_refuses_non_public_destinations(superuser, url):
    response = api(superuser).post("/api/v1/webhook-endpoints/", {"url": url, "events": ALL_EVENTS}, format="json")
    assert response.status_code == 400
    assert "url" in response.json()["error"]["fields"]
    assert not WebhookEndpoint.objects.exists()


def test_api_only_administrators_may_allow_private_destinations(manager, superuser):
    body = {"url": "http://10.0.0.1/in", "events": ALL_EVENTS, "allow_private_destination": True}
    response = api(manager).post("/api/v1/webhook-endpoints/", body, format="json")
    assert response.status_code == 400
    assert "allow_private_destination" in response.json()["error"]["fields"]
    response = api(superuser).post("/api/v1/webhook-endpoints/", body, format="json")
    assert response.status_code == 201 and response.json()["allow_private_destination"] is True
    endpoint_id = response.json()["id"]
    # Turning it on again for another endpoint, or including restricted incidents: the same rule.
    other = WebhookEndpointFactory()
    for field in ("allow_private_destination", "include_restricted"):
        response = api(manager).patch(f"/api/v1/webhook-endpoints/{other.pk}/", {field: True}, format="json")
        assert response.status_code == 400 and field in response.json()["error"]["fields"]
    assert (
        api(manager)
        .patch(f"/api/v1/webhook-endpoints/{endpoint_id}/", {"description": "ok"}, format="json")
        .status_code
        == 200
    )


def test_api_rejects_unknown_events(manager):
    response = api(manager).post(
        "/api/v1/webhook-endpoints/",
        {"url": "https://hooks.example.com/in", "events": ["incident.exploded"]},
        format="json",
    )
    assert response.status_code == 400 and "events" in response.json()["error"]["fields"]


@pytest.mark.parametrize("path", ["/api/v1/webhook-endpoints/", "/api/v1/webhook-deliveries/"])
def test_api_lists_run_the_same_queries_at_any_page_size(manager, path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        endpoint = WebhookEndpointFactory()
        for _ in range(2):
            webhooks.webhook_test_send(endpoint=endpoint)
    incident = declare("Listed")
    WebhookDelivery.objects.update(incident=incident)
    client = api(manager)
    client.get(path)  # the key's first use is recorded once
    counts = []
    for size in (1, 100):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path, {"page_size": size})
        assert response.status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_api_delivery_log_shows_the_body_sent_and_filters(manager, enqueued):
    endpoint = WebhookEndpointFactory()
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    other = webhooks.webhook_test_send(endpoint=WebhookEndpointFactory())
    client = api(manager)
    [row] = client.get("/api/v1/webhook-deliveries/", {"endpoint": endpoint.pk}).json()["results"]
    assert row["id"] == delivery.pk and row["payload"]["type"] == "webhook.test" and row["state"] == "pending"
    assert row["event_id"] == delivery.event_id and other.pk != delivery.pk
    assert client.get("/api/v1/webhook-deliveries/", {"state": "delivered"}).json()["results"] == []
    assert client.get("/api/v1/webhook-deliveries/", {"state": "exploded"}).status_code == 400
    assert client.get("/api/v1/webhook-deliveries/", {"endpoint": "99999999999999999999999"}).status_code == 400
