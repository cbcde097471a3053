"""Outbound webhooks: events from committed changes, Standard Webhooks signatures, retries, the SSRF guard."""

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from comms import webhooks
from comms.models import WebhookDelivery, WebhookEndpoint
from incidents import services
from incidents.models import TimelineEvent
from tests.comms.factories import WebhookEndpointFactory
from tests.comms.webhook_receiver import start_receiver, verify
from tests.incidents.factories import UserFactory, declare

pytestmark = pytest.mark.django_db

State = WebhookDelivery.State
Kind = TimelineEvent.Kind
ALL_EVENTS = list(WebhookEndpoint.Event.values)


@pytest.fixture
def enqueued(monkeypatch):
    """Delivery ids handed to Celery (recorded instead of sent to a broker)."""
    calls = []
    monkeypatch.setattr(webhooks, "_enqueue", lambda ids, countdown=None: calls.append((list(ids), countdown)))
    return calls


@pytest.fixture
def receiver():
    r = start_receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def fake_dns(monkeypatch):
    """Host names resolve to what the test says (any other name does not resolve)."""
    table = {}

    def resolve(host, port):
        if host not in table:
            raise OSError(f"unknown host {host}")
        return tuple(table[host])

    monkeypatch.setattr(webhooks, "host_resolve", resolve)
    return table


def committed(django_capture_on_commit_callbacks, change):
    """Run a change and what its commit triggers (the timeline signal, then enqueueing)."""
    with django_capture_on_commit_callbacks(execute=True):
        return change()


def local_endpoint(receiver, **kwargs):
    return WebhookEndpointFactory(url=receiver.url, allow_private_destination=True, **kwargs)


# ---- signing ----------------------------------------------------------------------------------------


