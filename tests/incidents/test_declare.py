"""Declaring: the declaring person takes command unless they choose someone else, and a Responder who
declares a restricted incident keeps seeing it (admin add page and API create)."""

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from incidents.models import Incident, RoleAssignment, TimelineEvent
from tests.incidents.factories import UserFactory

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:incidents_incident_add")
API_LIST = "/api/v1/incidents/"


def add_form(severity, **overrides):
    now = timezone.now()
    return {
        "title": "Checkout failing",
        "summary": "",
        "severity": severity.pk,
        "started_at_0": "",
        "started_at_1": "",
        "detected_at_0": now.strftime("%Y-%m-%d"),
        "detected_at_1": "00:00:01",
        "recurrence_of": "",
        **overrides,
    }


def active_commander(incident):
    return RoleAssignment.objects.get(incident=incident, role="commander", relieved_at__isnull=True).user


@pytest.fixture
def carol(db):
    return UserFactory(username="carol", groups=["Responders"])


@pytest.fixture
def responder_client(client, responder):
    client.force_login(responder)
    return client


def test_add_page_offers_the_declaring_person_as_commander(responder_client, responder, sev2):
    form = responder_client.get(ADD_URL).context["adminform"].form
    assert form.initial["declare_commander"] == responder.pk
    assert "declare_commander" in form.fields


def test_declaring_person_takes_command_from_the_add_page(responder_client, responder, sev2):
    # The form comes with the declaring person chosen; the browser posts it back as it is.
    response = responder_client.post(ADD_URL, add_form(sev2, declare_commander=responder.pk))
    incident = Incident.objects.get(title="Checkout failing")
    assert response.status_code == 302
    assert incident.commander == responder and active_commander(incident) == responder
    kinds = list(incident.timeline.values_list("kind", flat=True))
    assert kinds == [TimelineEvent.Kind.DECLARED, TimelineEvent.Kind.ROLE_ASSIGNED]


def test_declaring_person_may_name_someone_else_or_nobody(responder_client, responder, carol, sev2):
    responder_client.post(ADD_URL, add_form(sev2, title="Named", declare_commander=carol.pk))
    responder_client.post(ADD_URL, add_form(sev2, title="Nobody", declare_commander=""))
    assert Incident.objects.get(title="Named").commander == carol
    nobody = Incident.objects.get(title="Nobody")
    assert nobody.commander is None and not nobody.role_assignments.exists()


def test_responder_who_declares_a_restricted_incident_keeps_seeing_it(responder_client, responder, sev2):
    form = add_form(sev2, is_restricted="on", declare_commander=responder.pk)
    response = responder_client.post(ADD_URL, form, follow=True)
    incident = Incident.objects.get(title="Checkout failing")
    assert incident.is_restricted and incident.commander == responder
    # Landed on the incident page (it used to say the incident "doesn't exist").
    assert response.status_code == 200 and response.redirect_chain[-1][0].endswith(f"/{incident.pk}/change/")
    assert incident.reference in response.content.decode()


def test_restricted_incident_commanded_by_someone_else_keeps_its_declarer_as_member(
    responder_client, responder, carol, sev2
):
    responder_client.post(ADD_URL, add_form(sev2, is_restricted="on", declare_commander=carol.pk))
    incident = Incident.objects.get(title="Checkout failing")
    assert incident.commander == carol
    assert list(incident.members.values_list("user__username", flat=True)) == [responder.username]
    assert Incident.objects.visible_to(responder).filter(pk=incident.pk).exists()
    page = responder_client.get(reverse("admin:incidents_incident_change", args=[incident.pk]))
    assert page.status_code == 200


@pytest.fixture
def api_as_responder(responder):
    client = APIClient()
    client.force_authenticate(responder)
    return client


def test_api_declarer_takes_command_by_default(api_as_responder, responder, sev2):
    response = api_as_responder.post(API_LIST, {"title": "API declared", "severity": 2}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["commander"] == responder.username


def test_api_declare_names_a_commander_or_none(api_as_responder, carol, sev2):
    named = api_as_responder.post(API_LIST, {"title": "A", "severity": 2, "commander": "carol"}, format="json")
    nobody = api_as_responder.post(API_LIST, {"title": "B", "severity": 2, "commander": None}, format="json")
    assert named.json()["commander"] == "carol" and nobody.json()["commander"] is None
    unknown = api_as_responder.post(API_LIST, {"title": "C", "severity": 2, "commander": "nobody-here"}, format="json")
    assert unknown.status_code == 400 and "commander" in unknown.json()["error"]["fields"]
    assert not Incident.objects.filter(title="C").exists()


@pytest.mark.parametrize("commander", ["left out", None, "carol"])
def test_api_restricted_declare_then_read_is_not_a_404(api_as_responder, carol, sev2, commander):
    body = {"title": "Token leak", "severity": 2, "restricted": True}
    if commander != "left out":
        body["commander"] = commander
    created = api_as_responder.post(API_LIST, body, format="json")
    assert created.status_code == 201
    assert api_as_responder.get(created["Location"]).status_code == 200
    listed = api_as_responder.get(API_LIST).json()["results"]
    assert [row["reference"] for row in listed] == [created.json()["reference"]]


def test_outsider_still_cannot_see_the_declared_restricted_incident(api_as_responder, carol, sev2):
    created = api_as_responder.post(API_LIST, {"title": "Token leak", "severity": 2, "restricted": True}, format="json")
    outsider = APIClient()
    outsider.force_authenticate(carol)
    assert outsider.get(created["Location"]).status_code == 404
