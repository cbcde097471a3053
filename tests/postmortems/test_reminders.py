"""Action-item reminders: who hears what and when, once per item, day and kind, and never after done."""

from datetime import timedelta
from unittest import mock

import pytest
from django.core import mail
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from incidents import services as incident_services
from postmortems import services, tasks
from postmortems.models import ActionItem, ActionItemReminder
from tests.incidents.factories import UserFactory, declare
from tests.postmortems.factories import action_item

pytestmark = pytest.mark.django_db
Kind = ActionItemReminder.Kind
RStatus = ActionItemReminder.Status


@pytest.fixture(autouse=True)
def policy(settings):
    settings.ACTION_ITEM_REMINDER_DAYS_BEFORE = 3
    settings.ACTION_ITEM_ESCALATE_AFTER_DAYS = 7
    settings.ACTION_ITEM_REMINDER_RETRY_MINUTES = 15
    settings.SITE_URL = "https://incidents.example.com"
    settings.CELERY_TASK_ALWAYS_EAGER = False


def days(n):
    return timezone.localdate() + timedelta(days=n)


def sweep():
    """What the periodic task does, with the per-reminder tasks run in place."""
    for reminder_id in services.action_item_reminders_plan():
        services.action_item_reminder_send(reminder_id=reminder_id)


@pytest.fixture
def people(db):
    class P:
        owner = UserFactory(username="olga", email="olga@example.com")
        commander = UserFactory(username="cora", email="cora@example.com")

    incident = declare("Checkout errors")
    incident_services.role_assign(incident=incident, role="commander", user=P.commander, actor=P.commander)
    P.incident = incident
    return P


def test_the_sweep_is_in_the_beat_schedule_administrators_edit():
    task = PeriodicTask.objects.get(task="postmortems.tasks.action_item_reminders_sweep")
    assert task.enabled and task.interval.every == 1 and task.interval.period == "hours"


@pytest.mark.parametrize(
    "due_in,kinds",
    [
        (5, []),  # not yet
        (3, ["due_soon"]),
        (0, ["due_soon"]),
        (-1, ["overdue"]),
        (-7, ["overdue"]),
        (-8, ["overdue", "escalation"]),
    ],
)
def test_what_an_item_gets_by_due_date(people, due_in, kinds):
    action_item(people.incident, owner=people.owner, due_date=days(due_in))
    sweep()
    assert sorted(ActionItemReminder.objects.values_list("kind", flat=True)) == sorted(kinds)
    sent = {(m.to[0], m.subject.split(":")[0]) for m in mail.outbox}
    expected = set()
    for kind in kinds:
        if kind == "due_soon":
            expected.add(("olga@example.com", "Action item due " + {0: "today", 3: "in 3 days"}[due_in]))
        elif kind == "overdue":
            expected.add(("olga@example.com", f"Overdue action item ({-due_in} day{'s' if due_in < -1 else ''})"))
        else:
            expected.add(("cora@example.com", "Escalation"))
    assert sent == expected


def test_reminder_content_names_the_item_and_links_to_it(people):
    item = action_item(people.incident, title="Rate-limit retries", owner=people.owner, due_date=days(-2))
    sweep()
    [message] = mail.outbox
    assert message.to == ["olga@example.com"]
    assert "Rate-limit retries" in message.subject and people.incident.reference in message.subject
    assert f"https://incidents.example.com/admin/postmortems/actionitem/{item.pk}/change/" in message.body
    assert "2 days overdue" in message.body


def test_escalation_goes_to_the_commander_or_the_severity_contact(people):
    item = action_item(people.incident, title="Fix the runbook", owner=people.owner, due_date=days(-10))
    sweep()
    escalation = ActionItemReminder.objects.get(kind=Kind.ESCALATION)
    assert escalation.status == RStatus.SENT and escalation.recipient == "cora@example.com"
    [to_commander] = [m for m in mail.outbox if m.to == ["cora@example.com"]]
    assert "10 days overdue" in to_commander.body and "olga" in to_commander.body
    # No commander: the severity's escalation contact hears of it instead.
    other = declare("Search slow")
    other.severity.escalation_contact = "oncall-leads@example.com"
    other.severity.save()
    action_item(other, owner=people.owner, due_date=days(-9))
    mail.outbox.clear()
    sweep()
    assert {m.to[0] for m in mail.outbox} == {"olga@example.com", "oncall-leads@example.com"}
    assert item.reminders.count() == 2  # the first item got nothing new today


def test_at_most_one_reminder_per_item_and_day_however_often_it_runs(people):
    action_item(people.incident, owner=people.owner, due_date=days(1))
    action_item(people.incident, owner=people.owner, due_date=days(-9))
    for _ in range(3):
        sweep()
        tasks.action_item_reminders_sweep.run()  # the task itself (its sends are enqueued, then run below)
    for reminder_id in ActionItemReminder.objects.values_list("pk", flat=True):
        tasks.action_item_reminder_send.run(reminder_id)  # a duplicate message does nothing
    assert len(mail.outbox) == 3  # due soon, overdue, escalation
    assert ActionItemReminder.objects.filter(status=RStatus.SENT).count() == 3