def test_signature_matches_the_standard_webhooks_test_vector():
    # The vector published with the Standard Webhooks reference libraries.
    signature = webhooks.webhook_signature(
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_new_endpoint_gets_a_fresh_standard_webhooks_secret():
    a, b = WebhookEndpointFactory(), WebhookEndpointFactory()
    assert a.secret.startswith("whsec_") and a.secret != b.secret
    import base64

    assert len(base64.b64decode(a.secret.removeprefix("whsec_"))) == 32


# ---- events from committed changes ------------------------------------------------------------------


def bodies(endpoint):
    return [json.loads(d.body) for d in WebhookDelivery.objects.filter(endpoint=endpoint).order_by("id")]


def test_each_kind_of_change_becomes_its_event(django_capture_on_commit_callbacks, enqueued, sev2):
    endpoint = WebhookEndpointFactory(events=ALL_EVENTS)
    status_only = WebhookEndpointFactory(events=["incident.status_changed"])
    alice = UserFactory(username="alice")

    incident = committed(
        django_capture_on_commit_callbacks, lambda: declare("Checkout down", severity=sev2, actor=alice)
    )
    committed(
        django_capture_on_commit_callbacks,
        lambda: services.incident_transition(incident=incident, to="responding", actor=alice),
    )
    committed(
        django_capture_on_commit_callbacks,
        lambda: services.timeline_note_add(incident=incident, actor=alice, body="Rolled back the deploy"),
    )

    def record(kind, data):
        with transaction.atomic():
            services.timeline_event_record(incident=incident, kind=kind, data=data)

    committed(django_capture_on_commit_callbacks, lambda: record(Kind.REVIEW, {"action": "published"}))
    committed(django_capture_on_commit_callbacks, lambda: record(Kind.REVIEW, {"action": "submitted"}))
    committed(django_capture_on_commit_callbacks, lambda: record(Kind.UPDATE_PUBLISHED, {"update_id": 999}))

    sent = bodies(endpoint)
    assert [b["type"] for b in sent] == [
        "incident.created",
        "incident.status_changed",
        "incident.updated",
        "review.published",
        "incident.updated",
        "update.published",
    ]
    created, moved = sent[0], sent[1]
    snapshot = created["data"]["incident"]
    assert snapshot["reference"] == incident.reference and snapshot["title"] == "Checkout down"
    assert snapshot["severity"] == "SEV2" and snapshot["status"] == "detected"
    assert snapshot["url"].endswith(f"/admin/incidents/incident/{incident.pk}/change/")
    assert moved["data"]["from"] == "detected" and moved["data"]["to"] == "responding"
    assert moved["data"]["incident"]["status"] == "responding"
    assert sent[2]["data"]["timeline_event"]["body"] == "Rolled back the deploy"
    # An endpoint hears only what it subscribed to.
    assert [b["type"] for b in bodies(status_only)] == ["incident.status_changed"]
    # Each delivery went to Celery once its rows were committed.
    assert sorted(i for ids, _countdown in enqueued for i in ids) == sorted(
        WebhookDelivery.objects.values_list("pk", flat=True)
    )


def test_the_same_event_id_for_every_endpoint_and_no_duplicates_when_emitted_twice(
    django_capture_on_commit_callbacks, enqueued
):
    first, second = WebhookEndpointFactory(), WebhookEndpointFactory()
    incident = committed(django_capture_on_commit_callbacks, lambda: declare("Search slow"))
    event = TimelineEvent.objects.get(incident=incident, kind=Kind.DECLARED)
    assert webhooks.webhook_events_emit(event_id=event.pk) == []  # the signal is delivered twice: nothing new
    deliveries = WebhookDelivery.objects.filter(incident=incident)
    assert {d.endpoint_id for d in deliveries} == {first.pk, second.pk}
    assert len({d.event_id for d in deliveries}) == 1


def test_nothing_is_sent_for_a_rolled_back_change(django_capture_on_commit_callbacks, enqueued):
    WebhookEndpointFactory()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                declare("Never happened")
                raise RuntimeError("rolled back")
    assert callbacks == []
    assert not WebhookDelivery.objects.exists() and enqueued == []


def test_inactive_endpoints_get_nothing(django_capture_on_commit_callbacks, enqueued):
    WebhookEndpointFactory(is_active=False)
    committed(django_capture_on_commit_callbacks, lambda: declare("Quiet"))
    assert not WebhookDelivery.objects.exists()


def test_restricted_incidents_are_sent_only_where_included(django_capture_on_commit_callbacks, enqueued):
    plain = WebhookEndpointFactory()
    trusted = WebhookEndpointFactory(include_restricted=True)
    secret = committed(django_capture_on_commit_callbacks, lambda: declare("Payroll leak", restricted=True))
    assert not WebhookDelivery.objects.filter(endpoint=plain).exists()
    [body] = bodies(trusted)
    assert body["data"]["incident"]["title"] == "Payroll leak" and body["data"]["incident"]["restricted"] is True

    # An unrestricted incident linked to it: the link and the reference are left out for `plain`.
    open_one = committed(django_capture_on_commit_callbacks, lambda: declare("Payroll again", recurrence_of=secret))
    [plain_body] = bodies(plain)
    assert plain_body["data"]["incident"]["recurrence_of"] is None
    assert plain_body["data"]["timeline_event"]["data"]["recurrence_of"] is None
    assert secret.reference not in json.dumps(plain_body)
    trusted_body = bodies(trusted)[-1]
    assert trusted_body["data"]["incident"]["recurrence_of"] == secret.reference
    assert WebhookDelivery.objects.filter(incident=open_one).count() == 2


def test_a_failing_receiver_never_breaks_the_change(django_capture_on_commit_callbacks, monkeypatch):
    WebhookEndpointFactory()

    def broken(**kwargs):
        raise RuntimeError("webhooks are broken")

    monkeypatch.setattr(webhooks, "webhook_events_emit", broken)
    incident = committed(django_capture_on_commit_callbacks, lambda: declare("Still declared"))
    assert TimelineEvent.objects.filter(incident=incident).exists()


# ---- sending ----------------------------------------------------------------------------------------


def test_a_delivery_is_posted_signed_to_the_receiver(django_capture_on_commit_callbacks, enqueued, receiver):
    endpoint = local_endpoint(receiver)
    incident = committed(django_capture_on_commit_callbacks, lambda: declare("Checkout down"))
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)

    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)

    assert result.state == State.DELIVERED
    [request] = receiver.requests
    assert request.path == "/hooks/incidents?src=test"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == delivery.event_id
    assert abs(int(request.headers["webhook-timestamp"]) - timezone.now().timestamp()) < 60
    assert verify(endpoint.secret, request.headers, request.body)
    assert not verify(WebhookEndpointFactory().secret, request.headers, request.body)
    assert request.body == delivery.body.encode()  # the row keeps the exact bytes sent
    assert json.loads(request.body)["data"]["incident"]["reference"] == incident.reference
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.response_status_code) == (State.DELIVERED, 1, 200)
    assert delivery.response_body == "answer 200 from the receiver" and delivery.delivered_at is not None
    # A duplicate message (redelivered by the broker) sends nothing.
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk) is None
    assert len(receiver.requests) == 1


def test_server_errors_are_retried_with_backoff_then_delivered(
    django_capture_on_commit_callbacks, enqueued, receiver, settings
):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    endpoint = local_endpoint(receiver)
    receiver.script = [500, 503]
    delivery = webhooks.webhook_test_send(endpoint=endpoint)

    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        first = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert first.state == State.PENDING and first.response_status_code == 500 and first.error == "HTTP 500."
    assert timedelta(seconds=29) < first.next_attempt_at - before < timedelta(seconds=35)
    assert enqueued[-1] == ([delivery.pk], 30)  # retried by a countdown message
    # Not due yet: a message arriving early does nothing.
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk) is None

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    second = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert second.state == State.PENDING and second.attempts == 2
    assert second.next_attempt_at - timezone.now() > timedelta(seconds=110)  # 4 × 30 s
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    third = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert third.state == State.DELIVERED and third.attempts == 3 and third.error == ""
    assert len(receiver.requests) == 3
    # Same message id every time; a fresh timestamp and signature each attempt, all valid.
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert all(verify(endpoint.secret, r.headers, r.body) for r in receiver.requests)


