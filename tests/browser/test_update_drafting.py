"""Drafting and publishing an update in a real browser, on a laptop and on a phone (issue 12): choosing
a template fills the form at once, the preview looks like the status page and the e-mail, publishing says
who will be told and asks first; the public identity form; the status page names the incident publicly."""

import os

import pytest
from django.contrib.auth import get_user_model

from comms.models import Update, UpdateTemplate
from tests.comms.factories import SubscriberFactory
from tests.incidents.factories import ServiceFactory, SeverityFactory, declare

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

SHOTS = os.environ.get("SCREENSHOT_DIR", "")
INTERNAL = "Primary database CPU saturated"


def shot(page, name, width, height):
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{name}-{width}x{height}.png"), full_page=True)


def fits(page, selector):
    """Nothing in it pushes the page sideways (a phone)."""
    return page.locator(selector).first.evaluate("el => el.scrollWidth <= el.clientWidth + 1")


@pytest.mark.parametrize("width, height", [(1440, 900), (390, 844)])
def test_draft_from_a_template_preview_and_publish_with_confirmation(live_server, page, width, height):
    checkout = ServiceFactory(name="Checkout", slug="checkout", is_public=True)
    search = ServiceFactory(name="Search", slug="search", is_public=True)
    incident = declare(INTERNAL, severity=SeverityFactory(level=3), services=[checkout, search], actor=None)
    SubscriberFactory(email="ana@example.com")
    SubscriberFactory(channel="webhook", email="", url="https://hooks.example.com/status")
    get_user_model().objects.create_superuser("admin", "admin@example.com", "correct-horse-battery")
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/comms/update/add/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")

    # Choosing a template fills the text at once (no reload).
    page.wait_for_selector("#id_template")
    template = UpdateTemplate.objects.get(name="Identified")
    page.select_option("#id_template", str(template.pk))
    assert page.input_value("#id_title") == "Cause identified: {{ services }}"
    assert page.input_value("#id_public_status") == "identified"
    assert "{{ services }}" in page.input_value("#id_body")
    shot(page, "update-draft-template-filled", width, height)

    # The preview of a saved draft: the status page entry and the e-mail, side by side (stacked on a phone).
    update = Update.objects.create(
        incident=incident, audience="external", public_status="identified", template=template,
        title=template.title, body=template.body,
    )  # fmt: skip
    page.goto(f"{live_server.url}/admin/comms/update/{update.pk}/preview/")
    text = page.locator("#content").inner_text()
    assert "ON THE STATUS PAGE" in text.upper() and "Service disruption: Checkout and Search" in text
    assert "Cause identified: Checkout and Search" in text and INTERNAL not in text
    assert fits(page, "#content")
    shot(page, "update-preview", width, height)

    # Publishing asks first and says who will be told.
    page.goto(f"{live_server.url}/admin/comms/update/{update.pk}/change/")
    page.click("a[data-step=publish]")
    reach = page.locator(".publish-reach").inner_text()
    assert "2 recipients" in reach and "1 by e-mail" in reach and "1 by webhook" in reach
    assert fits(page, "#content")
    shot(page, "update-publish-confirm", width, height)
    page.click("input[type=submit][value=Publish]")
    page.wait_for_selector("text=published")
    update.refresh_from_db()
    assert update.status == "published"

    # The public identity form, then the status page with the public name.
    page.goto(f"{live_server.url}/admin/comms/update/public-identity/{incident.pk}/")
    page.fill("#id_public_title", "Slow checkout and search")
    page.fill("#id_public_impact", "Some searches and card payments take up to a minute.")
    shot(page, "update-public-identity", width, height)
    page.click("input[type=submit][value=Save]")
    page.goto(f"{live_server.url}/status/")
    status = page.locator("body").inner_text()
    assert "Slow checkout and search" in status and INTERNAL not in status and incident.reference not in status
    shot(page, "status-page-public-name", width, height)


@pytest.mark.parametrize("width, height", [(1440, 900), (390, 844)])
def test_the_review_queue_and_stakeholder_lists(live_server, page, width, height):
    from comms import services
    from comms.models import StakeholderList
    from tests.comms.factories import UpdateFactory
    from tests.incidents.factories import UserFactory

    checkout = ServiceFactory(name="Checkout", slug="checkout", is_public=True)
    incident = declare(INTERNAL, severity=SeverityFactory(level=2), services=[checkout], actor=None)
    writer = UserFactory(username="erin", groups=["Communications"])
    waiting = UpdateFactory(incident=incident, author=writer, title="Investigating: {{ services }}")
    services.update_submit(update=waiting, actor=writer)
    UpdateFactory(incident=incident, author=writer, title="A draft nobody submitted")
    execs = StakeholderList.objects.create(name="Executives", emails="cto@example.com\ncfo@example.com")
    execs.services.set([checkout])
    get_user_model().objects.create_superuser("admin", "admin@example.com", "correct-horse-battery")
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/comms/update/%3Freview%3Dmine")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    rows = page.locator("#result_list tbody").inner_text()
    assert "Investigating: Checkout" in rows and "A draft nobody submitted" not in rows  # rendered, queue only
    shot(page, "update-review-queue", width, height)
    page.goto(f"{live_server.url}/admin/comms/stakeholderlist/")
    assert "Executives" in page.locator("#result_list").inner_text()
    shot(page, "stakeholder-lists", width, height)
    page.goto(f"{live_server.url}/admin/comms/stakeholderlist/{execs.pk}/change/")
    assert fits(page, "#content-main")
    shot(page, "stakeholder-list-change", width, height)
