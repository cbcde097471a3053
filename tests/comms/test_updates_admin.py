"""The customer-success screen: drafting from a template with a preview, the workflow buttons, permissions."""

import pytest
from django.urls import reverse

from comms import services as comms
from comms.models import Update, UpdateTemplate
from incidents import services as incident_services
from incidents.models import Incident
from tests.comms.factories import UpdateTemplateFactory
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:comms_update_add")
LIST_URL = reverse("admin:comms_update_changelist")
PREVIEW_URL = reverse("admin:comms_update_preview")


@pytest.fixture
def sev1(db):
    sev = SeverityFactory(level=1)
    sev.update_approval_required = True
    sev.save()
    return sev


@pytest.fixture
def writer(db):
    return UserFactory(username="wendy", groups=["Communications"])


@pytest.fixture
def reviewer(db):
    return UserFactory(username="ravi", groups=["Communications"])


@pytest.fixture
def checkout(db):
    return ServiceFactory(slug="checkout", name="Checkout", is_public=True)


@pytest.fixture
def incident(sev1, checkout):
    return declare("Checkout errors", severity=sev1, services=[checkout])


def change_url(update):
    return reverse("admin:comms_update_change", args=[update.pk])


def step_url(update, step):
    return reverse(f"admin:comms_update_{step}", args=[update.pk])


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def form_data(incident, **overrides):
    data = {
        "incident": incident.pk,
        "audience": "external",
        "template": "",
        "public_status": "investigating",
        "title": "",
        "body": "",
        "components-TOTAL_FORMS": "1",
        "components-INITIAL_FORMS": "0",
        "components-MIN_NUM_FORMS": "0",
        "components-MAX_NUM_FORMS": "1000",
        "components-0-service": "",
        "components-0-status": "",
    }
    data.update(overrides)
    return data


