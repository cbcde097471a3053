"""Updates and templates: placeholders, sanitising, the review/publish workflow, channel policy, cadence."""

from datetime import timedelta

import pytest
from django.utils import timezone

from comms import rendering
from comms import services as comms
from comms.models import ComponentStatus, Update
from incidents.models import TimelineEvent
from tests.comms.factories import UpdateTemplateFactory, named
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db

S = Update.Status
EXTERNAL, INTERNAL = Update.Audience.EXTERNAL, Update.Audience.INTERNAL


def severity(level, *, approval, email=True, outreach=False, interval=30):
    sev = SeverityFactory(level=level)
    sev.update_approval_required = approval
    sev.notify_email_subscribers = email
    sev.notify_direct_outreach = outreach
    sev.update_interval_minutes = interval
    sev.save()
    return sev


@pytest.fixture
def sev1(db):
    return severity(1, approval=True, outreach=True)


@pytest.fixture
def sev4(db):
    return severity(4, approval=False, email=False, interval=240)


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
    internal = ServiceFactory(slug="ledger-db", name="Ledger DB", is_public=False)
    return declare("Checkout errors", severity=sev1, services=[checkout, internal])


def draft(incident, actor, **kwargs):
    kwargs.setdefault("audience", EXTERNAL)
    kwargs.setdefault("public_status", "investigating" if kwargs["audience"] == EXTERNAL else "")
    kwargs.setdefault("body", "We are looking into **errors** at checkout.")
    return comms.update_draft_create(incident=incident, actor=actor, **kwargs)


# ---- placeholders and rendering ----------------------------------------------------------------


def test_template_placeholders_are_filled_by_plain_substitution(incident, writer):
    named(incident, "Slow checkout")
    template = UpdateTemplateFactory(
        title="{{ incident.title }}: {{status}}",
        body="{{ incident.title }} hits {{ services }} ({{ severity }}). Next update by {{ next_update_at }}. "
        "See {{ status_page_url }}.",
    )
    update = comms.update_draft_create(incident=incident, actor=writer, template=template)
    # The draft keeps the placeholders; its preview fills them.
    assert update.body == template.body and update.template == template
    assert update.audience == EXTERNAL and update.public_status == "investigating"
    title, body, html = comms.update_preview(
        incident=incident, audience=EXTERNAL, public_status="investigating", title=update.title, body=update.body
    )
    # External updates name the incident by its public title, never the internal one.
    assert title == "Slow checkout: Investigating"
    # Only public services are named to customers.
    assert body.startswith("Slow checkout hits Checkout (SEV1 Critical). Next update by ")
    assert "Ledger" not in body and "http://" in body and "/status/" in body
    assert "Slow checkout hits Checkout" in html and "Checkout errors" not in body
    # The internal reference is refused in external texts (internal ones may use it).
    with pytest.raises(comms.UpdateError, match="internal"):
        comms.update_preview(incident=incident, audience=EXTERNAL, public_status="investigating",
                             title="{{ incident.reference }}")  # fmt: skip
    assert comms.update_preview(incident=incident, audience=INTERNAL, title="{{ incident.reference }}")[0] == incident.reference


def test_internal_updates_name_every_service(incident, writer):
    _title, body, _html = comms.update_preview(incident=incident, audience=INTERNAL, body="{{ services }}")
    assert body == "Checkout and Ledger DB"


@pytest.mark.parametrize(
    "text",
    ["{{ nope }}", "{{ x.__class__ }}", "{{ incident.title.upper }}", "{{ incident.__class__.__mro__ }}", "{{ }}"],
)
def test_unknown_placeholders_are_refused(incident, writer, text):
    with pytest.raises(comms.UpdateError, match="Unknown placeholder"):
        draft(incident, writer, body=f"Hello {text}")
    with pytest.raises(comms.UpdateError, match="Unknown placeholder"):
        draft(incident, writer, title=text)
    assert not Update.objects.exists()


def test_template_engine_syntax_is_never_evaluated(incident, writer):
    body = "{% load static %}{% now 'Y' %} {{ incident.title }}"
    update = draft(incident, writer, body=body)
    _title, filled, html = comms.update_preview(incident=incident, audience=EXTERNAL, body=update.body)
    assert filled == "{% load static %}{% now 'Y' %} Service disruption: Checkout"  # its neutral public name
    assert "{% load static %}" in html and "{% now" in html


def test_substituted_values_are_not_expanded_again(sev1, writer):
    sneaky = declare("{{ severity }} {% debug %}", severity=sev1)
    _title, body, _html = comms.update_preview(incident=sneaky, audience=INTERNAL, body="[{{ incident.title }}]")
    assert body == "[{{ severity }} {% debug %}]"


