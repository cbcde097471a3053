"""Direct outreach (issue 16): a message to the opted-in contacts of the accounts an incident affects,
narrowed by tier or by hand, reviewed and approved like an external update, sent once per contact
with the account's name and services filled in, recorded on the timeline and on each account."""

import smtplib
from decimal import Decimal
from unittest import mock
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.urls import reverse

from comms import tasks
from comms.outreach import services as outreach
from comms.outreach.models import Outreach, OutreachDelivery
from incidents.accounts import AccountData, account_upsert
from incidents.models import AccountContact, AccountTier, TimelineEvent
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

BODY = "Dear {{ account.name }} team,\n\n**{{ account.services }}** is affected. Status: {{ status }}."


@pytest.fixture
def checkout(db):
    return ServiceFactory(slug="checkout", name="Checkout")


@pytest.fixture
def search(db):
    return ServiceFactory(slug="search", name="Search")


@pytest.fixture
def writer(db):
    return UserFactory(username="wendy", groups=["Communications"], is_staff=True)


@pytest.fixture
def reviewer(db):
    return UserFactory(username="rick", groups=["Communications"], is_staff=True)


def account(external_id, tier, services, contacts):
    created, _ = account_upsert(
        data=AccountData(
            external_id=external_id,
            name=external_id.title(),
            tier=AccountTier.objects.get(slug=tier),
            annual_contract_value=Decimal("1000"),
            services=list(services),
            contacts=[{"email": email, "incident_emails": opted_in} for email, opted_in in contacts],
        )
    )
    return created


@pytest.fixture
def accounts(checkout, search):
    return {
        "acme": account("acme", "enterprise", [checkout, search], [("ops@acme.example.com", True), ("ceo@acme.example.com", False)]),
        "beta": account("beta", "business", [checkout], [("it@beta.example.com", True)]),
        "tiny": account("tiny", "self-serve", [checkout], [("me@tiny.example.com", True)]),
        "other": account("other", "enterprise", [search], [("x@other.example.com", True)]),  # not affected
    }


@pytest.fixture
def sev1_incident(checkout):
    return declare("Payments failing", severity=SeverityFactory(level=1), services=[checkout])


def recipients(item):
    return sorted(c.email for c in outreach.outreach_recipients(item))


def test_the_draft_targets_the_tiers_the_severity_suggests(sev1_incident, accounts, writer):
    item = outreach.outreach_draft(incident=sev1_incident, actor=writer, subject="Checkout incident", body=BODY)
    assert sorted(t.slug for t in item.tiers.all()) == ["business", "enterprise"]  # seeded policy for SEV1
    assert recipients(item) == ["it@beta.example.com", "ops@acme.example.com"]  # opted in, affected, in tier
    outreach.outreach_edit(outreach=item, actor=writer, tiers=[], accounts=[accounts["tiny"], accounts["acme"]])
    assert recipients(item) == ["me@tiny.example.com", "ops@acme.example.com"]  # hand-picked narrows


def test_unknown_placeholders_and_restricted_incidents_are_refused(sev1_incident, checkout, writer):
    with pytest.raises(outreach.OutreachError, match="Unknown placeholder"):
        outreach.outreach_draft(incident=sev1_incident, actor=writer, subject="x", body="{{ account.secret }}")
    secret = declare("Secret", severity=SeverityFactory(level=1), services=[checkout], restricted=True)
    with pytest.raises(outreach.OutreachError, match="restricted"):
        outreach.outreach_draft(incident=secret, actor=writer, subject="x", body="y")