def test_draft_from_a_template_with_a_preview_then_save(client, writer, incident, checkout):
    template = UpdateTemplate.objects.get(name="Investigating")  # seeded by the migration
    client.force_login(writer)
    response = client.get(ADD_URL, {"template": template.pk, "incident": incident.pk})
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.initial["body"] == template.body and form.initial["public_status"] == "investigating"
    assert 'formaction="/admin/comms/update/preview/"' in response.content.decode()

    # Preview: rendered with the placeholders filled, nothing saved.
    data = form_data(incident, template=template.pk, title="", body="")
    response = client.post(PREVIEW_URL, data)
    assert response.status_code == 200
    body = response.content.decode()
    assert "We are investigating reports of problems with Checkout" in body
    assert "Investigating problems with Checkout" in body and "{{" not in body
    assert not Update.objects.exists()

    data.update({"components-0-service": checkout.pk, "components-0-status": "partial_outage"})
    response = client.post(ADD_URL, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    update = Update.objects.get()
    assert update.template == template and update.body == template.body and update.title == template.title
    assert update.author == writer and update.status == Update.Status.DRAFT
    assert [(c.service, c.status) for c in update.components.all()] == [(checkout, "partial_outage")]
    page = client.get(change_url(update))
    text = page.content.decode()
    assert "We are investigating reports of problems with Checkout" in text  # the preview on the page
    assert "Next update due in" in text or "Overdue by" in text
    assert 'data-step="submit"' in text and 'data-step="publish"' not in text  # SEV1 needs approval first


def test_unknown_placeholders_are_form_errors(client, writer, incident):
    client.force_login(writer)
    response = client.post(ADD_URL, form_data(incident, body="Hello {{ customer.name }} {{ x.__class__ }}"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Unknown placeholders {{ customer.name }}, {{ x.__class__ }}" in errors["body"][0]
    assert not Update.objects.exists()
    response = client.post(PREVIEW_URL, form_data(incident, body="{{ nope }}"))
    assert "Unknown placeholder {{ nope }}" in response.content.decode()
    # Templates too.
    response = client.post(
        reverse("admin:comms_updatetemplate_add"),
        {
            "name": "Bad",
            "audience": "external",
            "public_status": "",
            "title": "{{ x }}",
            "body": "ok",
            "is_active": "on",
        },
    )
    assert response.status_code == 200 and "title" in response.context["adminform"].form.errors
    assert not UpdateTemplate.objects.filter(name="Bad").exists()


def test_external_update_needs_a_public_status(client, writer, incident):
    client.force_login(writer)
    response = client.post(ADD_URL, form_data(incident, public_status="", body="Text"))
    assert response.status_code == 200
    assert "public status" in str(response.context["adminform"].form.errors["public_status"])


def test_the_whole_workflow_by_the_communications_group(client, writer, reviewer, incident):
    update = comms.update_draft_create(
        incident=incident, actor=writer, audience="external", public_status="identified", body="Found it."
    )
    client.force_login(writer)
    # Editing the draft goes through the service.
    response = client.post(change_url(update), form_data(incident, public_status="identified", body="Found **it**."))
    assert response.status_code == 302, response.context["adminform"].form.errors
    update.refresh_from_db()
    assert update.body == "Found **it**." and "<strong>it</strong>" in update.body_html

    assert client.post(step_url(update, "publish"), follow=True).status_code == 200
    assert Update.objects.get(pk=update.pk).status == Update.Status.DRAFT  # SEV1: not without approval
    client.post(step_url(update, "submit"))
    assert Update.objects.get(pk=update.pk).status == Update.Status.IN_REVIEW
    response = client.post(step_url(update, "approve"), follow=True)
    assert any("someone other than" in m for m in messages_of(response))
    assert Update.objects.get(pk=update.pk).status == Update.Status.IN_REVIEW

    client.force_login(reviewer)
    page = client.get(change_url(update)).content.decode()
    assert 'data-step="approve"' in page
    client.post(step_url(update, "approve"))
    assert Update.objects.get(pk=update.pk).status == Update.Status.APPROVED
    response = client.post(step_url(update, "publish"), follow=True)
    assert any("published" in m for m in messages_of(response))
    update.refresh_from_db()
    assert update.status == Update.Status.PUBLISHED and update.published_by == reviewer

    # A published update is read-only; correcting it drafts a new one and keeps it.
    page = client.get(change_url(update))
    assert page.status_code == 200 and not page.context["has_change_permission"]
    progress = str(comms.update_delivery_progress(update))
    assert progress and progress in page.content.decode()  # the deliveries' progress on the page
    response = client.post(change_url(update), form_data(incident, body="Rewritten history"))
    assert response.status_code == 403
    response = client.post(step_url(update, "correct"))
    correction = Update.objects.get(corrects=update)
    assert response.status_code == 302 and response.url == change_url(correction)
    update.refresh_from_db()
    assert update.body == "Found **it**." and update.status == Update.Status.PUBLISHED


def test_communications_cannot_change_an_incidents_lifecycle(client, writer, incident):
    client.force_login(writer)
    page = client.get(reverse("admin:incidents_incident_change", args=[incident.pk]))
    assert page.status_code == 200
    assert "data-to=" not in page.content.decode()  # no transition buttons
    response = client.post(reverse("admin:incidents_incident_transition", args=[incident.pk]), {"to": "resolved"})
    assert response.status_code == 403
    assert Incident.objects.get(pk=incident.pk).status == "detected"
    assert not writer.has_perm("incidents.change_incident")


def test_viewers_read_but_cannot_move_updates(client, writer, incident):
    viewer = UserFactory(username="victor", groups=["Viewers"])
    update = comms.update_draft_create(incident=incident, actor=writer, audience="internal", body="Hi")
    client.force_login(viewer)
    page = client.get(change_url(update))
    assert page.status_code == 200 and "data-step=" not in page.content.decode()
    assert client.post(step_url(update, "publish")).status_code == 403
    assert client.post(step_url(update, "submit")).status_code == 403
    assert client.get(step_url(update, "submit")).status_code == 403
    assert Update.objects.get(pk=update.pk).status == Update.Status.DRAFT


def test_responders_publish_internal_updates_but_not_external_ones(client, incident):
    responder = UserFactory(username="rita", groups=["Responders"])
    client.force_login(responder)
    response = client.post(ADD_URL, form_data(incident, audience="internal", public_status="", body="Rolled back."))
    assert response.status_code == 302
    internal = Update.objects.get()
    assert 'data-step="publish"' in client.get(change_url(internal)).content.decode()
    client.post(step_url(internal, "publish"))
    assert Update.objects.get(pk=internal.pk).status == Update.Status.PUBLISHED
    low = declare("Blip", severity=SeverityFactory(level=4))
    external = comms.update_draft_create(
        incident=low, actor=responder, audience="external", public_status="investigating", body="Looking."
    )
    assert 'data-step="publish"' not in client.get(change_url(external)).content.decode()
    response = client.post(step_url(external, "publish"), follow=True)
    assert any("Communications group" in m for m in messages_of(response))
    assert Update.objects.get(pk=external.pk).status == Update.Status.DRAFT


def test_restricted_incidents_and_their_updates_stay_hidden(client, writer, incident):
    secret = declare("Payroll leak Quokka", restricted=True)
    hidden = comms.update_draft_create(incident=secret, actor=None, audience="internal", body="Secret Quokka")
    shown = comms.update_draft_create(incident=incident, actor=writer, audience="internal", body="Visible")
    client.force_login(writer)
    listing = client.get(LIST_URL).content.decode()
    assert "Quokka" not in listing and str(shown) in listing
    assert client.get(change_url(hidden), follow=True).redirect_chain[-1][0] == "/admin/"
    assert client.post(step_url(hidden, "publish")).status_code == 404
    # The incident picker offers only incidents the person may see.
    response = client.post(ADD_URL, form_data(secret, audience="internal", public_status="", body="x"))
    assert response.status_code == 200 and "incident" in response.context["adminform"].form.errors
    autocomplete = client.get(
        "/admin/autocomplete/",
        {"app_label": "comms", "model_name": "update", "field_name": "incident", "term": "Quokka"},
    )
    assert autocomplete.status_code == 200 and "Quokka" not in autocomplete.content.decode()
    # Someone on the incident sees it.
    incident_services.incident_member_add(incident=secret, user=writer, actor=None)
    assert "Secret Quokka" in client.get(change_url(hidden)).content.decode()


def test_list_filters_and_search(client, writer, incident):
    comms.update_draft_create(incident=incident, actor=writer, audience="internal", body="Internal words")
    comms.update_draft_create(
        incident=incident, actor=writer, audience="external", public_status="monitoring", body="External words"
    )
    client.force_login(writer)
    for query, expected in (
        ({"audience__exact": "internal"}, 1),
        ({"public_status__exact": "monitoring"}, 1),
        ({"status__exact": "draft"}, 2),
        ({"incident__severity__id__exact": incident.severity_id}, 2),
        ({"q": incident.reference}, 2),
        ({"q": "Internal words"}, 1),
    ):
        response = client.get(LIST_URL, query)
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == expected, query


def test_template_list_links_to_a_draft(client, writer):
    template = UpdateTemplateFactory(name="Degraded")
    client.force_login(writer)
    page = client.get(reverse("admin:comms_updatetemplate_changelist")).content.decode()
    assert f"{ADD_URL}?template={template.pk}" in page


def test_a_step_link_asks_for_confirmation_and_changes_nothing(client, writer, incident):
    update = comms.update_draft_create(incident=incident, actor=writer, audience="internal", body="**Bold** move")
    client.force_login(writer)
    page = client.get(step_url(update, "publish"))
    assert page.status_code == 200
    assert 'value="Publish"' in page.content.decode() and "<strong>Bold</strong>" in page.content.decode()
    assert Update.objects.get(pk=update.pk).status == Update.Status.DRAFT
    preview = client.get(reverse("admin:comms_update_preview_existing", args=[update.pk]))
    assert preview.status_code == 200 and "<strong>Bold</strong>" in preview.content.decode()
    client.post(step_url(update, "publish"))
    assert Update.objects.get(pk=update.pk).status == Update.Status.PUBLISHED