def test_it_gives_up_after_the_last_attempt(enqueued, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    endpoint = local_endpoint(receiver)
    receiver.default = 502
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    for _attempt in range(3):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.FAILED and result.attempts == 3
    assert "Gave up after 3 attempts" in result.error and result.next_attempt_at is None
    # A long backoff is left to the beat sweep instead of a long countdown.
    assert webhooks.retry_delay(5) > webhooks.MAX_COUNTDOWN_SECONDS


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_client_errors_fail_at_once(enqueued, receiver, status):
    endpoint = local_endpoint(receiver)
    receiver.script = [status]
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.FAILED and result.attempts == 1 and result.response_status_code == status
    assert "not retried" in result.error and result.response_body == f"answer {status} from the receiver"
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk) is None


@pytest.mark.parametrize("status", [408, 429])
def test_timeout_and_rate_limit_answers_are_retried(enqueued, receiver, status):
    receiver.script = [status]
    delivery = webhooks.webhook_test_send(endpoint=local_endpoint(receiver))
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.PENDING and result.response_status_code == status


def test_redirects_are_not_followed(enqueued, receiver):
    receiver.script = [302]
    receiver.extra_headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    delivery = webhooks.webhook_test_send(endpoint=local_endpoint(receiver))
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.FAILED and "redirects are not followed" in result.error
    assert len(receiver.requests) == 1


def test_a_slow_receiver_times_out_and_is_retried(enqueued, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.delay = 1.5
    delivery = webhooks.webhook_test_send(endpoint=local_endpoint(receiver))
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.PENDING and "No answer within 0.3 s" in result.error


def test_connection_refused_is_retried(enqueued, receiver):
    endpoint = local_endpoint(receiver)
    receiver.server.shutdown()
    receiver.server.server_close()
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.PENDING and "ConnectionRefusedError" in result.error


def test_a_disabled_endpoint_is_not_sent_to(enqueued, receiver):
    endpoint = local_endpoint(receiver)
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(is_active=False)
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.FAILED and "disabled" in result.error and receiver.requests == []


def test_an_incident_restricted_after_the_event_is_not_sent(django_capture_on_commit_callbacks, enqueued, receiver):
    endpoint = local_endpoint(receiver, events=["incident.created"])
    incident = committed(django_capture_on_commit_callbacks, lambda: declare("Looked harmless"))
    services.incident_restriction_set(incident=incident, restricted=True, actor=None)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.FAILED and "restricted" in result.error and receiver.requests == []


# ---- broker down, lost messages, dead workers ---------------------------------------------------------


def test_when_the_broker_is_down_deliveries_wait_and_the_sweep_sends_them(
    django_capture_on_commit_callbacks, monkeypatch
):
    from comms import tasks

    WebhookEndpointFactory()

    def broker_down(*args, **kwargs):
        raise OSError("Connection refused (broker)")

    monkeypatch.setattr(tasks.webhook_delivery_send, "apply_async", broker_down)
    incident = committed(django_capture_on_commit_callbacks, lambda: declare("Broker down"))
    delivery = WebhookDelivery.objects.get(incident=incident)
    assert delivery.state == State.PENDING and delivery.attempts == 0  # saved, waiting

    sent = []
    monkeypatch.setattr(tasks.webhook_delivery_send, "apply_async", lambda args, **options: sent.append(args))
    assert webhooks.webhook_deliveries_sweep() == []  # within the grace period its own message may still come
    later = timezone.now() + timedelta(minutes=2)
    assert webhooks.webhook_deliveries_sweep(now=later) == [delivery.pk]
    assert sent == [(delivery.pk,)]


def test_the_sweep_frees_a_delivery_left_sending_by_a_dead_worker(enqueued, receiver):
    delivery = webhooks.webhook_test_send(endpoint=local_endpoint(receiver))
    long_ago = timezone.now() - timedelta(minutes=10)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(state=State.SENDING, attempts=1, last_attempt_at=long_ago)
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk) is None  # claimed by someone else
    assert webhooks.webhook_deliveries_sweep(now=timezone.now() + timedelta(minutes=2)) == [delivery.pk]
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.DELIVERED and result.attempts == 2