def test_the_next_day_brings_the_next_reminder(people):
    action_item(people.incident, owner=people.owner, due_date=days(-1))
    sweep()
    tomorrow = timezone.now() + timedelta(days=1)
    for reminder_id in services.action_item_reminders_plan(now=tomorrow):
        services.action_item_reminder_send(reminder_id=reminder_id, now=tomorrow)
    assert len(mail.outbox) == 2
    assert sorted(ActionItemReminder.objects.values_list("date", flat=True)) == [days(0), days(1)]


def test_done_or_wont_do_stops_reminders_at_once(people):
    done = action_item(people.incident, title="Done one", owner=people.owner, due_date=days(-1))
    dropped = action_item(people.incident, title="Dropped one", owner=people.owner, due_date=days(2))
    # Planned (claimed rows exist, their tasks are queued)…
    reminder_ids = services.action_item_reminders_plan()
    assert len(reminder_ids) == 2
    # …then finished before the tasks run: nothing is sent, and the log says why.
    services.action_item_status_set(item=done, status="done", actor=people.owner)
    services.action_item_status_set(item=dropped, status="wont_do", actor=people.owner, reason="Superseded")
    for reminder_id in reminder_ids:
        assert services.action_item_reminder_send(reminder_id=reminder_id) == RStatus.SKIPPED
    assert mail.outbox == []
    assert set(ActionItemReminder.objects.values_list("skipped_reason", flat=True)) == {
        "the item is done",
        "the item is won't do",
    }
    # And later sweeps plan nothing for them.
    assert services.action_item_reminders_plan() == []


def test_moved_due_date_skips_a_planned_reminder(people):
    item = action_item(people.incident, owner=people.owner, due_date=days(1))
    [reminder_id] = services.action_item_reminders_plan()
    services.action_item_update(item=item, actor=people.owner, due_date=days(20))
    assert services.action_item_reminder_send(reminder_id=reminder_id) == RStatus.SKIPPED
    assert mail.outbox == []


def test_items_without_an_owner_or_due_date_get_no_owner_reminder(people):
    action_item(people.incident, due_date=days(-1))
    action_item(people.incident, owner=people.owner)
    sweep()
    assert not ActionItemReminder.objects.exists() and mail.outbox == []


def test_restricted_incident_reminders_only_to_people_who_may_see_it(people):
    people.incident.refresh_from_db()
    incident_services.incident_restriction_set(incident=people.incident, restricted=True, actor=people.commander)
    incident_services.incident_member_add(incident=people.incident, user=people.owner, actor=people.commander)
    action_item(people.incident, owner=people.owner, due_date=days(-1))
    membership = people.incident.members.get(user=people.owner)
    incident_services.incident_member_remove(member=membership, actor=people.commander)
    sweep()
    assert mail.outbox == []
    assert ActionItemReminder.objects.get().skipped_reason == "olga may not see the restricted incident"


def test_a_failed_send_is_given_back_and_retried(people):
    action_item(people.incident, owner=people.owner, due_date=days(-1))
    [reminder_id] = services.action_item_reminders_plan()
    with mock.patch("django.core.mail.EmailMessage.send", side_effect=OSError("SMTP down")):
        with pytest.raises(OSError):
            services.action_item_reminder_send(reminder_id=reminder_id)
    reminder = ActionItemReminder.objects.get()
    assert reminder.status == RStatus.PENDING and reminder.attempts == 1
    assert services.action_item_reminder_send(reminder_id=reminder_id) == RStatus.SENT
    assert len(mail.outbox) == 1


def test_a_claim_abandoned_by_a_dead_worker_is_retried_later_that_day(people):
    action_item(people.incident, owner=people.owner, due_date=days(-1))
    [reminder_id] = services.action_item_reminders_plan()
    # A worker claimed it and died before sending.
    ActionItemReminder.objects.filter(pk=reminder_id).update(status=RStatus.SENDING, claimed_at=timezone.now())
    assert services.action_item_reminders_plan() == []  # too recent: maybe still sending
    assert services.action_item_reminder_send(reminder_id=reminder_id) is None
    later = timezone.now() + timedelta(minutes=16)
    assert services.action_item_reminders_plan(now=later) == [reminder_id]
    assert services.action_item_reminder_send(reminder_id=reminder_id, now=later) == RStatus.SENT
    assert len(mail.outbox) == 1


def test_the_sweep_task_enqueues_one_send_per_reminder(people):
    action_item(people.incident, owner=people.owner, due_date=days(0))
    with mock.patch.object(tasks.action_item_reminder_send, "delay") as delay:
        assert tasks.action_item_reminders_sweep.run() == 1
    delay.assert_called_once_with(ActionItemReminder.objects.get().pk)
    assert ActionItem.objects.get().reminders.get().status == RStatus.PENDING