def test_markdown_is_sanitised():
    html = rendering.markdown_render(
        '**bold** <script>alert(1)</script> <b onclick="steal()">hi</b> [x](javascript:alert(1)) '
        '<a href="javascript:alert(2)">y</a> <img src=x onerror=alert(3)> [ok](https://example.com/a)'
    )
    assert "<strong>bold</strong>" in html
    assert "<script" not in html and "alert(1)" not in html
    assert "onclick" not in html and "onerror" not in html and "<img" not in html
    assert "javascript:" not in html
    assert '<a href="https://example.com/a" rel="nofollow noopener">ok</a>' in html


def test_a_drafts_html_is_rendered_and_sanitised(incident, writer):
    update = draft(incident, writer, body="Hi <script>x()</script>[a](javascript:x())")
    assert "<script" not in update.body_html and "javascript:" not in update.body_html


# ---- drafting rules ----------------------------------------------------------------------------


def test_content_rules(incident, writer, checkout):
    with pytest.raises(comms.UpdateError, match="public status"):
        draft(incident, writer, public_status="")
    with pytest.raises(comms.UpdateError, match="Only external"):
        draft(incident, writer, audience=INTERNAL, public_status="investigating")
    with pytest.raises(comms.UpdateError, match="needs a body"):
        draft(incident, writer, body="  ")
    with pytest.raises(comms.UpdateError, match="not on the public status page"):
        hidden = ServiceFactory(slug="hidden", is_public=False)
        draft(incident, writer, components=[(hidden, ComponentStatus.MAJOR_OUTAGE)])
    with pytest.raises(comms.UpdateError, match="Only external"):
        draft(incident, writer, audience=INTERNAL, components=[(checkout, ComponentStatus.MAJOR_OUTAGE)])
    with pytest.raises(comms.UpdateError, match="template"):
        comms.update_draft_create(
            incident=incident, actor=writer, audience=INTERNAL, template=UpdateTemplateFactory(audience=EXTERNAL)
        )
    update = draft(incident, writer, components=[(checkout, ComponentStatus.PARTIAL_OUTAGE)])
    assert [(c.service, c.status) for c in update.components.all()] == [(checkout, "partial_outage")]
    assert update.status == S.DRAFT and update.author == writer


def test_only_drafts_can_be_edited(incident, writer, reviewer, checkout):
    update = draft(incident, writer)
    update = comms.update_edit(
        update=update,
        actor=writer,
        body="Now **identified**.",
        public_status="identified",
        components=[(checkout, ComponentStatus.MAJOR_OUTAGE)],
    )
    assert update.public_status == "identified" and "<strong>identified</strong>" in update.body_html
    assert update.components.get().status == "major_outage"
    with pytest.raises(comms.UpdateError, match="Unknown placeholder"):
        comms.update_edit(update=update, actor=writer, body="{{ secret }}")
    comms.update_submit(update=update, actor=writer)
    with pytest.raises(comms.UpdateStepError, match="Only drafts can be edited"):
        comms.update_edit(update=update, actor=writer, body="Sneaky change after review")
    comms.update_approve(update=update, actor=reviewer)
    with pytest.raises(comms.UpdateStepError):
        comms.update_edit(update=update, actor=reviewer, body="Sneaky change after approval")
    update.refresh_from_db()
    assert update.body == "Now **identified**."


# ---- the workflow ------------------------------------------------------------------------------


def test_sev1_external_update_needs_another_persons_approval(incident, writer, reviewer):
    update = draft(incident, writer)
    with pytest.raises(comms.UpdateStepError, match="approved by another person"):
        comms.update_publish(update=update, actor=writer)
    with pytest.raises(comms.UpdateStepError, match="Submit this draft"):
        comms.update_approve(update=update, actor=reviewer)
    update = comms.update_submit(update=update, actor=writer)
    assert update.status == S.IN_REVIEW and update.submitted_by == writer
    assert comms.update_submit(update=update, actor=writer).status == S.IN_REVIEW  # repeat: no-op
    with pytest.raises(comms.UpdateStepError, match="approved by another person"):
        comms.update_publish(update=update, actor=reviewer)  # in review is not approved
    with pytest.raises(comms.UpdateStepError, match="someone other than"):
        comms.update_approve(update=update, actor=writer)
    update = comms.update_approve(update=update, actor=reviewer)
    assert update.status == S.APPROVED and update.approved_by == reviewer and update.approved_at
    assert comms.update_approve(update=update, actor=reviewer).approved_at == update.approved_at  # no-op
    update = comms.update_publish(update=update, actor=writer)
    assert update.status == S.PUBLISHED and update.published_by == writer and update.published_at
    with pytest.raises(comms.UpdateStepError, match="already published"):
        comms.update_approve(update=update, actor=reviewer)
    with pytest.raises(comms.UpdateStepError):
        comms.update_submit(update=update, actor=writer)


