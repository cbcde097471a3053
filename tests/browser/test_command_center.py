"""The incident page as a command center, in a real browser at desk and phone width (issue 15).

The journey: a SEV1 is declared, the on-call responder acknowledges it, takes command, gives the
technical lead role, writes a note, marks it mitigated, then resolved. Screenshots go to
docs/screenshots/ (shown in the README).
"""

from pathlib import Path

import pytest

from incidents import services
from incidents.models import Incident, TimelineEvent
from tests.incidents.factories import SeverityFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORTS = {"desk": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
PASSWORD = "correct-horse-battery"


def log_in(page, base, username):
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def no_horizontal_scroll(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def shot(page, name, width, full_page=False):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=full_page)


@pytest.fixture
def people(db):
    # Everyone is a Responder (not a superuser): the person picker must work for them.
    oncall = UserFactory(username="omar.oncall", groups=["Responders"])
    tina = UserFactory(username="tina.techlead", groups=["Responders"])
    dana = UserFactory(username="dana.desk", groups=["Responders"])
    for user in (oncall, tina, dana):
        user.set_password(PASSWORD)
        user.save()
    return {"oncall": oncall, "tina": tina, "dana": dana}


@pytest.mark.parametrize("viewport", VIEWPORTS.values(), ids=VIEWPORTS.keys())
def test_declare_a_sev1_on_the_add_page_and_land_on_the_command_center(live_server, browser, people, viewport):
    SeverityFactory(level=1)
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    log_in(page, live_server.url, "omar.oncall")
    page.goto(f"{live_server.url}/admin/incidents/incident/add/")
    page.fill("#id_title", "Checkout returns 502 for every EU card payment")
    page.fill("#id_summary", "Payments provider timing out.")
    page.select_option("#id_severity", label="SEV1 Critical")
    page.click("input[name=_save]")
    page.wait_for_selector("#incident-header")
    header = page.inner_text("#incident-header")
    assert "SEV1" in header and "Checkout returns 502 for every EU card payment" in header
    assert page.is_visible("#composer textarea")
    context.close()


@pytest.mark.parametrize("viewport", VIEWPORTS.values(), ids=VIEWPORTS.keys())
def test_journey_acknowledge_take_command_assign_note_mitigate_resolve(live_server, browser, people, viewport):
    width = viewport["width"]
    sev1 = SeverityFactory(level=1)
    sev1.ack_target_minutes = 5
    sev1.save()
    # Monitoring declared it (no person yet): nobody has acknowledged it or taken command.
    incident = services.incident_declare(title="Checkout returns 502 for EU card payments", severity=sev1, actor=None)
    # The on-call schedule made dana commander; she is asleep, omar was paged too.
    services.role_assign(incident=incident, role="commander", user=people["dana"], actor=None)

    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    log_in(page, live_server.url, "omar.oncall")
    page.goto(f"{live_server.url}/admin/incidents/incident/{incident.pk}/change/")
    assert "unacknowledged for" in page.inner_text("#incident-header")
    assert no_horizontal_scroll(page), "the page scrolls sideways"

    page.fill("#composer textarea", "Paged at 03:12, looking at the payments dashboards.")
    page.click("#incident-actions button:has-text('Acknowledge')")
    page.wait_for_selector("text=acknowledged.")
    page.click("#incident-actions button:has-text('Take command')")
    page.wait_for_selector("text=You are now the commander")
    assert "commander omar.oncall" in page.inner_text("#incident-header")

    # Technical lead, picked with the admin's autocomplete.
    page.select_option("#role-form select[name=role]", "technical_lead")
    page.click("#role-form .select2-selection")
    page.fill(".select2-container--open .select2-search__field", "tina")
    page.click(".select2-results__option:has-text('tina.techlead')")
    page.click("#role-form button:has-text('Assign')")
    page.wait_for_selector("text=tina.techlead is now technical lead")

    page.fill("#composer textarea", "Provider confirms a bad deploy on their side; failing over to the backup PSP.")
    page.click("#incident-actions button:has-text('Add note')")
    page.wait_for_selector("text=Note added to the timeline")
    page.wait_for_selector("#panel-comms")  # the follow-up panels load after the page
    shot(page, "incident-page", width)
    shot(page, "incident-page-full", width, full_page=True)
    assert no_horizontal_scroll(page), "the page scrolls sideways"
    page.evaluate("window.scrollTo(0, 1500)")  # the header stays at the top while reading the timeline
    assert page.evaluate("window.scrollY") > 150
    assert abs(page.evaluate("document.getElementById('incident-header').getBoundingClientRect().top")) < 2

    page.fill("#composer textarea", "Backup PSP taking traffic, error rate back to normal.")
    page.click("button[data-to=mitigated]")
    page.wait_for_selector("text=is now mitigated")
    page.click("button[data-to=resolved]")
    page.wait_for_selector("text=is now resolved")
    header = page.inner_text("#incident-header")
    assert "Resolved" in header and "lasted" in header

    timeline = page.inner_text("#timeline-list")
    lines = [
        "Backup PSP taking traffic",
        "failing over to the backup PSP",
        "Technical lead: — → tina.techlead",
        "Incident commander: dana.desk → omar.oncall",
        "Paged at 03:12",
    ]
    positions = [timeline.index(line) for line in lines]
    assert positions == sorted(positions), "newest first"
    incident.refresh_from_db()
    assert incident.status == Incident.Status.RESOLVED and incident.commander == people["oncall"]
    assert incident.acknowledged_at <= incident.mitigated_at <= incident.resolved_at
    context.close()


def test_a_typed_note_survives_someone_else_changing_the_incident(live_server, browser, people):
    """Type a note; another responder moves the incident (the page shows it live); send: the note is there."""
    incident = services.incident_declare(title="Search is slow", severity=SeverityFactory(level=2), actor=None)
    context = browser.new_context(viewport=VIEWPORTS["desk"])
    page = context.new_page()
    log_in(page, live_server.url, "omar.oncall")
    page.goto(f"{live_server.url}/admin/incidents/incident/{incident.pk}/change/")
    page.click("#edit-details a:has-text('Edit details')")  # the stock form, opened on demand
    page.wait_for_selector("#id_title")
    page.fill("#composer textarea", "Index rebuild is at 40%.")
    page.fill("#id_title", "Search is slow (my edit)")

    services.incident_transition(incident=incident, to="responding", actor=people["dana"], note="Dana is on it")
    # Live: the new state and the other person's entry appear without a reload, and the open edit is warned.
    page.wait_for_selector("#incident-header .status-responding", timeout=15_000)
    page.wait_for_selector("#timeline-list >> text=Dana is on it")
    assert "Someone else changed this incident" in page.inner_text("#live-banner")
    assert page.input_value("#composer textarea") == "Index rebuild is at 40%."

    # Leaving with the edit typed asks first; the note button sends the note (the edit stays unsent).
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.type), dialog.dismiss()))
    page.click("#incident-actions button:has-text('Add note')")
    page.wait_for_timeout(500)
    assert dialogs == ["beforeunload"]
    assert not TimelineEvent.objects.filter(incident=incident, kind="note").exists()  # stayed on the page
    page.fill("#id_title", "Search is slow")  # undo the edit: nothing left unsent but the note
    page.click("#incident-actions button:has-text('Add note')")
    page.wait_for_selector("text=Note added to the timeline")
    assert "Index rebuild is at 40%." in page.inner_text("#timeline-list")
    assert TimelineEvent.objects.get(incident=incident, kind="note").body == "Index rebuild is at 40%."
    context.close()


def test_close_asks_for_confirmation_and_keeps_the_note(live_server, browser, people):
    incident = services.incident_declare(title="Blip", severity=SeverityFactory(level=3), actor=None)
    services.incident_transition(incident=incident, to="resolved", actor=people["dana"])
    context = browser.new_context(viewport=VIEWPORTS["phone"])
    page = context.new_page()
    log_in(page, live_server.url, "omar.oncall")
    page.goto(f"{live_server.url}/admin/incidents/incident/{incident.pk}/change/")
    page.fill("#composer textarea", "No customer impact, no review needed.")
    page.click("button[data-to=closed]")
    page.wait_for_selector("text=will be")
    assert page.input_value("textarea[name=note]") == "No customer impact, no review needed."
    shot(page, "incident-close-confirm", 390)
    incident.refresh_from_db()
    assert incident.status == Incident.Status.RESOLVED
    page.click("button:has-text('Yes, close')")
    page.wait_for_selector("text=is now closed")
    incident.refresh_from_db()
    assert incident.status == Incident.Status.CLOSED
    context.close()
