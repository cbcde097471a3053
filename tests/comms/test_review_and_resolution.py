"""Approvers hear of what waits for them; resolving an incident drafts its public resolution for
review and tells the communications lead; internal stakeholders are lists by service and severity;
lists of updates show rendered titles (issue 12)."""

import pytest
from django.core import mail
from django.utils import timezone

from comms import services
from comms.models import Delivery, IncidentNudge, StakeholderList, Update, UpdateTemplate
from incidents import services as incident_services
from tests.comms.factories import UpdateFactory, UpdateTemplateFactory, published_update
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def eager(settings):
    """Notices are handed to Celery after commit; here it runs them in-process."""
    settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.fixture
def people(db):
    return {
        "writer": UserFactory(username="erin", email="erin@corp.example", groups=["Communications"]),
        "approver": UserFactory(username="abe", email="abe@corp.example", groups=["Communications"]),
        "responder": UserFactory(username="rita", email="rita@corp.example", groups=["Responders"]),
        "lead": UserFactory(username="cole", email="cole@corp.example", groups=["Communications"]),
    }


@pytest.fixture
def checkout(db):
    return ServiceFactory(name="Checkout", slug="checkout", is_public=True)


def test_submitting_for_review_tells_the_approvers_once_but_not_the_writer(people, checkout, django_capture_on_commit_callbacks):
    update = UpdateFactory(incident=declare("Checkout errors", services=[checkout]), author=people["writer"])
    with django_capture_on_commit_callbacks(execute=True):
        services.update_submit(update=update, actor=people["writer"])
    [message] = mail.outbox
    assert "An update waits for your review" in message.subject
    assert "abe@corp.example" in message.to and "cole@corp.example" in message.to
    assert "erin@corp.example" not in message.to and "rita@corp.example" not in message.to
    assert "?review=mine" in message.body
    services.update_cadence_sweep()  # the sweep finds nothing left to send
    assert len(mail.outbox) == 1


def test_the_review_queue_lists_what_waits_for_me(people, checkout, client):
    incident = declare("Checkout errors", services=[checkout])
    mine = UpdateFactory(incident=incident, author=people["writer"], title="Needs Abe")
    services.update_submit(update=mine, actor=people["writer"])
    own = UpdateFactory(incident=incident, author=people["approver"], title="Written by Abe")
    services.update_submit(update=own, actor=people["approver"])
    UpdateFactory(incident=incident, author=people["writer"], title="Still a draft")
    client.force_login(people["approver"])
    page = client.get("/admin/comms/update/?review=mine").content.decode()
    assert "Waiting for my review" in page
    assert "Needs Abe" in page and "Written by Abe" not in page and "Still a draft" not in page


def test_resolving_drafts_the_resolved_update_from_its_template_and_tells_the_comms_lead(
    people, checkout, django_capture_on_commit_callbacks
):
    sev2 = SeverityFactory(level=2)
    UpdateTemplateFactory(name="Resolved (Sev2)", public_status="resolved", severity=sev2,
                          title="Resolved: {{ services }}", body="{{ services_are }} working normally again.")  # fmt: skip
    incident = declare("Primary database CPU saturated", severity=sev2, services=[checkout])
    incident_services.role_assign(incident=incident, role="communications_lead", user=people["lead"], actor=None)
    published_update(incident, components=[(checkout, "major_outage")])
    with django_capture_on_commit_callbacks(execute=True):
        drive(incident, "resolved", actor=people["responder"])
    draft = Update.objects.get(incident=incident, public_status="resolved")
    assert draft.status == Update.Status.IN_REVIEW and draft.template.name == "Resolved (Sev2)"  # its severity's
    assert [(c.service, c.status) for c in draft.components.all()] == [(checkout, "operational")]
    preview = services.update_preview(incident=incident, audience="external", public_status="resolved",
                                      title=draft.title, body=draft.body)  # fmt: skip
    assert preview[:2] == ("Resolved: Checkout", "Checkout is working normally again.")
    told = {m.to[0] for m in mail.outbox if "Resolved: publish the resolving update" in m.subject}
    assert told == {"cole@corp.example"}
    assert IncidentNudge.objects.filter(incident=incident, kind="resolution_drafted").count() == 1
    # Asked again while the draft waits (a duplicate signal, a reopen and resolve): nothing new.
    with django_capture_on_commit_callbacks(execute=True):
        services.incident_resolution_draft(incident_id=incident.pk, resolved_at=timezone.now())
    assert Update.objects.filter(incident=incident, public_status="resolved").count() == 1


def test_the_seeded_resolved_template_speaks_english_for_one_service(checkout):
    incident = declare("Checkout errors", services=[checkout])
    seeded = UpdateTemplate.objects.get(name="Resolved")
    body = services.update_preview(incident=incident, audience="external", public_status="resolved", body=seeded.body)[1]
    assert body.startswith("This incident has been resolved: Checkout is working normally again.")


