"""Dismiss as duplicate merges (issue 15): the duplicate's alert groups, customer reports and people move to
the original, both timelines say so, and the duplicate's alert group then updates the original."""

import pytest
from django.contrib.admin import helpers
from django.urls import reverse

from incidents import services
from incidents.models import Alert, AlertGroup, CustomerReport, Incident, TimelineEvent
from tests.incidents.factories import UserFactory, declare
from tests.incidents.test_ingestion import alert, make, message, post, resolved

pytestmark = pytest.mark.django_db

S = Incident.Status
Kind = TimelineEvent.Kind
LIST_URL = reverse("admin:incidents_incident_changelist")
GROUP = '{}:{alertname="HighErrorRate"}'


@pytest.fixture
def am(db):
    from tests.incidents.factories import SeverityFactory

    for level in (1, 2, 3, 4):
        SeverityFactory(level=level)
    return make("alertmanager")


@pytest.fixture
def lead(db):
    return UserFactory(username="lena", groups=["Responders"])


def opened_by_alerts(client, integration, group_key=GROUP, name="HighErrorRate"):
    firing = alert(name)
    assert post(client, integration, message(firing, group_key=group_key)).status_code in (200, 202)
    return Incident.objects.get(alert_groups__group_key=group_key), firing


def test_merge_moves_groups_reports_and_people_and_records_both_timelines(client, am, lead):
    original = declare("Checkout errors", actor=lead)
    duplicate, _ = opened_by_alerts(client, am)
    helper = UserFactory(username="hank")
    services.role_assign(incident=duplicate, role="technical_lead", user=helper, actor=lead)
    report = services.customer_report_create(actor=lead, customer_id="acme", incident=duplicate)

    services.incident_merge(duplicate=duplicate, original=original, actor=lead, note="Same outage")

    duplicate.refresh_from_db()
    assert duplicate.status == S.DISMISSED and duplicate.duplicate_of == original
    assert AlertGroup.objects.get(group_key=GROUP).incident == original
    assert set(Alert.objects.values_list("incident", flat=True)) == {original.pk}
    assert CustomerReport.objects.get(pk=report.pk).incident == original
    assert helper in original.participants()
    on_original = original.timeline.get(kind=Kind.MERGED)
    on_duplicate = duplicate.timeline.get(kind=Kind.MERGED)
    assert on_original.data["from"] == duplicate.reference and on_duplicate.data["into"] == original.reference
    assert on_original.data["alert_groups"] == 1 and on_original.data["customer_reports"] == 1
    assert on_original.data["members"] == ["hank"]
    assert on_original.actor == lead and "1 alert group" in on_original.body


def test_after_the_merge_the_duplicates_alert_group_updates_the_original(client, am, lead):
    original = declare("Checkout errors", actor=lead)
    duplicate, firing = opened_by_alerts(client, am)
    services.incident_merge(duplicate=duplicate, original=original, actor=lead)

    # A new alert in the same group, then everything resolves: no new incident, the original hears it all.
    second = alert("HighErrorRate", instance="web-2")
    post(client, am, message(firing, second))
    assert Incident.objects.count() == 2
    alerts_on_original = TimelineEvent.objects.filter(incident=original, kind=Kind.ALERT)
    assert alerts_on_original.filter(data__event="firing").exists()
    post(client, am, message(resolved(firing), resolved(second)))
    original.refresh_from_db()
    assert original.status == S.RESOLVED and Incident.objects.count() == 2
    assert not TimelineEvent.objects.filter(incident=duplicate, kind=Kind.ALERT).exclude(
        occurred_at__lte=duplicate.timeline.get(kind=Kind.MERGED).occurred_at
    ).exists()


def test_a_group_whose_incident_was_dismissed_as_duplicate_earlier_feeds_the_original(client, am, lead):
    """Duplicates dismissed before merging existed kept their group; ingestion follows the link."""
    original = declare("Checkout errors", actor=lead)
    duplicate, firing = opened_by_alerts(client, am)
    services.incident_transition(incident=duplicate, to=S.DISMISSED, actor=lead, duplicate_of=original)
    post(client, am, message(firing, alert("HighErrorRate", instance="web-9")))
    assert Incident.objects.count() == 2
    assert AlertGroup.objects.get(group_key=GROUP).incident == original