def test_sev1_outreach_needs_another_persons_approval_then_goes_once_per_contact(
    sev1_incident, accounts, writer, reviewer, django_capture_on_commit_callbacks, monkeypatch
):
    item = outreach.outreach_draft(incident=sev1_incident, actor=writer, subject="Checkout incident", body=BODY)
    with pytest.raises(outreach.OutreachError, match="approved by another person"):
        outreach.outreach_send(outreach=item, actor=writer)
    outreach.outreach_submit(outreach=item, actor=writer)
    with pytest.raises(outreach.OutreachError, match="someone other than"):
        outreach.outreach_approve(outreach=item, actor=writer)
    outreach.outreach_approve(outreach=item, actor=reviewer)
    responder = UserFactory(username="rita", groups=["Responders"])
    with pytest.raises(outreach.OutreachError, match="Communications"):
        outreach.outreach_send(outreach=item, actor=responder)
    enqueued = []
    monkeypatch.setattr(tasks.outreach_deliveries_send, "apply_async", lambda args, **options: enqueued.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        item = outreach.outreach_send(outreach=item, actor=reviewer)
    assert item.status == Outreach.Status.SENT
    assert sorted(item.deliveries.values_list("address", flat=True)) == ["it@beta.example.com", "ops@acme.example.com"]
    assert enqueued == [(sorted(item.deliveries.values_list("pk", flat=True)),)]  # handed to Celery after commit
    event = TimelineEvent.objects.get(incident=sev1_incident, data__outreach_id=item.pk)
    assert event.body == "Direct outreach sent to 2 contacts at 2 accounts: Checkout incident"
    assert outreach.outreach_send(outreach=item, actor=reviewer).deliveries.count() == 2  # again: nothing new


def test_each_contact_gets_their_accounts_text_once(sev1_incident, accounts, writer, reviewer):
    item = outreach.outreach_draft(incident=sev1_incident, actor=writer, subject="{{ account.name }}: incident", body=BODY)
    outreach.outreach_submit(outreach=item, actor=writer)
    outreach.outreach_approve(outreach=item, actor=reviewer)
    outreach.outreach_send(outreach=item, actor=reviewer)
    ids = list(item.deliveries.values_list("pk", flat=True))
    assert outreach.outreach_deliveries_send(delivery_ids=ids) == []
    assert outreach.outreach_deliveries_send(delivery_ids=ids) == []  # a duplicate message sends nothing
    by_address = {m.to[0]: m for m in mail.outbox}
    assert sorted(by_address) == ["it@beta.example.com", "ops@acme.example.com"]
    acme = by_address["ops@acme.example.com"]
    assert acme.subject == "Acme: incident"
    assert "Dear Acme team" in acme.body and "**Checkout** is affected" in acme.body  # only the services it uses
    assert "<strong>Checkout</strong>" in acme.alternatives[0][0]
    assert acme.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert set(OutreachDelivery.objects.values_list("state", flat=True)) == {"sent"}


def test_a_temporary_smtp_failure_leaves_the_delivery_for_a_retry(sev1_incident, accounts, writer, reviewer):
    sev1_incident.severity.update_approval_required = False
    sev1_incident.severity.save()
    item = outreach.outreach_draft(incident=sev1_incident, actor=writer, subject="s", body=BODY)
    outreach.outreach_send(outreach=item, actor=writer)
    ids = list(item.deliveries.order_by("id").values_list("pk", flat=True))
    down = smtplib.SMTPServerDisconnected("gone")
    with mock.patch("django.core.mail.backends.locmem.EmailBackend.send_messages", side_effect=down):
        retries = outreach.outreach_deliveries_send(delivery_ids=ids)
    assert sorted(pk for pk, _attempts in retries) == sorted(ids)
    assert set(OutreachDelivery.objects.values_list("state", flat=True)) == {"pending"}
    assert outreach.outreach_deliveries_send(delivery_ids=ids) == []
    assert len(mail.outbox) == 2


def test_one_click_unsubscribe_stops_incident_email_for_that_contact(client, sev1_incident, accounts, writer):
    contact = AccountContact.objects.get(email="ops@acme.example.com")
    url = urlsplit(outreach.outreach_unsubscribe_url(contact)).path
    assert client.get(url).status_code == 200
    contact.refresh_from_db()
    assert contact.incident_emails  # a link scanner's GET changes nothing
    assert client.post(url, {"List-Unsubscribe": "One-Click"}).status_code == 200
    contact.refresh_from_db()
    assert not contact.incident_emails
    assert client.post(url[:-3] + "xx/").status_code == 400  # a forged token


# ---- admin ---------------------------------------------------------------------------------------------


def test_draft_preview_confirm_and_send_in_the_admin(client, sev1_incident, accounts, writer, reviewer):
    client.force_login(writer)
    add = client.get(reverse("admin:comms_outreach_add"), {"incident": sev1_incident.pk})
    assert add.status_code == 200 and b"{{ account.name }}" in add.content  # a starting text
    enterprise, business = AccountTier.objects.get(slug="enterprise"), AccountTier.objects.get(slug="business")
    created = client.post(
        reverse("admin:comms_outreach_add"),
        {"incident": sev1_incident.pk, "subject": "Checkout incident", "body": BODY, "tiers": [enterprise.pk, business.pk]},
    )
    assert created.status_code == 302, created.context["adminform"].form.errors
    item = Outreach.objects.get()
    page = client.get(reverse("admin:comms_outreach_change", args=[item.pk]))
    assert b"2 opted-in contacts at 2" in page.content and b"Dear Acme team" in page.content
    client.post(reverse("admin:comms_outreach_step", args=[item.pk, "submit"]))
    client.force_login(reviewer)
    client.post(reverse("admin:comms_outreach_step", args=[item.pk, "approve"]))
    confirm = client.get(reverse("admin:comms_outreach_send", args=[item.pk]))
    assert b"2 contacts" in confirm.content and b"cannot be undone" in confirm.content
    assert OutreachDelivery.objects.count() == 0  # nothing sent by looking
    client.post(reverse("admin:comms_outreach_send", args=[item.pk]))
    assert OutreachDelivery.objects.count() == 2
    account_page = client.get(reverse("admin:incidents_account_change", args=[accounts["acme"].pk]))
    assert b"What we told this account" in account_page.content
    told = client.get(reverse("admin:comms_outreachdelivery_changelist"), {"account__id__exact": accounts["acme"].pk})
    assert told.status_code == 200 and b"ops@acme.example.com" in told.content and b"it@beta" not in told.content


def test_a_step_the_rules_refuse_is_a_message_not_an_error(client, sev1_incident, accounts, writer):
    client.force_login(writer)
    item = outreach.outreach_draft(incident=sev1_incident, actor=writer, subject="s", body=BODY)
    outreach.outreach_submit(outreach=item, actor=writer)
    response = client.post(reverse("admin:comms_outreach_step", args=[item.pk, "approve"]), follow=True)
    assert response.status_code == 200 and b"someone other than" in response.content
    assert Outreach.objects.get().status == Outreach.Status.IN_REVIEW
