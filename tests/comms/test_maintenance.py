"""Scheduled maintenance: the lifecycle, automatic start and completion, subscribers told once, the admin."""

import smtplib
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from comms import services, tasks
from comms.models import MaintenanceNotice, ScheduledMaintenance, Subscriber
from tests.comms.factories import SubscriberFactory, maintenance_scheduled
from tests.incidents.factories import ServiceFactory, UserFactory

pytestmark = pytest.mark.django_db
Status = ScheduledMaintenance.Status


@pytest.fixture
def svc(db):
    return {
        "website": ServiceFactory(name="Website", slug="website", is_public=True),
        "api": ServiceFactory(name="Public API", slug="api", is_public=True),
        "db": ServiceFactory(name="Ledger database", slug="ledger-db", is_public=False),
    }


@pytest.fixture
def hooks_posted(monkeypatch):
    """Webhook and Slack subscribers' POSTs, recorded and answered 200 (the example hosts resolve publicly)."""
    import json

    posted = []
    monkeypatch.setattr("comms.webhooks.host_resolve", lambda *args, **kwargs: ("93.184.216.34",))

    def post(destination, body, headers, timeout):
        posted.append((f"{destination.scheme}://{destination.host}{destination.target}", json.loads(body)))
        return 200, "", None

    monkeypatch.setattr("comms.webhooks.destination_post", post)
    return posted


@pytest.fixture
def enqueued(monkeypatch):
    """Tasks handed to the broker, by maintenance id (the tests run them when they choose)."""
    calls = []
    monkeypatch.setattr(tasks.maintenance_notices_send, "apply_async", lambda args, **options: calls.append(*args))
    return calls


# ---- lifecycle ---------------------------------------------------------------------------------------


def test_scheduling_writes_the_announcement_as_its_first_public_update(svc):
    maintenance = maintenance_scheduled(services=[svc["website"]], body="Upgrade <script>alert(1)</script>**now**")
    assert maintenance.status == Status.SCHEDULED
    [update] = maintenance.updates.all()
    assert update.status == Status.SCHEDULED
    assert "<script>" not in update.body_html and "<strong>now</strong>" in update.body_html
    assert "<script>" not in maintenance.body_html


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"lasts": timedelta(0)}, "end after it starts"), ({"services": []}, "Choose the services")],
)
def test_a_window_must_end_after_it_starts_and_name_services(svc, kwargs, message):
    kwargs.setdefault("services", [svc["website"]])
    with pytest.raises(services.MaintenanceError, match=message):
        maintenance_scheduled(**kwargs)
    assert not ScheduledMaintenance.objects.exists()


def test_lifecycle_writes_one_update_per_step_and_stamps_times(svc):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    maintenance = services.maintenance_transition(maintenance=maintenance, to=Status.IN_PROGRESS)
    assert maintenance.started_at is not None
    again = services.maintenance_transition(maintenance=maintenance, to=Status.IN_PROGRESS)  # a repeat: no-op
    assert again.started_at == maintenance.started_at
    services.maintenance_transition(maintenance=maintenance, to=Status.VERIFYING, body="Checking the results.")
    done = services.maintenance_transition(maintenance=maintenance, to=Status.COMPLETED)
    assert done.completed_at is not None
    assert [(u.status, u.body) for u in done.updates.all()] == [
        ("completed", "The scheduled maintenance has been completed."),
        ("verifying", "Checking the results."),
        ("in_progress", "Scheduled maintenance is currently in progress. We will provide updates as necessary."),
        ("scheduled", "We upgrade the **database**."),
    ]
    with pytest.raises(services.MaintenanceError, match="cannot go from completed to in progress"):
        services.maintenance_transition(maintenance=maintenance, to=Status.IN_PROGRESS)


def test_editing_a_scheduled_maintenance_keeps_its_announcement_in_step(svc):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    services.maintenance_edit(maintenance=maintenance, body="New plan.", services=[svc["api"]])
    maintenance.refresh_from_db()
    assert maintenance.updates.get().body == "New plan." and maintenance.body_html == "<p>New plan.</p>"
    assert list(maintenance.services.all()) == [svc["api"]]
    services.maintenance_transition(maintenance=maintenance, to=Status.COMPLETED)
    with pytest.raises(services.MaintenanceError, match="completed maintenance cannot be changed"):
        services.maintenance_edit(maintenance=maintenance, name="Renamed")


