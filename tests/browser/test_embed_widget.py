"""The in-app widget in a real browser, embedded by a page of another origin under a strict CSP.

The host page is served by a second local server (127.0.0.1, a free port) and embeds
/status/embed.js from the product's live server (localhost, another port) with one script tag. Its
Content-Security-Policy allows nothing inline: only the product's origin for scripts and fetches.
Screenshots go to var/screenshots/embed-*.png.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from comms import services as comms_services
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
REFRESH_SECONDS = 1
BANNER = "[data-status-banner]"
HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme shop</title><link rel="stylesheet" href="/host.css"></head>
<body><header><h1>Acme shop</h1></header><main><p>Your basket is empty.</p></main>
<script src="{status}/status/embed.js" data-components="checkout" data-refresh="{refresh}" async></script>
</body></html>"""
HOST_CSS = "body { margin: 0; font-family: Georgia, serif; } header { background: #222; color: #fff; padding: 1rem; }"


def host_csp(status_origin):
    return (
        f"default-src 'none'; script-src {status_origin}; connect-src {status_origin}; "
        "style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@pytest.fixture
def host_page(live_server):
    """Another origin's page embedding the widget; yields its URL."""
    page_body = HOST_PAGE.format(status=live_server.url, refresh=REFRESH_SECONDS).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            body, kind = (HOST_CSS.encode(), "text/css") if self.path == "/host.css" else (page_body, "text/html")
            self.send_response(200)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Security-Policy", host_csp(live_server.url))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def world(db, live_server, settings):
    settings.SITE_URL = live_server.url  # the public links the documents carry
    severity = SeverityFactory(level=2)
    severity.update_approval_required = False
    severity.save()
    return {
        "checkout": ServiceFactory(name="Checkout API", slug="checkout", is_public=True),
        "search": ServiceFactory(name="Search", slug="search", is_public=True),
        "severity": severity,
        "writer": UserFactory(username="wendy", groups=["Communications"]),
    }


def publish(world, incident, *, status, title, component_status):
    draft = comms_services.update_draft_create(
        incident=incident, actor=world["writer"], audience="external", public_status=status, title=title,
        body="Details on the status page.", components=[(world["checkout"], component_status)],
    )  # fmt: skip
    return comms_services.update_publish(update=draft, actor=world["writer"])


def watch(page):
    """Console errors, CSP violations and the widget's requests, as the test goes."""
    seen = {"errors": [], "requests": []}
    page.on("console", lambda msg: seen["errors"].append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda request: seen["requests"].append(request))
    return seen


def shoot(page, name, width, height):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": width, "height": height})
    page.screenshot(path=str(SCREENSHOTS / f"embed-{name}-{width}.png"))


def test_banner_appears_on_another_origin_and_goes_away_when_resolved(live_server, host_page, page, world, client):
    # A cookie of the status page's origin must never travel with the widget's requests.
    page.context.add_cookies([{"name": "sessionid", "value": "someone", "url": live_server.url}])
    seen = watch(page)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(host_page)
    page.wait_for_function("document.querySelector('[data-status-embed]') !== null")
    region = page.locator("[data-status-embed] [role=status]")
    assert region.get_attribute("aria-live") == "polite"
    assert page.locator(BANNER).count() == 0  # nothing is wrong yet

    incident = declare("INC internal: pg failover", severity=world["severity"], services=[world["checkout"]])
    publish(world, incident, status="identified", title="Card payments are failing", component_status="major_outage")
    published = time.monotonic()
    banner = page.locator(BANNER)
    banner.wait_for(state="visible", timeout=(REFRESH_SECONDS + 4) * 1000)
    assert time.monotonic() - published <= REFRESH_SECONDS + 4
    name = client.get("/status/api/v2/summary.json").json()["incidents"][0]["name"]  # the page's public name
    text = banner.inner_text()
    assert name in text and "Identified" in text  # its public title and public status
    assert "INC" not in text and "pg failover" not in text
    link = banner.locator("a")
    assert link.get_attribute("href").startswith(f"{live_server.url}/status/incidents/")
    box = banner.bounding_box()
    assert box["width"] > 600 and box["y"] < 20  # a real banner at the top, not collapsed
    shoot(page, "open", 1440, 900)
    shoot(page, "open", 390, 844)
    box = banner.bounding_box()
    assert box["width"] <= 390 and box["height"] < 200  # wraps on a phone, inside the screen

    publish(world, incident, status="resolved", title="Card payments are failing", component_status="operational")
    page.locator(BANNER).wait_for(state="detached", timeout=(REFRESH_SECONDS + 4) * 1000)
    shoot(page, "resolved", 390, 844)

    widget_requests = [r for r in seen["requests"] if "/status/api/embed.json" in r.url]
    assert widget_requests, "the widget never asked for its document"
    assert all("cookie" not in r.all_headers() for r in widget_requests)
    assert not [e for e in seen["errors"] if "Content Security Policy" in e or "status embed" in e], seen["errors"]


def test_a_dismissed_banner_stays_away_until_the_next_update(live_server, host_page, page, world, client):
    seen = watch(page)
    incident = declare("Checkout slow", severity=world["severity"], services=[world["checkout"]])
    publish(world, incident, status="investigating", title="Checkout is slow", component_status="degraded_performance")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(host_page)
    banner = page.locator(BANNER)
    banner.wait_for(state="visible", timeout=(REFRESH_SECONDS + 4) * 1000)
    assert "Investigating" in banner.inner_text()
    name = client.get("/status/api/v2/summary.json").json()["incidents"][0]["name"]  # the page's public name
    page.get_by_role("button", name=f"Dismiss: {name}").click()
    assert banner.count() == 0
    time.sleep(REFRESH_SECONDS * 2.5)  # several refreshes later it is still dismissed
    assert page.locator(BANNER).count() == 0

    publish(world, incident, status="monitoring", title="Checkout is slow", component_status="operational")
    page.locator(BANNER).wait_for(state="visible", timeout=(REFRESH_SECONDS + 4) * 1000)
    assert "Monitoring" in page.locator(BANNER).inner_text()  # news is shown again
    shoot(page, "monitoring", 390, 844)
    assert not [e for e in seen["errors"] if "Content Security Policy" in e], seen["errors"]
