"""The incident page as a command center (issue 15): header, actions, note composer, timeline, panels, live."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from incidents import services
from incidents.models import Incident, TimelineEvent
from tests.incidents.factories import SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

Status = Incident.Status
Kind = TimelineEvent.Kind


def page_url(incident, **query):
    url = reverse("admin:incidents_incident_change", args=[incident.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def url(name, incident):
    return reverse(f"admin:incidents_incident_{name}", args=[incident.pk])


def add_events(incident, count, kind=Kind.ALERT, start=None):
    """`count` timeline rows in one insert (an alert storm), oldest first, a second apart."""
    start = start or incident.detected_at
    TimelineEvent.objects.bulk_create(
        TimelineEvent(incident=incident, kind=kind, occurred_at=start + timedelta(seconds=n), body=f"event {n}")
        for n in range(count)
    )


def page_queries(client, incident):
    client.get(page_url(incident))  # warm-up: content types, sessions, permission caches
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(page_url(incident))
    assert response.status_code == 200
    return len(ctx.captured_queries), response


# ---- the query count does not grow with the timeline --------------------------------------------


def test_page_query_count_is_the_same_at_10_and_5000_timeline_events(admin_client, admin_user):
    """The same incident, measured at 10 events and again after an alert storm took it to 5,000."""
    incident = declare("Alert storm", actor=admin_user)
    services.role_assign(incident=incident, role="commander", user=admin_user, actor=admin_user)
    add_events(incident, 10 - incident.timeline.count())
    assert incident.timeline.count() == 10
    at_10, _ = page_queries(admin_client, incident)

    add_events(incident, 4_990, start=incident.detected_at + timedelta(minutes=1))
    assert incident.timeline.count() == 5_000
    at_5000, response = page_queries(admin_client, incident)
    assert at_5000 == at_10, (at_10, at_5000)
    assert at_10 <= 60, at_10  # the old page made one query per event (510 events: 543 queries)
    html = response.content.decode()
    assert html.count('class="tl-row') == 50 and "page 1 of 100 · 5000 entries" in html


def test_live_endpoint_query_count_does_not_grow_either(admin_client, admin_user):
    small, storm = declare("Small", actor=admin_user), declare("Alert storm", actor=admin_user)
    add_events(small, 9)
    add_events(storm, 4_999)
    counts = []
    for incident in (small, storm):
        first = incident.timeline.order_by("id").first().pk
        admin_client.get(url("live", incident), {"since": first})
        with CaptureQueriesContext(connection) as ctx:
            response = admin_client.get(url("live", incident), {"since": first})
        assert response.status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


# ---- notes are never lost ------------------------------------------------------------------------


def test_a_note_typed_while_someone_else_changes_the_incident_is_still_added(client, admin_user):
    """The page was open (version 1); another responder changes the incident; the note still lands."""
    me, other = UserFactory(username="me", groups=["Responders"]), UserFactory(username="other")
    incident = declare("Queue backlog", actor=admin_user)
    client.force_login(me)
    loaded = client.get(page_url(incident, edit=1)).context["adminform"].form["loaded_version"].value()

    services.incident_update(incident=incident, actor=other, title="Queue backlog on eu-1")
    services.incident_transition(incident=incident, to=Status.RESPONDING, actor=other)
    incident.refresh_from_db()
    assert incident.version > loaded

    response = client.post(url("note", incident), {"note": "Consumers restarted, lag falling"})
    assert response.status_code == 302
    note = incident.timeline.get(kind=Kind.NOTE)
    assert note.body == "Consumers restarted, lag falling" and note.actor == me


def test_the_edit_form_is_rendered_on_demand(admin_client):
    incident = declare("Slow search")
    assert 'name="title"' not in admin_client.get(page_url(incident)).content.decode()
    html = admin_client.get(page_url(incident, edit=1)).content.decode()
    assert 'name="title"' in html and 'name="loaded_version"' in html


def test_a_refused_field_save_shows_what_was_typed(admin_client, admin_user):
    from tests.incidents.test_admin import form_data

    incident = declare("Cache stampede")
    stale = form_data(incident)
    services.incident_update(incident=incident, actor=admin_user, title="Cache stampede on eu-1")
    response = admin_client.post(page_url(incident), {**stale, "title": "My careful rewrite", "summary": "Long text"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Someone else changed this incident" in html
    assert 'value="My careful rewrite"' in html and "Long text" in html
    assert 'id="edit-details" class="edit-details" open' in html  # unfolded, so the person sees it


def test_an_empty_or_future_note_shows_the_page_again_with_the_text(admin_client, admin_user):
    incident = declare("Typo")
    response = admin_client.post(url("note", incident), {"note": "  "})
    assert response.status_code == 200 and "Write something to add a note" in response.content.decode()
    future = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    response = admin_client.post(url("note", incident), {"note": "Deploy at 9", "occurred_at": future})
    html = response.content.decode()
    assert response.status_code == 200 and "in the future" in html and "Deploy at 9</textarea>" in html
    assert not incident.timeline.filter(kind=Kind.NOTE).exists()
    # The edit form on that page still saves to the incident page, not to the note URL.
    assert response.context["form_url"] == page_url(incident)
    # and "Edit details" there opens the incident page's form, not the note URL (POST only).
    assert f'href="{page_url(incident)}?edit=1#edit-details"' in html


def test_a_note_can_be_dated_earlier(admin_client, admin_user):
    incident = declare("Late write-up")
    earlier = timezone.localtime(timezone.now() - timedelta(minutes=30)).replace(second=0, microsecond=0)
    admin_client.post(
        url("note", incident), {"note": "Deploy started", "occurred_at": earlier.strftime("%Y-%m-%dT%H:%M")}
    )
    assert incident.timeline.get(kind=Kind.NOTE).occurred_at == earlier


def test_every_action_carries_the_note(admin_client, admin_user):
    incident = declare("Checkout 502s", severity=SeverityFactory(level=1))
    admin_client.post(url("acknowledge", incident), {"note": "Looking"})
    admin_client.post(url("take_command", incident), {"note": "I have command"})
    admin_client.post(url("transition", incident), {"to": "mitigated", "note": "Rolled back"})
    events = {e.kind: e for e in incident.timeline.all()}
    assert events[Kind.ACKNOWLEDGED].body == "Looking"
    assert incident.timeline.get(kind=Kind.NOTE).body == "I have command"
    assert incident.timeline.filter(kind=Kind.STATUS_CHANGED, data__to="mitigated").get().body == "Rolled back"


# ---- actions -------------------------------------------------------------------------------------


def test_take_command_hands_over_in_one_click(client, admin_user):
    me = UserFactory(username="rosa", groups=["Responders"])
    incident = declare("Search down", actor=admin_user)
    services.role_assign(incident=incident, role="commander", user=admin_user, actor=admin_user)
    client.force_login(me)
    assert "Take command" in client.get(page_url(incident)).content.decode()
    response = client.post(url("take_command", incident), follow=True)
    assert "You are now the commander" in response.content.decode()
    incident.refresh_from_db()
    assert incident.commander == me
    handover = incident.timeline.filter(kind=Kind.ROLE_ASSIGNED).last()
    assert handover.data == {"role": "commander", "from": admin_user.username, "to": "rosa"}
    assert "Take command" not in client.get(page_url(incident)).content.decode()  # already theirs


@pytest.mark.parametrize("to,start", [(Status.CLOSED, Status.RESOLVED), (Status.DISMISSED, Status.DETECTED)])
def test_close_and_dismiss_ask_first_and_keep_the_note(admin_client, admin_user, to, start):
    incident = declare("Maybe noise", severity=SeverityFactory(level=3))
    if start != Status.DETECTED:
        services.incident_transition(incident=incident, to=start, actor=admin_user)
    response = admin_client.post(url("transition", incident), {"to": to, "note": "Flapping check"})
    html = response.content.decode()
    assert response.status_code == 200 and "Flapping check</textarea>" in html
    assert 'name="confirmed" value="yes"' in html
    incident.refresh_from_db()
    assert incident.status == start
    admin_client.post(url("transition", incident), {"to": to, "note": "Flapping check", "confirmed": "yes"})
    incident.refresh_from_db()
    assert incident.status == to
    assert incident.timeline.filter(kind=Kind.STATUS_CHANGED).last().body == "Flapping check"


def test_destructive_steps_look_different_and_sit_apart(admin_client):
    incident = declare("Maybe noise")
    html = admin_client.get(page_url(incident)).content.decode()
    forward, destructive = html.split('class="actions-destructive"')
    assert 'data-to="triaging"' in forward and 'data-to="dismissed"' not in forward
    assert 'class="cc-btn cc-danger"' in destructive and "Dismiss…" in destructive
    assert "Dismiss as duplicate…" in destructive


def test_dismiss_as_duplicate_from_the_page_brings_the_note(admin_client):
    incident = declare("Checkout down (again)")
    response = admin_client.post(url("duplicate", incident), {"note": "Same alert as the other one"})
    assert response.status_code == 200
    assert "Same alert as the other one</textarea>" in response.content.decode()
    incident.refresh_from_db()
    assert incident.status == Status.DETECTED


def test_viewer_gets_no_composer_or_buttons(client, viewer):
    incident = declare("Read only")
    client.force_login(viewer)
    html = client.get(page_url(incident)).content.decode()
    assert 'id="composer"' not in html and "Take command" not in html and 'id="role-form"' not in html
    assert client.post(url("note", incident), {"note": "hi"}).status_code == 403
    assert client.post(url("take_command", incident)).status_code == 403
    assert client.get(url("live", incident)).status_code == 200


# ---- header, panels, timeline -------------------------------------------------------------------


def test_header_shows_badges_commander_and_late_acknowledgement(admin_client, admin_user):
    sev1 = SeverityFactory(level=1)
    sev1.ack_target_minutes = 5
    sev1.save()
    incident = declare(
        "Payments down for every customer in the EU after the 14:02 deploy of the card service",
        severity=sev1,
        detected_at=timezone.now() - timedelta(minutes=12),
        restricted=True,
    )
    html = admin_client.get(page_url(incident)).content.decode()
    header = html.split('id="incident-header"')[1].split("</header>")[0]
    assert incident.reference in header and "after the 14:02 deploy of the card service" in header
    assert "SEV1" in header and "badge-sev" in header and "status-detected" in header
    assert "Restricted" in header and 'commander <b class="state-late">nobody</b>' in header
    assert "unacknowledged for 12\xa0minutes — target 5 min" in header and "state-late" in header
    assert "next update due in" in header


def test_timeline_newest_first_filtered_and_paged(admin_client, admin_user):
    incident = declare("Noisy", actor=admin_user)
    add_events(incident, 60, kind=Kind.ALERT, start=incident.detected_at - timedelta(hours=1))
    services.timeline_note_add(incident=incident, actor=admin_user, body="The only note")
    html = admin_client.get(page_url(incident)).content.decode()
    rows = html.split('id="timeline-list"')[1]
    assert rows.index("The only note") < rows.index("event 59") < rows.index("event 58")
    assert "page 1 of 2" in html and "tl=2" in html
    older = admin_client.get(page_url(incident, tl=2)).content.decode()
    assert "event 0<" in older.split('id="timeline-list"')[1]
    notes = admin_client.get(page_url(incident, kind="notes")).content.decode().split('id="timeline-list"')[1]
    assert "The only note" in notes and "event 5" not in notes
    alerts = admin_client.get(page_url(incident, kind="alerts")).content.decode().split('id="timeline-list"')[1]
    assert "The only note" not in alerts and "event 59" in alerts


def test_roles_panel_uses_an_autocomplete_and_shows_handovers(admin_client, admin_user):
    incident = declare("Handovers", actor=admin_user)
    ana, ben = UserFactory(username="ana"), UserFactory(username="ben")
    services.role_assign(incident=incident, role="technical_lead", user=ana, actor=admin_user)
    services.role_assign(incident=incident, role="technical_lead", user=ben, actor=admin_user)
    html = admin_client.get(page_url(incident)).content.decode()
    roles = html.split('id="panel-roles"')[1].split("</section>")[0]
    assert "admin-autocomplete" in roles and 'data-model-name="roleassignment"' in roles
    assert "<b>ben</b>" in roles and "Handover history (1)" in roles and "ana" in roles


def test_role_form_errors_are_messages_not_500s(admin_client):
    incident = declare("Bad role")
    response = admin_client.post(url("role", incident), {"role": "boss", "user": "x"}, follow=True)
    assert response.status_code == 200 and "No role given" in response.content.decode()
    response = admin_client.post(url("relieve", incident), {"assignment": "nope"}, follow=True)
    assert response.status_code == 200 and "No such role" in response.content.decode()


def test_panels_gather_the_other_apps_rows(admin_client, admin_user):
    """The other apps' panels come from panels/, which the page fetches once shown (some search history)."""
    incident = declare("Checkout errors", severity=SeverityFactory(level=1), actor=admin_user)
    assert f'data-url="{url("panels", incident)}"' in admin_client.get(page_url(incident)).content.decode()
    html = admin_client.get(url("panels", incident)).content.decode()
    comms = html.split('id="panel-comms"')[1].split("</section>")[0]
    assert "Last public update: <b>none yet</b>" in comms and "Draft an update" in comms
    review = html.split('id="panel-review"')[1].split("</section>")[0]
    assert "Start the review" in review and "Add one" in review
    assert 'id="panel-impact"' in html