def test_someone_who_submitted_anothers_draft_cannot_approve_it(incident, writer, reviewer):
    update = draft(incident, writer)
    comms.update_submit(update=update, actor=reviewer)
    with pytest.raises(comms.UpdateStepError, match="someone other than"):
        comms.update_approve(update=update, actor=reviewer)


def test_approval_needs_the_approve_permission(incident, writer):
    responder = UserFactory(username="rita", groups=["Responders"])
    viewer = UserFactory(username="victor", groups=["Viewers"])
    update = comms.update_submit(update=draft(incident, writer), actor=writer)
    for person in (responder, viewer):
        with pytest.raises(comms.UpdatePermissionError):
            comms.update_approve(update=update, actor=person)
    superuser = UserFactory(username="root", is_superuser=True)
    assert comms.update_approve(update=update, actor=superuser).status == S.APPROVED


def test_sev4_external_update_is_published_without_approval(sev4, writer):
    incident = declare("Slow avatars", severity=sev4)
    update = comms.update_publish(update=draft(incident, writer), actor=writer)
    assert update.status == S.PUBLISHED and update.approved_by is None


def test_internal_updates_need_no_approval_and_responders_publish_them(incident):
    responder = UserFactory(username="rita", groups=["Responders"])
    update = draft(incident, responder, audience=INTERNAL, body="Rollback started.")
    assert comms.update_publish(update=update, actor=responder).status == S.PUBLISHED
    # External ones are for the Communications group, even at a severity that needs no approval.
    external = draft(declare("Blip", severity=severity(4, approval=False)), responder)
    with pytest.raises(comms.UpdatePermissionError):
        comms.update_publish(update=external, actor=responder)
    assert Update.objects.get(pk=external.pk).status == S.DRAFT


def test_send_back_drops_the_approval(incident, writer, reviewer):
    update = comms.update_submit(update=draft(incident, writer), actor=writer)
    comms.update_approve(update=update, actor=reviewer)
    update = comms.update_return(update=update, actor=writer)
    assert update.status == S.DRAFT and update.approved_by is None and update.submitted_by is None
    with pytest.raises(comms.UpdateStepError, match="approved by another person"):
        comms.update_publish(update=update, actor=writer)
    assert comms.update_return(update=update, actor=writer).status == S.DRAFT  # no-op


def test_publishing_records_the_timeline_freezes_the_text_and_creates_deliveries(
    incident, writer, reviewer, monkeypatch, django_capture_on_commit_callbacks
):
    calls = []
    real = comms.update_deliveries_create

    def spy(*, update):
        calls.append((update.pk, update.status))
        return real(update=update)

    monkeypatch.setattr(comms.updates, "update_deliveries_create", spy)  # where publishing looks it up
    update = draft(incident, writer, title="{{ incident.title }} update", body="Next by {{ next_update_at }}.")
    comms.update_submit(update=update, actor=writer)
    comms.update_approve(update=update, actor=reviewer)
    with django_capture_on_commit_callbacks(execute=True):
        update = comms.update_publish(update=update, actor=reviewer)
    assert calls == [(update.pk, S.PUBLISHED)]
    assert update.title == "Service disruption: Checkout update" and "{{" not in update.body
    due = update.published_at + timedelta(minutes=30)
    assert timezone.localtime(due).strftime(rendering.TIME_FORMAT) in update.body
    event = TimelineEvent.objects.get(incident=incident, kind=TimelineEvent.Kind.UPDATE_PUBLISHED)
    assert event.actor == reviewer
    assert event.data == {"update_id": update.pk, "audience": "external", "public_status": "investigating"}
    assert update.title in event.body
    # Publishing again changes nothing and sends nothing.
    again = comms.update_publish(update=update, actor=writer)
    assert again.published_at == update.published_at and again.published_by == reviewer
    assert len(calls) == 1
    assert TimelineEvent.objects.filter(kind=TimelineEvent.Kind.UPDATE_PUBLISHED).count() == 1