def test_merge_is_idempotent_and_refuses_what_makes_no_sense(lead):
    original, duplicate, other = declare("A", actor=lead), declare("B", actor=lead), declare("C", actor=lead)
    services.incident_merge(duplicate=duplicate, original=original, actor=lead)
    services.incident_merge(duplicate=duplicate, original=original, actor=lead)  # repeat: nothing new
    assert TimelineEvent.objects.filter(kind=Kind.MERGED).count() == 2
    with pytest.raises(services.IncidentError, match="already dismissed"):
        services.incident_merge(duplicate=duplicate, original=other, actor=lead)
    with pytest.raises(services.IncidentError, match="itself"):
        services.incident_merge(duplicate=other, original=other, actor=lead)
    gone = services.incident_transition(incident=declare("D", actor=lead), to=S.DISMISSED, actor=lead)
    with pytest.raises(services.IncidentError, match="is dismissed"):
        services.incident_merge(duplicate=other, original=gone, actor=lead)
    # Into a duplicate means into its original.
    services.incident_merge(duplicate=other, original=duplicate, actor=lead)
    assert Incident.objects.get(pk=other.pk).duplicate_of == original


def test_a_restricted_duplicate_is_not_merged_into_an_open_incident(lead):
    original = declare("Checkout errors", actor=lead)
    secret = declare("Token leak", actor=lead, restricted=True)
    with pytest.raises(services.IncidentError, match="restricted"):
        services.incident_merge(duplicate=secret, original=original, actor=lead)
    assert Incident.objects.get(pk=secret.pk).status == S.DETECTED


def test_references_to_a_restricted_original_are_left_out_for_others(lead):
    from incidents.models import references_hidden_from

    secret = declare("Token leak", actor=lead, restricted=True)
    services.role_assign(incident=secret, role="commander", user=lead, actor=lead)
    duplicate = declare("Auth errors", actor=lead, restricted=True)
    services.incident_merge(duplicate=duplicate, original=secret, actor=lead)
    event = duplicate.timeline.get(kind=Kind.MERGED)
    outsider = UserFactory(username="otto", groups=["Responders"])
    assert references_hidden_from(outsider, [event]) == {secret.reference}
    assert secret.reference not in event.body


# ---- the list action ---------------------------------------------------------------------------


def action_post(client, selected, **extra):
    return client.post(
        LIST_URL,
        {"action": "dismiss_as_duplicate", helpers.ACTION_CHECKBOX_NAME: [i.pk for i in selected], **extra},
    )


def test_list_action_asks_for_the_original_then_merges_each_selected(admin_client, admin_user):
    original, first, second = declare("Checkout errors"), declare("Pay 500s"), declare("Cart slow")
    page = action_post(admin_client, [first, second])
    assert page.status_code == 200 and "Duplicate of" in page.content.decode()
    assert first.reference in page.content.decode() and second.reference in page.content.decode()
    assert Incident.objects.get(pk=first.pk).status == S.DETECTED  # nothing happens before confirming

    done = action_post(admin_client, [first, second], original=original.reference, note="Same outage", apply="1")
    assert done.status_code == 302
    for incident in (first, second):
        incident.refresh_from_db()
        assert incident.status == S.DISMISSED and incident.duplicate_of == original
    assert original.timeline.filter(kind=Kind.MERGED).count() == 2


def test_list_action_with_a_bad_reference_shows_the_form_again(admin_client):
    first = declare("Pay 500s")
    page = action_post(admin_client, [first], original="INC-999999", apply="1")
    assert page.status_code == 200 and "No incident has this reference" in page.content.decode()
    assert Incident.objects.get(pk=first.pk).status == S.DETECTED


def test_list_action_skips_the_original_and_reports_refusals(admin_client, admin_user):
    original, first = declare("Checkout errors"), declare("Pay 500s")
    services.incident_transition(incident=first, to=S.RESPONDING, actor=admin_user)  # cannot be dismissed now
    response = action_post(admin_client, [original, first], original=original.reference, apply="1")
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any(first.reference in m and "cannot" in m for m in messages), messages
    assert Incident.objects.get(pk=original.pk).status == S.DETECTED