# ---- live ----------------------------------------------------------------------------------------


def test_live_returns_new_entries_and_state_changes(admin_client, admin_user):
    incident = declare("Live", actor=admin_user)
    since = incident.timeline.get().pk
    data = admin_client.get(url("live", incident), {"since": since}).json()
    assert data["events"] == [] and data["last_event_id"] == since and data["status"] == "detected"

    other = UserFactory(username="other")
    services.incident_transition(incident=incident, to=Status.RESPONDING, actor=other, note="On it")
    services.timeline_note_add(incident=incident, actor=other, body="Found the bad deploy")
    data = admin_client.get(url("live", incident), {"since": since}).json()
    assert data["status"] == "responding" and data["version"] > 1
    assert len(data["events"]) == 2 and "Found the bad deploy" in data["events"][0]
    assert "status-responding" in data["header"] and 'data-to="mitigated"' in data["actions"]
    assert data["last_event_id"] == incident.timeline.order_by("-id").first().pk
    assert admin_client.get(url("live", incident), {"since": "x"}).status_code == 400


def test_live_hides_a_restricted_incident_from_outsiders(client, admin_user, responder):
    incident = declare("Security: token leak", actor=admin_user, restricted=True)
    client.force_login(responder)
    assert client.get(url("live", incident)).status_code == 404
    assert client.post(url("note", incident), {"note": "x"}).status_code == 404
    assert client.get(url("panels", incident)).status_code == 404


def test_header_facts_read_the_latest_update_and_the_latest_public_one(admin_user):
    """The next update is due from the latest update of any audience; the panel shows the latest public one."""
    from incidents.admin_incident_page import header_facts

    incident = declare("Partial outage", actor=admin_user, detected_at=timezone.now() - timedelta(minutes=50))
    interval = incident.severity.update_interval_minutes
    assert header_facts(incident)["last_public_update"] is None

    def publish(minutes_ago, audience, body):
        TimelineEvent.objects.create(
            incident=incident,
            kind=Kind.UPDATE_PUBLISHED,
            occurred_at=timezone.now() - timedelta(minutes=minutes_ago),
            body=body,
            data={"audience": audience},
        )

    publish(interval + 20, "internal", "internal only")
    facts = header_facts(incident)
    assert facts["last_public_update"] is None and "update overdue by" in facts["next_update_text"]
    publish(interval + 10, "external", "We are investigating")
    publish(interval + 15, "external", "older public words")
    publish(1, "internal", "engineers' note")
    facts = header_facts(incident)
    assert facts["last_public_update"].body == "We are investigating"
    assert "next update due in" in facts["next_update_text"]  # from the internal update a minute ago