def test_correction_keeps_the_original(sev4, writer, checkout):
    incident = declare("Slow avatars", severity=sev4, services=[checkout])
    original = draft(incident, writer, body="It was the database.", components=[(checkout, "major_outage")])
    with pytest.raises(comms.UpdateStepError, match="Only a published update"):
        comms.update_correct(update=original, actor=writer)
    original = comms.update_publish(update=original, actor=writer)
    correction = comms.update_correct(update=original, actor=writer)
    assert correction.corrects == original and correction.status == S.DRAFT
    assert correction.body == original.body and correction.components.get().status == "major_outage"
    assert comms.update_correct(update=original, actor=writer) == correction  # repeat: the same draft
    comms.update_edit(update=correction, actor=writer, body="It was the cache, not the database.")
    correction = comms.update_publish(update=correction, actor=writer)
    original.refresh_from_db()
    assert original.status == S.PUBLISHED and original.body == "It was the database."
    assert list(original.corrections.all()) == [correction] and correction.is_correction
    event = TimelineEvent.objects.filter(kind=TimelineEvent.Kind.UPDATE_PUBLISHED).latest("id")
    assert event.data["corrects"] == original.pk and event.body.startswith("Correction published")
    # A new correction can be drafted once the last one is out.
    assert comms.update_correct(update=original, actor=writer) != correction


# ---- channel policy and cadence ----------------------------------------------------------------


def test_channels_follow_the_severity_policy(incident, sev4, writer, settings):
    assert comms.update_channels(draft(incident, writer)) == ["status_page", "email_subscribers", "direct_outreach"]
    low = declare("Blip", severity=sev4)
    assert comms.update_channels(draft(low, writer)) == ["status_page"]
    sev4.notify_email_subscribers = True
    sev4.save()
    low.refresh_from_db()
    assert comms.update_channels(draft(low, writer)) == ["status_page", "email_subscribers"]
    assert comms.update_channels(draft(incident, writer, audience=INTERNAL)) == ["stakeholders"]


def test_internal_stakeholders(incident, writer, settings):
    from incidents import services as incident_services

    settings.COMMS_STAKEHOLDER_EMAILS = ["execs@example.com"]
    commander = UserFactory(username="cora", email="cora@example.com")
    incident_services.role_assign(incident=incident, role="commander", user=commander, actor=writer)
    update = draft(incident, writer, audience=INTERNAL)
    assert comms.update_stakeholder_emails(update) == ["cora@example.com", "execs@example.com"]
    # A restricted incident's internal updates stay with its own people.
    incident_services.incident_restriction_set(incident=incident, restricted=True, actor=writer)
    update.refresh_from_db()
    assert comms.update_stakeholder_emails(update) == ["cora@example.com"]


def test_next_update_due(sev1, writer):
    detected = timezone.now() - timedelta(minutes=50)
    incident = declare("Checkout errors", severity=sev1, detected_at=detected)
    assert comms.incident_next_update_due(incident) == detected + timedelta(minutes=30)  # overdue by 20 min
    update = comms.update_draft_create(incident=incident, actor=writer, audience=INTERNAL, body="On it.")
    update = comms.update_publish(update=update, actor=writer)
    assert comms.incident_next_update_due(incident) == update.published_at + timedelta(minutes=30)
    # Drafts don't count; a resolved incident owes no more updates.
    comms.update_draft_create(incident=incident, actor=writer, audience=INTERNAL, body="Draft.")
    assert comms.incident_next_update_due(incident) == update.published_at + timedelta(minutes=30)
    incident = drive(incident, "resolved")
    assert comms.incident_next_update_due(incident) is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_publishes_publish_once(monkeypatch):
    """Two people press Publish at the same moment: one timeline event, one set of deliveries."""
    import threading

    from django.db import connection

    sev = severity(4, approval=False)
    writer = UserFactory(username="wendy", groups=["Communications"])
    update = comms.update_draft_create(
        incident=declare("Blip", severity=sev), actor=writer, audience="external", public_status="resolved", body="Ok"
    )
    calls = []
    real = comms.update_deliveries_create

    def spy(*, update):
        calls.append(update.pk)
        return real(update=update)

    monkeypatch.setattr(comms.updates, "update_deliveries_create", spy)  # where publishing looks it up
    barrier, errors = threading.Barrier(4), []

    def publish():
        try:
            barrier.wait(timeout=10)
            comms.update_publish(update=update, actor=writer)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and calls == [update.pk]
    assert TimelineEvent.objects.filter(kind=TimelineEvent.Kind.UPDATE_PUBLISHED).count() == 1


def test_a_severity_specific_template_fits_only_its_severity(incident, sev4, writer):
    template = UpdateTemplateFactory(severity=sev4)
    with pytest.raises(comms.UpdateError, match="for SEV4 incidents"):
        comms.update_draft_create(incident=incident, actor=writer, template=template)
    low = declare("Blip", severity=sev4)
    assert comms.update_draft_create(incident=low, actor=writer, template=template).template == template