def test_the_sweep_starts_and_completes_windows_on_time_once(svc, enqueued):
    now = timezone.now()
    starting = maintenance_scheduled(services=[svc["website"]], starts_in=timedelta(minutes=-1))
    ended = maintenance_scheduled(services=[svc["website"]], starts_in=timedelta(hours=-3), lasts=timedelta(hours=1))
    manual = maintenance_scheduled(services=[svc["website"]], starts_in=timedelta(minutes=-1), auto_transition=False)
    later = maintenance_scheduled(services=[svc["website"]], starts_in=timedelta(days=3))

    result = services.maintenance_sweep(now=now)
    assert sorted(result["moved"]) == sorted([starting.pk, ended.pk])
    assert services.maintenance_sweep(now=now)["moved"] == []  # running twice changes nothing
    statuses = dict(ScheduledMaintenance.objects.values_list("pk", "status"))
    assert statuses == {
        starting.pk: Status.IN_PROGRESS,
        ended.pk: Status.COMPLETED,
        manual.pk: Status.SCHEDULED,
        later.pk: Status.SCHEDULED,
    }
    assert starting.updates.count() == 2 and ended.updates.count() == 2

    services.maintenance_sweep(now=starting.scheduled_until + timedelta(seconds=1))
    starting.refresh_from_db()
    assert starting.status == Status.COMPLETED


# ---- subscribers told beforehand --------------------------------------------------------------------


@pytest.fixture
def audience(svc):
    """Who should hear of a maintenance on the website, and who should not."""
    return {
        "everything": SubscriberFactory(email="all@example.com"),
        "website": SubscriberFactory(email="web@example.com", services=[svc["website"]]),
        "other service": SubscriberFactory(email="api@example.com", services=[svc["api"]]),
        "unconfirmed": SubscriberFactory(email="new@example.com", confirmed_at=None),
        "unsubscribed": SubscriberFactory(email="gone@example.com", unsubscribed_at=timezone.now()),
        "webhook": SubscriberFactory(channel="webhook", email="", url="https://hooks.example.com/x"),
    }


