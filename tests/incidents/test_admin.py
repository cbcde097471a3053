import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from incidents import services
from incidents.admin import IncidentAdmin, OpenIncidentAdmin
from incidents.models import Incident, RoleAssignment, TimelineEvent
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

Status = Incident.Status
LIST_URL = reverse("admin:incidents_incident_changelist")
OPEN_URL = reverse("admin:incidents_openincident_changelist")


def change_url(incident):
    return reverse("admin:incidents_incident_change", args=[incident.pk])


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def form_data(incident, **overrides):
    """What the incident page posts back, unchanged unless overridden."""
    incident.refresh_from_db()
    data = {
        "title": incident.title,
        "summary": incident.summary,
        "severity": incident.severity_id,
        "services": [s.pk for s in incident.services.all()],
        "started_at_0": "",
        "started_at_1": "",
        "detected_at_0": incident.detected_at.strftime("%Y-%m-%d"),
        "detected_at_1": incident.detected_at.strftime("%H:%M:%S"),
        "recurrence_of": "",
        "loaded_version": incident.version,
    }
    for prefix in ("role_assignments", "role_assignments-2", "members", "members-2", "timeline", "timeline-2"):
        data.update({f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0})
    data.update(overrides)
    return data


def test_list_shows_incidents_with_severity_colour_and_commander(admin_client, admin_user, sev1):
    incident = declare("Payments down", severity=sev1, services=[ServiceFactory(name="Payments API")])
    services.role_assign(incident=incident, role="commander", user=admin_user, actor=admin_user)
    response = admin_client.get(LIST_URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert incident.reference in page and "Payments down" in page and "Payments API" in page
    assert sev1.colour in page and admin_user.username in page


def test_list_search_by_reference_and_text(admin_client):
    wanted, other = declare("Login latency"), declare("Disk full on db-3")
    for term in (wanted.reference, wanted.reference.lower(), str(wanted.number), "latency"):
        page = admin_client.get(LIST_URL, {"q": term}).content.decode()
        assert wanted.reference in page and other.reference not in page, term


def test_list_filters_by_status_service_commander_and_open(admin_client, admin_user):
    api = ServiceFactory(slug="api")
    with_api = declare("API errors", services=[api])
    resolved = declare("Old blip")
    services.incident_transition(incident=resolved, to=Status.RESOLVED, actor=admin_user)
    services.role_assign(incident=resolved, role="commander", user=admin_user, actor=admin_user)

    def refs(params):
        page = admin_client.get(LIST_URL, params).content.decode()
        return {ref for ref in (with_api.reference, resolved.reference) if ref in page}

    assert refs({"service": "api"}) == {with_api.reference}
    assert refs({"status__exact": "resolved"}) == {resolved.reference}
    assert refs({"open": "yes"}) == {with_api.reference}
    assert refs({"open": "no"}) == {resolved.reference}
    assert refs({"commander": str(admin_user.pk)}) == {resolved.reference}
    assert refs({"commander": "none"}) == {with_api.reference}


@pytest.mark.parametrize("url", [LIST_URL, OPEN_URL])
def test_list_query_count_does_not_grow_with_rows(admin_client, admin_user, monkeypatch, url):
    svc_a, svc_b = ServiceFactory(), ServiceFactory()
    for n in range(100):
        incident = declare(f"Incident {n}", services=[svc_a, svc_b])
        services.role_assign(incident=incident, role="commander", user=admin_user, actor=admin_user)

    def queries_at(per_page):
        for admin_class in (IncidentAdmin, OpenIncidentAdmin):
            monkeypatch.setattr(admin_class, "list_per_page", per_page)
        admin_client.get(url)  # warm caches (content types, session)
        with CaptureQueriesContext(connection) as ctx:
            response = admin_client.get(url)
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == per_page
        return len(ctx.captured_queries)

    assert queries_at(20) == queries_at(100)


def test_list_never_counts_the_whole_table(admin_client):
    declare("One")
    with CaptureQueriesContext(connection) as ctx:
        admin_client.get(LIST_URL)
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    # Either PostgreSQL's estimate or a count bounded by LIMIT; never a bare COUNT over incidents.
    assert all("LIMIT" in sql.upper() for sql in counts), counts


def test_declare_from_add_page_goes_through_the_service(admin_client, admin_user, sev2):
    api = ServiceFactory(slug="api")
    response = admin_client.post(
        reverse("admin:incidents_incident_add"),
        {
            "title": "Checkout failing",
            "summary": "5xx on /pay",
            "severity": sev2.pk,
            "services": [api.pk],
            "started_at_0": "",
            "started_at_1": "",
            "detected_at_0": timezone.now().strftime("%Y-%m-%d"),
            "detected_at_1": "00:00:01",
            "recurrence_of": "",
        },
    )
    incident = Incident.objects.get(title="Checkout failing")
    assert response.status_code == 302 and response["Location"] == change_url(incident)
    assert incident.status == Status.DETECTED and list(incident.services.all()) == [api]
    declared = incident.timeline.get(kind=TimelineEvent.Kind.DECLARED)
    assert declared.actor == admin_user


def test_add_page_rejects_future_detection_with_a_form_error(admin_client, sev2):
    tomorrow = timezone.now() + timezone.timedelta(days=1)
    response = admin_client.post(
        reverse("admin:incidents_incident_add"),
        {
            "title": "Typo",
            "severity": sev2.pk,
            "started_at_0": "",
            "started_at_1": "",
            "detected_at_0": tomorrow.strftime("%Y-%m-%d"),
            "detected_at_1": "12:00:00",
        },
    )
    assert response.status_code == 200
    assert "in the future" in str(response.context["adminform"].form.errors)
    assert not Incident.objects.filter(title="Typo").exists()


def test_change_page_renders_roles_timeline_and_buttons(admin_client, admin_user):
    incident = declare("Queue backlog")  # by monitoring: nobody has acknowledged it yet
    services.role_assign(incident=incident, role="scribe", user=admin_user, actor=None)
    page = admin_client.get(change_url(incident)).content.decode()
    assert "Acknowledge" in page and "Mark resolved" in page and "Dismiss as duplicate" in page
    assert "Scribe" in page and "Declared" in page


def test_edit_records_before_and_after_and_severity_change(admin_client, admin_user, sev1):
    incident = declare("Slow search", severity=SeverityFactory(level=3))
    response = admin_client.post(change_url(incident), form_data(incident, title="Search timing out", severity=sev1.pk))
    assert response.status_code == 302
    incident.refresh_from_db()
    assert incident.title == "Search timing out" and incident.severity == sev1
    edit = incident.timeline.get(kind=TimelineEvent.Kind.FIELDS_CHANGED)
    assert edit.data["title"] == ["Slow search", "Search timing out"] and edit.actor == admin_user
    assert incident.timeline.get(kind=TimelineEvent.Kind.SEVERITY_CHANGED).data == {"from": 3, "to": 1}


def test_second_concurrent_edit_is_refused_not_overwritten(admin_client, admin_user):
    incident = declare("Cache stampede")
    stale = form_data(incident)  # the second person opened the page now
    admin_client.post(change_url(incident), form_data(incident, title="Cache stampede on eu-1"))
    response = admin_client.post(change_url(incident), {**stale, "title": "Cache stampede (older edit)"})
    assert response.status_code == 200
    assert "Someone else changed this incident" in str(response.context["adminform"].form.non_field_errors())
    incident.refresh_from_db()
    assert incident.title == "Cache stampede on eu-1"


def test_role_handover_and_note_from_the_page(admin_client, admin_user):
    """Roles are given from the roles panel (a handover for single-holder roles); notes from the composer."""
    incident = declare("Mail delays")
    first, second = UserFactory(username="ana"), UserFactory(username="ben")
    services.role_assign(incident=incident, role="commander", user=first, actor=admin_user)
    response = admin_client.post(
        reverse("admin:incidents_incident_role", args=[incident.pk]), {"role": "commander", "user": second.pk}
    )
    assert response.status_code == 302
    response = admin_client.post(
        reverse("admin:incidents_incident_note", args=[incident.pk]), {"note": "Rolled back the 14:02 deploy"}
    )
    assert response.status_code == 302
    incident.refresh_from_db()
    assert incident.commander == second
    history = list(incident.role_assignments.order_by("assigned_at").values_list("user__username", "relieved_at"))
    assert history[0][0] == "ana" and history[0][1] is not None
    assert history[1] == ("ben", None)
    note = incident.timeline.get(kind=TimelineEvent.Kind.NOTE)
    assert note.body == "Rolled back the 14:02 deploy" and note.actor == admin_user


def test_relieve_ends_a_role(admin_client, admin_user):
    incident = declare("Disk pressure")
    assignment = services.role_assign(incident=incident, role="scribe", user=admin_user, actor=admin_user)
    url = reverse("admin:incidents_incident_relieve", args=[incident.pk])
    assert admin_client.post(url, {"assignment": assignment.pk}).status_code == 302
    assignment.refresh_from_db()
    assert assignment.relieved_at is not None
    assert incident.timeline.filter(kind=TimelineEvent.Kind.ROLE_RELIEVED).count() == 1


@pytest.mark.parametrize(
    "to", [Status.TRIAGING, Status.RESPONDING, Status.MITIGATED, Status.RESOLVED, Status.DISMISSED]
)
def test_transition_button(admin_client, to):
    incident = declare("Button press")
    url = reverse("admin:incidents_incident_transition", args=[incident.pk])
    # Dismissing asks first (see test_incident_page.py); the confirmation page posts confirmed=yes.
    response = admin_client.post(url, {"to": to, "confirmed": "yes"}, follow=True)
    incident.refresh_from_db()
    assert incident.status == to
    assert any("is now" in m for m in messages_of(response))


def test_rejected_transition_is_a_message_not_a_500(admin_client):
    incident = declare("Not yet")
    url = reverse("admin:incidents_incident_transition", args=[incident.pk])
    response = admin_client.post(url, {"to": "closed"}, follow=True)
    assert response.status_code == 200
    assert any("cannot move from detected to closed" in m for m in messages_of(response))
    response = admin_client.post(url, {"to": "nonsense"}, follow=True)
    assert response.status_code == 200 and any("Unknown status" in m for m in messages_of(response))
    assert admin_client.get(url).status_code == 405
    incident.refresh_from_db()
    assert incident.status == Status.DETECTED


def test_acknowledge_button(admin_client, admin_user):
    incident = declare("Pager went off")
    admin_client.post(reverse("admin:incidents_incident_acknowledge", args=[incident.pk]))
    incident.refresh_from_db()
    assert incident.acknowledged_at is not None and incident.status == Status.TRIAGING
    assert incident.timeline.get(kind=TimelineEvent.Kind.ACKNOWLEDGED).actor == admin_user


def test_reopen_from_resolved(admin_client, admin_user):
    incident = declare("Came back")
    services.incident_transition(incident=incident, to=Status.RESOLVED, actor=admin_user)
    page = admin_client.get(change_url(incident)).content.decode()
    assert "Reopen" in page
    admin_client.post(reverse("admin:incidents_incident_transition", args=[incident.pk]), {"to": "responding"})
    incident.refresh_from_db()
    assert incident.status == Status.RESPONDING and incident.resolved_at is None
    assert incident.timeline.filter(kind=TimelineEvent.Kind.STATUS_CHANGED).last().data["reopened"] is True


def test_dismiss_as_duplicate_page(admin_client):
    original, copy = declare("Checkout down"), declare("Checkout down (again)")
    url = reverse("admin:incidents_incident_duplicate", args=[copy.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"original": "INC-999999"})
    assert response.status_code == 200 and "No incident has this reference" in response.content.decode()
    response = admin_client.post(url, {"original": original.reference, "note": "Same alert"})
    assert response.status_code == 302
    copy.refresh_from_db()
    assert copy.status == Status.DISMISSED and copy.duplicate_of == original


@pytest.mark.parametrize(
    "action,start,expected",
    [
        ("acknowledge", Status.DETECTED, Status.TRIAGING),
        ("transition_to_triaging", Status.DETECTED, Status.TRIAGING),
        ("transition_to_responding", Status.DETECTED, Status.RESPONDING),
        ("transition_to_mitigated", Status.RESPONDING, Status.MITIGATED),
        ("transition_to_resolved", Status.MITIGATED, Status.RESOLVED),
        ("transition_to_postmortem", Status.RESOLVED, Status.POSTMORTEM),
        ("transition_to_closed", Status.POSTMORTEM, Status.CLOSED),
        ("transition_to_dismissed", Status.TRIAGING, Status.DISMISSED),
        ("reopen", Status.RESOLVED, Status.RESPONDING),
    ],
)
def test_list_actions(admin_client, admin_user, action, start, expected):
    incident = declare("Action target")
    route = [Status.RESOLVED, Status.POSTMORTEM] if start == Status.POSTMORTEM else [start]
    for step in route:
        services.incident_transition(incident=incident, to=step, actor=admin_user)
    response = admin_client.post(LIST_URL, {"action": action, "_selected_action": [incident.pk]}, follow=True)
    assert response.status_code == 200
    incident.refresh_from_db()
    assert incident.status == expected


def test_list_action_reports_rejected_rows_and_applies_the_rest(admin_client, admin_user):
    fresh, closed = declare("Fresh"), declare("Done")
    for to in (Status.RESOLVED, Status.CLOSED):
        services.incident_transition(incident=closed, to=to, actor=admin_user)
    response = admin_client.post(
        LIST_URL, {"action": "transition_to_mitigated", "_selected_action": [fresh.pk, closed.pk]}, follow=True
    )
    texts = messages_of(response)
    assert any(fresh.reference in m and "Updated 1" in m for m in texts)
    assert any(closed.reference in m and "not changed" in m for m in texts)
    fresh.refresh_from_db()
    assert fresh.status == Status.MITIGATED


def test_open_incidents_view_orders_by_severity_then_age(admin_client, admin_user):
    now = timezone.now()
    older_sev3 = declare("Older sev3", severity=SeverityFactory(level=3), detected_at=now - timezone.timedelta(hours=5))
    newer_sev1 = declare("Newer sev1", severity=SeverityFactory(level=1), detected_at=now - timezone.timedelta(hours=1))
    older_sev1 = declare("Older sev1", severity=SeverityFactory(level=1), detected_at=now - timezone.timedelta(hours=3))
    resolved = declare("Resolved sev1", severity=SeverityFactory(level=1))
    services.incident_transition(incident=resolved, to=Status.RESOLVED, actor=admin_user)
    rows = list(admin_client.get(OPEN_URL).context["cl"].result_list)
    assert [i.pk for i in rows] == [older_sev1.pk, newer_sev1.pk, older_sev3.pk]


def test_viewer_can_read_but_change_nothing(client, viewer):
    incident = declare("Read only for viewers")
    client.force_login(viewer)
    assert client.get(LIST_URL).status_code == 200
    page = client.get(change_url(incident))
    assert page.status_code == 200 and "Mark resolved" not in page.content.decode()
    assert client.get(reverse("admin:incidents_incident_add")).status_code == 403
    assert client.post(change_url(incident), form_data(incident, title="Hijacked")).status_code == 403
    assert (
        client.post(reverse("admin:incidents_incident_transition", args=[incident.pk]), {"to": "resolved"}).status_code
        == 403
    )
    assert client.post(reverse("admin:incidents_incident_acknowledge", args=[incident.pk])).status_code == 403
    assert (
        client.post(reverse("admin:incidents_incident_duplicate", args=[incident.pk]), {"original": "1"}).status_code
        == 403
    )
    response = client.post(LIST_URL, {"action": "transition_to_resolved", "_selected_action": [incident.pk]})
    assert response.status_code in (200, 302)
    incident.refresh_from_db()
    assert incident.title == "Read only for viewers" and incident.status == Status.DETECTED
    assert incident.timeline.count() == 1
    assert not RoleAssignment.objects.exists()


def test_responder_can_declare_and_run_an_incident(client, responder, sev2):
    client.force_login(responder)
    incident = declare("Run by a responder", severity=sev2)
    client.post(reverse("admin:incidents_incident_acknowledge", args=[incident.pk]))
    client.post(reverse("admin:incidents_incident_transition", args=[incident.pk]), {"to": "resolved"})
    incident.refresh_from_db()
    assert incident.status == Status.RESOLVED
    assert client.get(reverse("admin:incidents_incident_add")).status_code == 200


def test_incidents_cannot_be_deleted_from_the_admin(admin_client):
    incident = declare("Keep me")
    assert admin_client.get(reverse("admin:incidents_incident_delete", args=[incident.pk])).status_code == 403
    assert Incident.objects.filter(pk=incident.pk).exists()


def test_reference_data_pages(admin_client):
    ServiceFactory(name="Search", slug="search")
    for name in ("service", "servicegroup", "severity"):
        assert admin_client.get(reverse(f"admin:incidents_{name}_changelist")).status_code == 200
    assert (
        admin_client.get(reverse("admin:incidents_severity_change", args=[SeverityFactory(level=1).pk])).status_code
        == 200
    )


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_healthz_reports_503_when_the_database_does_not_answer(client, monkeypatch):
    from django.db import OperationalError
    from django.db.backends.utils import CursorWrapper

    def broken(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", broken)
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "unavailable"


def test_severity_list_action_changes_severity_through_the_service(admin_client, admin_user, sev1):
    incident = declare("Getting worse", severity=SeverityFactory(level=3))
    response = admin_client.post(LIST_URL, {"action": "set_severity_1", "_selected_action": [incident.pk]}, follow=True)
    assert response.status_code == 200
    incident.refresh_from_db()
    assert incident.severity == sev1
    event = incident.timeline.get(kind=TimelineEvent.Kind.SEVERITY_CHANGED)
    assert event.data == {"from": 3, "to": 1} and event.actor == admin_user


def test_viewer_is_offered_no_severity_action(client, viewer):
    declare("Quiet")
    client.force_login(viewer)
    page = client.get(LIST_URL).content.decode()
    assert "set_severity_1" not in page


def test_restrict_from_the_incident_page_and_add_a_member(admin_client, admin_user):
    incident = declare("Possible data exposure")
    member = UserFactory(username="legal")
    data = form_data(incident, is_restricted="on")
    data.update(
        {
            "members-2-TOTAL_FORMS": 1,
            "members-2-0-user": member.pk,
            "members-2-0-incident": incident.pk,
        }
    )
    response = admin_client.post(change_url(incident), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    incident.refresh_from_db()
    assert incident.is_restricted
    assert list(incident.members.values_list("user__username", flat=True)) == ["legal"]
    kinds = set(incident.timeline.values_list("kind", flat=True))
    assert {TimelineEvent.Kind.RESTRICTION_CHANGED, TimelineEvent.Kind.MEMBER_ADDED} <= kinds


def test_outsider_gets_no_page_for_a_restricted_incident(client, responder, admin_user):
    incident = declare("Security: token leak", actor=admin_user, restricted=True)
    client.force_login(responder)
    assert incident.reference not in client.get(LIST_URL).content.decode()
    response = client.get(change_url(incident), follow=True)
    assert "Security: token leak" not in response.content.decode()
    transition = reverse("admin:incidents_incident_transition", args=[incident.pk])
    assert client.post(transition, {"to": "resolved"}).status_code == 404
    services.incident_member_add(incident=incident, user=responder, actor=admin_user)
    assert client.get(change_url(incident)).status_code == 200
