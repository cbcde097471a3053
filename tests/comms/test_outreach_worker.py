"""Direct outreach sent by a real Celery worker on a real broker (Redis) and PostgreSQL: every opted-in
contact of the accounts chosen gets their account's message exactly once, even when the broker hands
the same chunk over again.

Needs CELERY_BROKER_URL=redis://… (CI sets it) and DATABASE_URL=postgres://… (the worker process
must reach the test database); skipped otherwise.
"""

import os
import re
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import transaction

from comms import tasks
from comms.outreach import services as outreach
from comms.outreach.models import OutreachDelivery
from incidents.accounts import AccountData, account_upsert
from incidents.models import AccountTier
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare
from tests.worker import running_workers, worker_env

BROKER = os.environ.get("CELERY_BROKER_URL", "")
SEPARATOR = "\n" + "-" * 79 + "\n"  # Django's file e-mail backend writes one after each message

pytestmark = [
    pytest.mark.skipif(
        not BROKER.startswith(("redis://", "rediss://")),
        reason="needs a real broker: set CELERY_BROKER_URL=redis://… (CI does); the filesystem broker is not one",
    ),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def _mails(mail_dir):
    """{recipient: [subjects]} of every e-mail the worker wrote."""
    found = {}
    for path in Path(mail_dir).glob("*.log"):
        for message in path.read_text(errors="replace").split(SEPARATOR):
            if message.strip():
                to = re.search(r"^To: (.+)$", message, re.MULTILINE)[1].strip()
                subject = re.search(r"^Subject: (.+)$", message, re.MULTILINE)[1].strip()
                found.setdefault(to, []).append(subject)
    return found


def _wait(condition, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def test_a_worker_sends_each_contact_their_accounts_message_once():
    checkout = ServiceFactory(slug="checkout", name="Checkout")
    tier = AccountTier.objects.get(slug="enterprise")
    for n in range(3):
        account_upsert(
            data=AccountData(
                external_id=f"acct-{n}",
                name=f"Account {n}",
                tier=tier,
                annual_contract_value=Decimal("1000"),
                services=[checkout],
                contacts=[{"email": f"c{i}@acct-{n}.example.com", "incident_emails": True} for i in range(10)],
            )
        )
    incident = declare("Checkout down", severity=SeverityFactory(level=3), services=[checkout])
    writer = UserFactory(username="wendy", groups=["Communications"])
    item = outreach.outreach_draft(incident=incident, actor=writer, subject="{{ account.name }}: checkout", body="Hi")
    with tempfile.TemporaryDirectory() as mail_dir:
        env = worker_env(EMAIL_URL=f"filemail:///{mail_dir}", DJANGO_SETTINGS_MODULE="incidents_site.settings")
        with running_workers("outreach", env=env, pool="prefork", concurrency=2):
            with transaction.atomic():  # committed, so the enqueue after commit happens
                outreach.outreach_send(outreach=item, actor=writer)
            sent = OutreachDelivery.objects.filter(outreach=item, state=OutreachDelivery.State.SENT)
            assert _wait(lambda: sent.count() == 30), "not every contact was sent the message"
            ids = list(OutreachDelivery.objects.filter(outreach=item).values_list("pk", flat=True))
            tasks.outreach_deliveries_send.delay(ids)  # the broker hands a chunk over again, late
            time.sleep(3)
        mails = _mails(mail_dir)
    assert len(mails) == 30 and all(len(subjects) == 1 for subjects in mails.values())  # once each
    assert mails["c3@acct-2.example.com"] == ["Account 2: checkout"]  # their account's text