def test_subscribers_of_its_services_are_told_once_before_the_window(
    svc, audience, enqueued, hooks_posted, django_capture_on_commit_callbacks
):
    maintenance = maintenance_scheduled(services=[svc["website"], svc["db"]], starts_in=timedelta(hours=20))
    far = maintenance_scheduled(services=[svc["website"]], starts_in=timedelta(days=5), name="Far away")

    with django_capture_on_commit_callbacks(execute=True):
        result = services.maintenance_sweep()
    assert result["announced"] == [maintenance.pk]  # within MAINTENANCE_NOTICE_HOURS (24); the other is not
    assert enqueued == [maintenance.pk]  # handed to a worker only after commit
    tasks.maintenance_notices_send(maintenance.pk)
    tasks.maintenance_notices_send(maintenance.pk)  # a duplicate message finds nothing left to send

    assert sorted(m.to[0] for m in mail.outbox) == ["all@example.com", "web@example.com"]
    message = mail.outbox[0]
    assert message.subject.startswith("[Scheduled maintenance] Database upgrade")
    text = message.body
    assert "Website" in text and "Ledger database" not in text  # internal services stay internal
    subscriber = Subscriber.objects.get(email=message.to[0])
    unsubscribe = services.subscriber_unsubscribe_url(subscriber)
    assert unsubscribe in text and message.extra_headers["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert "/status/maintenances/" in text

    # Webhook and chat subscribers are told too (issue 12), with the public name and window.
    [(url, payload)] = hooks_posted
    assert url == "https://hooks.example.com/x" and payload["event"] == "maintenance.upcoming"
    assert payload["maintenance"]["name"] == "Database upgrade" and payload["maintenance"]["components"] == ["Website"]

    services.maintenance_sweep()  # later sweeps do not tell anyone again
    assert MaintenanceNotice.objects.filter(maintenance=maintenance).count() == 3
    assert len(mail.outbox) == 2 and len(hooks_posted) == 1
    maintenance.refresh_from_db()
    far.refresh_from_db()
    assert maintenance.announced_at is not None and far.announced_at is None


def test_notify_now_tells_only_those_not_told_yet(svc, audience, enqueued):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    assert services.maintenance_notices_create(maintenance=maintenance) == 3  # two e-mails, a webhook
    tasks.maintenance_notices_send(maintenance.pk)
    newcomer = SubscriberFactory(email="late@example.com")
    assert services.maintenance_notices_create(maintenance=maintenance) == 1
    tasks.maintenance_notices_send(maintenance.pk)
    assert sorted(m.to[0] for m in mail.outbox) == ["all@example.com", newcomer.email, "web@example.com"]


def test_maintenance_on_internal_services_only_tells_nobody(svc, audience, enqueued):
    maintenance = maintenance_scheduled(services=[svc["db"]], starts_in=timedelta(hours=2))
    services.maintenance_sweep()
    tasks.maintenance_notices_send(maintenance.pk)
    assert mail.outbox == [] and not MaintenanceNotice.objects.exists()


def test_a_notice_claimed_by_a_dead_worker_is_sent_later_but_a_live_claim_is_left_alone(svc, audience, enqueued, settings):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    services.maintenance_notices_create(maintenance=maintenance)
    dead, live = MaintenanceNotice.objects.filter(subscriber__channel="email").order_by("id")
    MaintenanceNotice.objects.exclude(subscriber__channel="email").update(status="sent", sent_at=timezone.now())
    long_ago = timezone.now() - timedelta(hours=1)
    MaintenanceNotice.objects.filter(pk=dead.pk).update(status="sending", claimed_at=long_ago)
    MaintenanceNotice.objects.filter(pk=live.pk).update(status="sending", claimed_at=timezone.now())
    enqueued.clear()
    services.maintenance_sweep()
    assert enqueued == [maintenance.pk]
    assert tasks.maintenance_notices_send(maintenance.pk) == 1
    assert [m.to[0] for m in mail.outbox] == [dead.subscriber.email]


def test_a_temporary_smtp_failure_leaves_the_notice_for_a_later_try(svc, audience, enqueued, monkeypatch):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    services.maintenance_notices_create(maintenance=maintenance)

    def refuse(*args, **kwargs):
        raise smtplib.SMTPServerDisconnected("gone")

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", refuse)
    assert tasks.maintenance_notices_send(maintenance.pk) == 0
    assert set(MaintenanceNotice.objects.values_list("status", flat=True)) == {"pending"}
    monkeypatch.undo()
    monkeypatch.setattr(tasks.maintenance_notices_send, "delay", lambda maintenance_id: None)
    assert tasks.maintenance_notices_send(maintenance.pk) == 2


def test_someone_who_unsubscribed_after_the_notice_was_made_is_not_mailed(svc, audience, enqueued):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    services.maintenance_notices_create(maintenance=maintenance)
    Subscriber.objects.filter(email="web@example.com").update(unsubscribed_at=timezone.now())
    tasks.maintenance_notices_send(maintenance.pk)
    assert [m.to[0] for m in mail.outbox] == ["all@example.com"]


def test_the_sweep_is_scheduled_in_beat_by_the_migration():
    task = PeriodicTask.objects.get(task="comms.tasks.maintenance_sweep")
    assert task.enabled and task.interval.every == 5 and task.interval.period == "minutes"
    assert tasks.maintenance_sweep.name == "comms.tasks.maintenance_sweep"


# ---- the admin -----------------------------------------------------------------------------------------


@pytest.fixture
def comms_client(client):
    user = UserFactory(username="erin", groups=["Communications"])
    client.force_login(user)
    return client


def test_communications_staff_schedule_a_maintenance_in_the_admin(comms_client, svc):
    start = timezone.now() + timedelta(days=1)
    response = comms_client.post(
        "/admin/comms/scheduledmaintenance/add/",
        {
            "name": "Website move",
            "body": "Moving to a new host.",
            "services": [svc["website"].pk],
            "impact": "maintenance",
            "scheduled_for_0": start.strftime("%Y-%m-%d"),
            "scheduled_for_1": start.strftime("%H:%M:%S"),
            "scheduled_until_0": (start + timedelta(hours=1)).strftime("%Y-%m-%d"),
            "scheduled_until_1": (start + timedelta(hours=1)).strftime("%H:%M:%S"),
            "auto_transition": "on",
            "updates-TOTAL_FORMS": "0",
            "updates-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    maintenance = ScheduledMaintenance.objects.get()
    assert maintenance.updates.get().body == "Moving to a new host."
    assert list(maintenance.services.all()) == [svc["website"]]
    page = comms_client.get(f"/admin/comms/scheduledmaintenance/{maintenance.pk}/change/")
    assert page.status_code == 200 and "/status/maintenances/" in page.content.decode()
    assert comms_client.get("/admin/comms/scheduledmaintenance/").status_code == 200


def _change_form(maintenance, **changes):
    local = timezone.localtime
    data = {
        "name": maintenance.name,
        "body": maintenance.body,
        "services": [s.pk for s in maintenance.services.all()],
        "impact": maintenance.impact,
        "scheduled_for_0": local(maintenance.scheduled_for).strftime("%Y-%m-%d"),
        "scheduled_for_1": local(maintenance.scheduled_for).strftime("%H:%M:%S"),
        "scheduled_until_0": local(maintenance.scheduled_until).strftime("%Y-%m-%d"),
        "scheduled_until_1": local(maintenance.scheduled_until).strftime("%H:%M:%S"),
        "auto_transition": "on",
        "updates-TOTAL_FORMS": "0",
        "updates-INITIAL_FORMS": str(maintenance.updates.count()),
    }
    return {**data, **changes}


def test_editing_in_the_admin_goes_through_the_service(comms_client, svc):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    url = f"/admin/comms/scheduledmaintenance/{maintenance.pk}/change/"
    response = comms_client.post(url, _change_form(maintenance, body="Moved to Sunday.", services=[svc["api"].pk]))
    assert response.status_code == 302, response.content.decode()[:3000]
    maintenance.refresh_from_db()
    assert maintenance.body_html == "<p>Moved to Sunday.</p>" and maintenance.updates.get().body == "Moved to Sunday."
    assert list(maintenance.services.all()) == [svc["api"]]
    services.maintenance_transition(maintenance=maintenance, to=Status.COMPLETED)
    assert comms_client.post(url, _change_form(maintenance, name="Renamed")).status_code == 302
    maintenance.refresh_from_db()
    assert maintenance.name == "Database upgrade"  # completed: history, read-only


def test_a_window_ending_before_it_starts_is_a_form_error(comms_client, svc):
    start = timezone.now() + timedelta(days=1)
    response = comms_client.post(
        "/admin/comms/scheduledmaintenance/add/",
        {
            "name": "Backwards",
            "body": "x",
            "services": [svc["website"].pk],
            "impact": "maintenance",
            "scheduled_for_0": start.strftime("%Y-%m-%d"),
            "scheduled_for_1": start.strftime("%H:%M:%S"),
            "scheduled_until_0": (start - timedelta(hours=1)).strftime("%Y-%m-%d"),
            "scheduled_until_1": (start - timedelta(hours=1)).strftime("%H:%M:%S"),
            "updates-TOTAL_FORMS": "0",
            "updates-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200 and "The window must end after it starts." in response.content.decode()
    assert not ScheduledMaintenance.objects.exists()


def test_admin_actions_move_the_maintenance_and_notify_subscribers(comms_client, svc, audience, enqueued):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    changelist = "/admin/comms/scheduledmaintenance/"
    comms_client.post(changelist, {"action": "notify_subscribers", "_selected_action": [maintenance.pk]})
    assert MaintenanceNotice.objects.filter(maintenance=maintenance, kind="upcoming").count() == 3
    comms_client.post(changelist, {"action": "mark_in_progress", "_selected_action": [maintenance.pk]})
    maintenance.refresh_from_db()
    assert maintenance.status == Status.IN_PROGRESS
    response = comms_client.post(
        changelist, {"action": "mark_in_progress", "_selected_action": [maintenance.pk]}, follow=True
    )
    assert response.status_code == 200  # a repeat is harmless
    comms_client.post(changelist, {"action": "mark_completed", "_selected_action": [maintenance.pk]})
    response = comms_client.post(changelist, {"action": "mark_verifying", "_selected_action": [maintenance.pk]}, follow=True)
    assert "cannot go from completed to verifying" in response.content.decode()  # reported, not crashed on


def test_viewers_read_maintenances_but_cannot_change_them(client, svc):
    maintenance = maintenance_scheduled(services=[svc["website"]])
    client.force_login(UserFactory(username="grace", groups=["Viewers"]))
    assert client.get(f"/admin/comms/scheduledmaintenance/{maintenance.pk}/change/").status_code == 200
    assert client.get("/admin/comms/scheduledmaintenance/add/").status_code == 403
    response = client.post(
        "/admin/comms/scheduledmaintenance/", {"action": "mark_in_progress", "_selected_action": [maintenance.pk]}
    )
    maintenance.refresh_from_db()
    assert maintenance.status == Status.SCHEDULED and response.status_code in (200, 302)


def test_group_permissions_come_from_the_migration():
    communications = set(Group.objects.get(name="Communications").permissions.values_list("codename", flat=True))
    assert {"add_scheduledmaintenance", "change_scheduledmaintenance", "view_maintenancenotice"} <= communications
    viewers = set(Group.objects.get(name="Viewers").permissions.values_list("codename", flat=True))
    assert "view_scheduledmaintenance" in viewers and "change_scheduledmaintenance" not in viewers


# ---- announced again when rescheduled; start and finish announced (issue 12) ---------------------------


def test_a_rescheduled_window_is_announced_again_and_start_and_finish_are_announced(
    svc, audience, enqueued, hooks_posted
):
    maintenance = maintenance_scheduled(services=[svc["website"]], starts_in=timedelta(hours=20))
    services.maintenance_sweep()
    tasks.maintenance_notices_send(maintenance.pk)
    assert len(mail.outbox) == 2 and len(hooks_posted) == 1
    mail.outbox.clear()

    later = maintenance.scheduled_for + timedelta(days=1)
    services.maintenance_edit(
        maintenance=maintenance, scheduled_for=later, scheduled_until=later + timedelta(hours=2)
    )
    tasks.maintenance_notices_send(maintenance.pk)
    assert sorted(m.to[0] for m in mail.outbox) == ["all@example.com", "web@example.com"]
    assert all(m.subject.startswith("[Maintenance rescheduled] Database upgrade") for m in mail.outbox)
    assert "The window has moved" in mail.outbox[0].body
    assert hooks_posted[-1][1]["event"] == "maintenance.rescheduled"
    services.maintenance_edit(maintenance=maintenance, body="Same window, new words.")  # not moved: nobody told
    tasks.maintenance_notices_send(maintenance.pk)
    assert len(mail.outbox) == 2
    mail.outbox.clear()

    services.maintenance_transition(maintenance=maintenance, to=Status.IN_PROGRESS)
    tasks.maintenance_notices_send(maintenance.pk)
    assert [m.subject.split("]")[0] for m in mail.outbox] == ["[Maintenance started"] * 2
    services.maintenance_transition(maintenance=maintenance, to=Status.COMPLETED)
    tasks.maintenance_notices_send(maintenance.pk)
    assert [m.subject.split("]")[0] for m in mail.outbox[2:]] == ["[Maintenance completed"] * 2
    assert [payload["event"] for _url, payload in hooks_posted] == [
        "maintenance.upcoming", "maintenance.rescheduled", "maintenance.started", "maintenance.completed",
    ]  # fmt: skip


def test_an_unannounced_maintenance_moved_is_not_announced_early(svc, audience, enqueued):
    maintenance = maintenance_scheduled(services=[svc["website"]], starts_in=timedelta(days=5))
    later = maintenance.scheduled_for + timedelta(days=1)
    services.maintenance_edit(maintenance=maintenance, scheduled_for=later, scheduled_until=later + timedelta(hours=1))
    assert not MaintenanceNotice.objects.exists()