def test_resolving_an_incident_that_was_never_public_drafts_nothing(people, checkout, django_capture_on_commit_callbacks):
    incident = declare("Quiet one", services=[checkout])
    with django_capture_on_commit_callbacks(execute=True):
        drive(incident, "resolved", actor=people["responder"])
    assert not Update.objects.filter(incident=incident).exists() and not mail.outbox


def test_stakeholder_lists_by_service_and_minimum_severity_hear_internal_updates(people, checkout, django_capture_on_commit_callbacks):
    search = ServiceFactory(name="Search", slug="search", is_public=True)
    sev1, sev3 = SeverityFactory(level=1), SeverityFactory(level=3)
    execs = StakeholderList.objects.create(name="Executives", min_severity=sev1, emails="cto@corp.example")
    support = StakeholderList.objects.create(name="Support leads", emails="support@corp.example, desk@corp.example")
    support.services.set([checkout])
    sales = StakeholderList.objects.create(name="Search team")
    sales.services.set([search])
    sales.users.set([people["responder"]])
    StakeholderList.objects.create(name="Off", emails="off@corp.example", is_active=False)
    minor = declare("Checkout slow", severity=sev3, services=[checkout])
    update = UpdateFactory(incident=minor, audience="internal")
    with django_capture_on_commit_callbacks(execute=False):
        services.update_publish(update=update, actor=people["writer"])
    assert set(Delivery.objects.filter(update=update).values_list("address", flat=True)) == {
        "support@corp.example", "desk@corp.example",
    }  # fmt: skip
    major = declare("Everything down", severity=sev1, services=[checkout, search])
    update = UpdateFactory(incident=major, audience="internal")
    with django_capture_on_commit_callbacks(execute=False):
        services.update_publish(update=update, actor=people["writer"])
    assert set(Delivery.objects.filter(update=update).values_list("address", flat=True)) == {
        "cto@corp.example", "support@corp.example", "desk@corp.example", "rita@corp.example",
    }  # fmt: skip
    assert execs.email_list() == ["cto@corp.example"]


def test_lists_of_updates_show_rendered_titles(people, checkout, client):
    incident = declare("Checkout errors", services=[checkout])
    UpdateFactory(incident=incident, title="Investigating: {{ services }}")
    client.force_login(people["writer"])
    page = client.get("/admin/comms/update/").content.decode()
    assert "Investigating: Checkout" in page and "{{ services }}" not in page


def test_publishing_in_the_admin_says_who_will_be_told_and_asks_first(people, checkout, client):
    from tests.comms.factories import SubscriberFactory

    SubscriberFactory(email="ana@example.com")
    SubscriberFactory(email="bo@example.com")
    SubscriberFactory(channel="webhook", email="", url="https://hooks.example.com/x")
    update = UpdateFactory(incident=declare("Checkout errors", severity=SeverityFactory(level=3), services=[checkout]))
    client.force_login(people["writer"])
    change = client.get(f"/admin/comms/update/{update.pk}/change/").content.decode()
    assert f'href="/admin/comms/update/{update.pk}/publish/"' in change  # a link to the confirmation, not a POST
    page = client.get(f"/admin/comms/update/{update.pk}/publish/").content.decode()
    assert "3 recipients" in page and "2 by e-mail" in page and "1 by webhook" in page
    assert "the public status page" in page and "e-mail subscribers" in page
    update.refresh_from_db()
    assert update.status == Update.Status.DRAFT  # asking changed nothing


def test_the_draft_form_offers_the_templates_to_its_script_and_the_preview_shows_page_and_email(people, checkout, client):
    template = UpdateTemplate.objects.get(name="Investigating")
    incident = declare("Primary database CPU saturated", severity=SeverityFactory(level=3), services=[checkout])
    client.force_login(people["writer"])
    add = client.get("/admin/comms/update/add/").content.decode()
    assert 'id="update-templates"' in add and "comms/admin/update_template.js" in add
    assert "Investigating problems with {{ services }}" in add  # the template's text, for the script to fill
    preview = client.post(
        "/admin/comms/update/preview/",
        {"incident": incident.pk, "audience": "external", "template": template.pk, "public_status": "investigating",
         "title": "", "body": "{{ services_are }} slow."},
    ).content.decode()  # fmt: skip
    assert "On the status page" in preview and "In the e-mail to subscribers" in preview
    assert "Service disruption: Checkout" in preview  # the public name, as on the page
    assert "Subject:</strong> Investigating problems with Checkout<" in preview  # not "[Investigating] Investigating…"
    assert "Checkout is slow." in preview and "Primary database CPU saturated" not in preview