def test_the_tasks_call_the_services_and_can_run_twice(enqueued, receiver):
    from comms import tasks

    delivery = webhooks.webhook_test_send(endpoint=local_endpoint(receiver))
    assert tasks.webhook_delivery_send(delivery.pk) == State.DELIVERED
    assert tasks.webhook_delivery_send(delivery.pk) is None
    assert len(receiver.requests) == 1
    assert tasks.webhook_deliveries_sweep() == 0


def test_the_sweep_is_on_the_beat_schedule():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="comms.tasks.webhook_deliveries_sweep")
    assert task.enabled and task.interval.every == 60 and task.interval.period == "seconds"


# ---- the SSRF guard -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.8.9.10:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.10/hook",
        "http://0.0.0.0/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://224.0.0.1/hook",
        "http://240.0.0.1/hook",
        "http://100.64.0.1/hook",
        "http://localhost:8000/hook",
    ],
)
def test_non_public_destinations_are_refused(url):
    with pytest.raises(webhooks.DestinationRefused):
        webhooks.destination_check(url)
    # …unless the endpoint allows them.
    assert webhooks.destination_check(url, allow_private=True).addresses


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://1.1.1.1/", "http://user:pw@1.1.1.1/", "http:///x"]
)
def test_only_plain_http_and_https_urls(url):
    with pytest.raises(webhooks.DestinationRefused):
        webhooks.destination_check(url, allow_private=True)


def test_every_resolved_address_is_checked(fake_dns):
    fake_dns["hooks.example.com"] = ["93.184.216.34"]
    fake_dns["sneaky.example.com"] = ["93.184.216.34", "10.0.0.5"]
    destination = webhooks.destination_check("https://hooks.example.com/in?x=1")
    assert (destination.host, destination.port, destination.target) == ("hooks.example.com", 443, "/in?x=1")
    assert destination.addresses == ("93.184.216.34",)
    with pytest.raises(webhooks.DestinationRefused, match="10.0.0.5"):
        webhooks.destination_check("https://sneaky.example.com/in")
    with pytest.raises(webhooks.WebhookError, match="does not resolve"):
        webhooks.destination_check("https://nowhere.example.com/in")


def test_send_time_check_refuses_a_name_that_now_resolves_to_a_private_address(fake_dns, enqueued, receiver):
    """DNS rebinding: accepted when saved (public address), refused when sent (it now points inside)."""
    superuser = UserFactory(username="root", is_superuser=True)
    fake_dns["hooks.example.com"] = ["93.184.216.34"]
    endpoint = webhooks.webhook_endpoint_create(actor=superuser, url="http://hooks.example.com/in", events=ALL_EVENTS)
    fake_dns["hooks.example.com"] = ["127.0.0.1"]
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.FAILED and result.error.startswith("Refused:") and "127.0.0.1" in result.error
    assert receiver.requests == []


def test_send_time_check_refuses_a_private_url_saved_past_validation(enqueued, receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url)  # allow_private_destination is off
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.FAILED and "loopback" in result.error and receiver.requests == []


def test_it_connects_to_the_checked_address_and_names_the_host(fake_dns, enqueued, receiver):
    """The connection goes to the address that was checked; the Host header keeps the name."""
    port = receiver.server.server_address[1]
    fake_dns["receiver.internal.example"] = ["127.0.0.1"]
    endpoint = WebhookEndpointFactory(url=f"http://receiver.internal.example:{port}/in", allow_private_destination=True)
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk).state == State.DELIVERED
    assert receiver.requests[0].headers["host"] == f"receiver.internal.example:{port}"


def test_an_unresolvable_host_is_retried_not_refused(fake_dns, enqueued):
    endpoint = WebhookEndpointFactory(url="https://gone.example.com/in")
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    result = webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    assert result.state == State.PENDING and "does not resolve" in result.error


def test_update_and_review_events_carry_what_was_published(django_capture_on_commit_callbacks, enqueued):
    from tests.comms.factories import UpdateFactory

    endpoint = WebhookEndpointFactory(events=["update.published", "review.published"])
    incident = declare("Checkout down")
    update = UpdateFactory(incident=incident, status="published", published_at=timezone.now())

    def record(kind, data):
        with transaction.atomic():
            services.timeline_event_record(incident=incident, kind=kind, data=data)

    committed(django_capture_on_commit_callbacks, lambda: record(Kind.UPDATE_PUBLISHED, {"update_id": update.pk}))
    committed(django_capture_on_commit_callbacks, lambda: record(Kind.REVIEW, {"action": "published", "review_id": 7}))
    published, review = bodies(endpoint)
    assert published["type"] == "update.published"
    assert published["data"]["update"]["id"] == update.pk
    assert published["data"]["update"]["body"] == update.body
    assert published["data"]["update"]["public_status"] == "investigating"
    assert review["type"] == "review.published" and review["data"]["review"]["review_id"] == 7
    assert review["data"]["incident"]["reference"] == incident.reference
