"""The status page under a spike: cached documents, ETags and CDN headers, and changes that show at once.

Transactional tests: the cache is only used outside a transaction (inside one, a connection may see
changes nobody else sees yet), which is how the web processes read it.
"""

import gzip
import threading
import time
from datetime import timedelta

import pytest
from django.core.cache import cache as django_cache
from django.core.cache.backends.base import BaseCache
from django.db import connections, transaction
from django.utils import timezone

from comms import services as comms_services
from comms.models import ScheduledMaintenance
from comms.status import cache, selectors, views
from incidents import services as incident_services
from incidents.models import ServiceGroup
from incidents_site import csp
from tests.comms.factories import maintenance_scheduled
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

# The documents customers and monitoring scripts hammer during an outage.
HOT = [
    "/status/",
    "/status/api/v2/summary.json",
    "/status/api/v2/status.json",
    "/status/api/v2/components.json",
    "/status/api/v2/incidents/unresolved.json",
]
JSON_DOCUMENTS = [path for path in HOT if path.endswith(".json")]


@pytest.fixture
def world(db):
    payments = ServiceGroup.objects.create(name="Payments", position=1)
    checkout = ServiceFactory(name="Checkout API", slug="checkout-api", is_public=True, group=payments)
    website = ServiceFactory(name="Website", slug="website", is_public=True)
    severity = SeverityFactory(level=3)
    severity.update_approval_required = False
    severity.save()
    writer = UserFactory(username="wendy", groups=["Communications"])
    return {"checkout": checkout, "website": website, "severity": severity, "writer": writer}


def publish(world, incident, *, status="investigating", title="Checkout is slow", body="We are looking into it.",
            components=None):  # fmt: skip
    """An external update through the services, as the admin and the API publish one; the incident is
    named publicly by the same title (its public identity, issue 12)."""
    comms_services.incident_public_identity_set(
        incident=incident, actor=world["writer"], public_title=title, public_impact=""
    )
    draft = comms_services.update_draft_create(
        incident=incident,
        actor=world["writer"],
        audience="external",
        public_status=status,
        title=title,
        body=body,
        components=components if components is not None else [(world["checkout"], "partial_outage")],
    )
    return comms_services.update_publish(update=draft, actor=world["writer"])


@pytest.fixture
def renders(monkeypatch):
    """The status pages built (selectors.status_page() calls): what rendering a document costs."""
    calls = []
    real = selectors.status_page

    def counted(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(selectors, "status_page", counted)
    return calls


def bodies(client):
    return {path: client.get(path).content.decode() for path in HOT}


def published_shows(title):
    """What each hot document shows of a published update (a partial outage of Checkout API)."""
    return {
        "/status/": title,
        "/status/api/v2/summary.json": title,
        "/status/api/v2/incidents/unresolved.json": title,
        "/status/api/v2/status.json": '"indicator": "major"',
        "/status/api/v2/components.json": '"partial_outage"',
    }


def next_requests_show(client, expected):
    """One request to each document: every one must already show its expected text."""
    stale = {path: text for path, text in expected.items() if text not in client.get(path).content.decode()}
    assert not stale, f"still stale: {stale}"


# ---- steady state: one cache read, no database ---------------------------------------------------------


@pytest.mark.parametrize("path", HOT)
def test_a_warm_document_is_served_without_touching_the_database(client, world, path, django_assert_num_queries):
    publish(world, declare("Checkout errors", severity=world["severity"], services=[world["checkout"]]))
    first = client.get(path)
    with django_assert_num_queries(0):
        again = client.get(path)
    assert again.status_code == 200 and again.content == first.content and again["ETag"] == first["ETag"]


def test_the_version_is_read_from_the_database_when_the_cache_lost_it(client, world, django_assert_num_queries):
    client.get("/status/api/v2/status.json")
    django_cache.delete(cache.VERSION_KEY)  # expired, evicted, or another process's cache
    with django_assert_num_queries(1):  # the version's row, not the page
        assert client.get("/status/api/v2/status.json").status_code == 200


# ---- headers for browsers and CDNs ---------------------------------------------------------------------


@pytest.mark.parametrize("path", HOT)
def test_documents_carry_an_etag_and_cdn_cache_control(client, world, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response["ETag"].startswith('"') and response["ETag"].endswith('"')
    directives = {d.strip() for d in response["Cache-Control"].split(",")}
    assert {"public", "max-age=30", "stale-while-revalidate=30", "stale-if-error=86400"} <= directives
    assert "Cookie" not in response.get("Vary", "") and not response.cookies


@pytest.mark.parametrize("path", HOT)
def test_if_none_match_answers_304_without_a_body(client, world, path):
    etag = client.get(path)["ETag"]
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = client.get(path, HTTP_IF_NONE_MATCH=sent)
        assert response.status_code == 304, sent
        assert response.content == b""
        assert response["ETag"] == etag and "max-age=30" in response["Cache-Control"]
        if path.endswith(".json"):
            assert response["Access-Control-Allow-Origin"] == "*"
    assert client.get(path, HTTP_IF_NONE_MATCH='"something-else"').status_code == 200


def test_a_warm_page_carries_its_csp_worked_out_once_when_it_was_rendered(client, world, monkeypatch):
    """The CSP hashes the page's inline styles: a scan of the whole page, done at render time only (per
    request it cost more than serving the page once an outage had run to a few hundred updates)."""
    publish(world, declare("Checkout errors", severity=world["severity"], services=[world["checkout"]]))
    first = client.get("/status/")
    scans = []
    real = csp.inline_style_sources
    monkeypatch.setattr(csp, "inline_style_sources", lambda content: scans.append(content) or real(content))
    again = client.get("/status/")
    assert again.content == first.content and scans == []
    assert again[csp.HEADER] == first[csp.HEADER] == csp.policy_header(again)
    assert "'sha256-" in again[csp.HEADER]  # the inline <style> block, allowed by its hash


@pytest.mark.parametrize("path", HOT)
def test_a_client_accepting_gzip_gets_the_copy_compressed_at_render_time(client, world, path, monkeypatch):
    publish(world, declare("Checkout errors", severity=world["severity"], services=[world["checkout"]]))
    plain = client.get(path)
    compressions = []
    real = gzip.compress
    monkeypatch.setattr(cache.gzip, "compress", lambda *args, **kw: compressions.append(1) or real(*args, **kw))
    zipped = client.get(path, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert zipped.status_code == 200 and zipped["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.content) == plain.content and compressions == []  # compressed once, earlier
    assert "Content-Encoding" not in plain and plain["Vary"] == zipped["Vary"] == "Accept-Encoding"
    assert zipped["ETag"] != plain["ETag"]  # two representations, two strong ETags
    assert client.get(path, HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=zipped["ETag"]).status_code == 304
    assert client.get(path, HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=plain["ETag"]).status_code == 200
    for refused in ("gzip;q=0", "identity", "br, *;q=0", "*, gzip; q=0"):
        response = client.get(path, HTTP_ACCEPT_ENCODING=refused)
        assert "Content-Encoding" not in response and response.content == plain.content, refused
    assert client.get(path, HTTP_ACCEPT_ENCODING="br;q=1, *;q=0.5")["Content-Encoding"] == "gzip"


def test_a_short_document_is_sent_as_it_is(rf):
    body = b'{"status": "ok"}'
    document = cache.rendered("", lambda: (200, "application/json", body))
    response = views._respond(rf.get("/status/api/v2/status.json", HTTP_ACCEPT_ENCODING="gzip"), document, cors=True)
    assert document.gzipped is None and response.content == body
    assert "Content-Encoding" not in response and "Vary" not in response


def test_the_etag_changes_with_the_content_and_only_then(client, world):
    publish(world, declare("Checkout errors", severity=world["severity"], services=[world["checkout"]]))
    before = client.get("/status/api/v2/summary.json")["ETag"]
    ServiceGroup.objects.create(name="Unused group")  # a change with nothing to show: same content
    assert client.get("/status/api/v2/summary.json")["ETag"] == before
    publish(world, declare("Website down", severity=world["severity"]), title="Website is down")
    response = client.get("/status/api/v2/summary.json", HTTP_IF_NONE_MATCH=before)
    assert response.status_code == 200 and response["ETag"] != before


@pytest.mark.parametrize("path", JSON_DOCUMENTS + ["/status/api/embed.json"])
def test_json_documents_answer_cross_origin_preflights(client, world, path):
    response = client.options(path, HTTP_ORIGIN="https://app.example.com",
                              HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
                              HTTP_ACCESS_CONTROL_REQUEST_HEADERS="if-none-match")  # fmt: skip
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "GET" in response["Access-Control-Allow-Methods"]
    assert "If-None-Match" in response["Access-Control-Allow-Headers"]
    get = client.get(path, HTTP_ORIGIN="https://app.example.com")
    assert get["Access-Control-Allow-Origin"] == "*" and "ETag" in get["Access-Control-Expose-Headers"]
    assert client.post(path).status_code == 405


# ---- changes show on every hot document within a second -------------------------------------------------
# In the process that made the change (and in every process sharing its cache: Redis in production) the
# very next request shows it; a process with a cache of its own sees it within VERSION_TTL (1 s).


def test_a_published_update_shows_on_the_next_request_to_every_document(client, world):
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    bodies(client)  # warm every document
    publish(world, incident, title="Card payments are failing")
    next_requests_show(client, published_shows("Card payments are failing"))


def test_a_resolution_shows_on_the_next_request_to_every_document(client, world):
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    publish(world, incident)
    docs = bodies(client)
    assert '"partial_outage"' in docs["/status/api/v2/components.json"]
    publish(world, incident, status="resolved", body="Fixed.", components=[(world["checkout"], "operational")])
    docs = bodies(client)
    assert '"indicator": "none"' in docs["/status/api/v2/status.json"]
    assert '"partial_outage"' not in docs["/status/api/v2/components.json"]
    assert '"incidents": []' in docs["/status/api/v2/summary.json"]
    assert '"incidents": []' in docs["/status/api/v2/incidents/unresolved.json"]
    assert "All Systems Operational" in docs["/status/"]


def test_publishing_the_resolving_update_shows_at_once(client, world):
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    publish(world, incident)
    assert '"incidents": []' not in client.get("/status/api/v2/incidents/unresolved.json").content.decode()
    incident_services.incident_transition(incident=incident, to="resolved", actor=world["writer"])
    # Resolving internally does not resolve publicly (issue 12): the resolving update does.
    assert client.get("/status/api/v2/incidents/unresolved.json").json()["incidents"] != []
    publish(world, incident, status="resolved", components=[(world["checkout"], "operational")])
    assert client.get("/status/api/v2/incidents/unresolved.json").json()["incidents"] == []
    assert client.get("/status/api/v2/status.json").json()["status"]["indicator"] == "none"


def test_a_maintenance_change_shows_on_the_next_request_to_every_document(client, world):
    maintenance = maintenance_scheduled(services=[world["website"]], name="Website move", starts_in=timedelta(0))
    assert "Website move" in client.get("/status/api/v2/summary.json").content.decode()  # upcoming
    bodies(client)
    comms_services.maintenance_transition(
        maintenance=maintenance, to=ScheduledMaintenance.Status.IN_PROGRESS, body="Started."
    )
    docs = bodies(client)
    assert '"under_maintenance"' in docs["/status/api/v2/components.json"]
    assert '"indicator": "maintenance"' in docs["/status/api/v2/status.json"]
    assert "Website move" in docs["/status/"]
    assert "Website move" in docs["/status/api/v2/summary.json"]


def test_a_component_change_shows_on_the_next_request_to_every_document(client, world):
    bodies(client)
    api = ServiceFactory(name="Public API", slug="public-api", is_public=False)
    api.is_public = True  # the admin's service form saves the row
    api.save()
    components = ("/status/", "/status/api/v2/summary.json", "/status/api/v2/components.json")
    next_requests_show(client, dict.fromkeys(components, "Public API"))
    world["website"].name = "Web shop"
    world["website"].save()
    next_requests_show(client, dict.fromkeys(components, "Web shop"))


def test_a_correction_shows_at_once(client, world):
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    original = publish(world, incident, body="Payments fail in the EU.")
    bodies(client)
    correction = comms_services.update_correct(update=original, actor=world["writer"], body="Payments fail in the US.")
    comms_services.update_publish(update=correction, actor=world["writer"])
    assert "Payments fail in the US." in client.get("/status/api/v2/summary.json").content.decode()
    assert "Payments fail in the US." in client.get("/status/").content.decode()


def test_another_process_with_its_own_cache_sees_a_change_within_a_second(client, world):
    """A process whose cache is not shared (the local-memory default) still holds the old version: it
    re-reads the version from the database once its copy expires (VERSION_TTL)."""
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    bodies(client)
    stale = django_cache.get(cache.VERSION_KEY)
    publish(world, incident, title="Card payments are failing")
    django_cache.set(cache.VERSION_KEY, stale, cache.VERSION_TTL)  # what the other process still has
    changed = time.monotonic()
    while True:  # a client polling: when does a request first get the new document?
        asked = time.monotonic() - changed
        if "Card payments are failing" in client.get("/status/api/v2/summary.json").content.decode():
            break
        assert asked < cache.VERSION_TTL + 1, "never shown"
        time.sleep(0.02)
    assert asked <= cache.VERSION_TTL + 0.1  # a request made a second after the change shows it
    next_requests_show(client, published_shows("Card payments are failing"))  # and so do the other documents


def test_a_change_rolled_back_never_reaches_the_cache(client, world):
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    client.get("/status/api/v2/summary.json")
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(world, incident, title="Never published")
        assert "Never published" in client.get("/status/api/v2/summary.json").content.decode()  # its own view
        raise RuntimeError
    assert "Never published" not in client.get("/status/api/v2/summary.json").content.decode()


# ---- a spike after a change: readers do not render -----------------------------------------------------


def test_after_a_change_the_next_requests_render_nothing(client, world, renders, django_assert_max_num_queries):
    """The process that published re-rendered the documents being read right after the commit."""
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    bodies(client)  # warm: customers are reading every hot document
    publish(world, incident, title="Card payments are failing")
    renders.clear()
    with django_assert_max_num_queries(1):  # the version's row, read once into the cache
        next_requests_show(client, published_shows("Card payments are failing"))
    assert renders == []


def test_a_change_renders_each_page_being_read_once(client, world, renders):
    """The four v2 documents showing the same page share one build of it."""
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    bodies(client)
    renders.clear()
    publish(world, incident, title="Card payments are failing")
    assert sorted(call["incidents"] or "" for call in renders) == ["", "history"]


def test_one_commit_renders_once_however_many_public_rows_it_saved(client, world, renders):
    client.get("/status/api/v2/components.json")
    renders.clear()
    with transaction.atomic():
        for service, name in ((world["website"], "Web shop"), (world["checkout"], "Checkout")):
            service.name = name
            service.save()
    assert len(renders) == 1
    assert "Web shop" in client.get("/status/api/v2/components.json").content.decode() and len(renders) == 1


def test_a_change_renders_nothing_nobody_reads(client, world, renders):
    client.get("/status/api/v2/status.json")
    renders.clear()
    publish(world, declare("Checkout errors", severity=world["severity"], services=[world["checkout"]]))
    assert len(renders) == 1  # status.json, right after the commit
    assert client.get("/status/").status_code == 200 and len(renders) == 2  # the page, on its first request


def test_while_one_process_renders_the_others_serve_the_previous_copy(
    client, world, monkeypatch, renders, django_assert_num_queries
):
    old = client.get("/status/api/v2/summary.json").content
    # A change made by a process that does not share this cache: here only the version is new.
    monkeypatch.setattr(cache, "refresh", lambda renders: cache.new_version())
    publish(world, declare("Checkout errors", severity=world["severity"], services=[world["checkout"]]))
    django_cache.add(cache.RENDER_LOCK_KEY.format("summary"), 1, 10)  # someone else is rendering it
    renders.clear()
    with django_assert_num_queries(1):  # the new version's row
        assert client.get("/status/api/v2/summary.json").content == old
    assert renders == []
    django_cache.delete(cache.RENDER_LOCK_KEY.format("summary"))
    assert "Checkout is slow" in client.get("/status/api/v2/summary.json").content.decode()


@pytest.mark.parametrize("copy", ["none", "previous"])
def test_concurrent_requests_for_a_document_render_it_once(world, copy):
    """With no copy, the others wait for that one render; with a previous one, they serve it meanwhile."""
    django_cache.set(cache.VERSION_KEY, "new", 60)
    if copy == "previous":
        django_cache.set(cache.DOCUMENT_KEY.format("probe"), cache.rendered("old", lambda: (200, "text/plain", b"old")))
    calls, bodies_, started = [], [], threading.Barrier(8)

    def render():
        calls.append(1)
        time.sleep(0.3)
        return 200, "text/plain", b"new"

    def ask():
        started.wait()
        try:
            bodies_.append(cache.cached_document("probe", render).body)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(bodies_) == ([b"new"] * 8 if copy == "none" else [b"new"] + [b"old"] * 7)
    assert cache.cached_document("probe", render).body == b"new" and len(calls) == 1


# ---- the cache is down: the database answers -----------------------------------------------------------


class BrokenCache(BaseCache):
    """A cache server that does not answer."""

    def __init__(self, location, params):
        super().__init__(params)

    def _fail(self, *args, **kwargs):
        raise ConnectionError("cache server unreachable")

    add = get = set = touch = delete = get_many = set_many = delete_many = clear = has_key = _fail


def test_with_the_cache_down_pages_are_rendered_from_the_database(client, world, settings):
    publish(world, declare("Checkout errors", severity=world["severity"], services=[world["checkout"]]))
    settings.CACHES = {"default": {"BACKEND": "tests.comms.test_status_cache.BrokenCache"}}
    for path in HOT:
        response = client.get(path)
        assert response.status_code == 200 and response["ETag"]
    assert "Checkout is slow" in client.get("/status/api/v2/summary.json").content.decode()
    publish(world, declare("Website down", severity=world["severity"]), title="Website is down")
    assert "Website is down" in client.get("/status/").content.decode()


def test_documents_are_rendered_again_after_status_page_cache_seconds(client, world, settings, renders):
    """Nothing committed, but time moves (the 90-day history window): a copy is served at most this long
    (and after that only to requests arriving while it is being rendered again)."""
    settings.STATUS_PAGE_CACHE_SECONDS = 1
    client.get("/status/api/v2/status.json")
    client.get("/status/api/v2/status.json")
    assert len(renders) == 1
    time.sleep(1.1)
    client.get("/status/api/v2/status.json")
    assert len(renders) == 2


def test_changes_to_incidents_the_public_cannot_see_leave_the_cache_alone(client, world):
    client.get("/status/")
    version = django_cache.get(cache.VERSION_KEY)
    incident = declare("Internal only", severity=world["severity"], services=[world["checkout"]])  # no public update
    incident_services.incident_transition(incident=incident, to="triaging", actor=world["writer"], at=timezone.now())
    assert django_cache.get(cache.VERSION_KEY) == version  # private changes leave the cached page alone


def test_a_public_incidents_services_are_a_change_and_a_private_ones_are_not(client, world):
    """The public name of an incident without a public title comes from its public services."""
    public = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    publish(world, public)
    private = declare("Internal only", severity=world["severity"], services=[world["checkout"]])
    client.get("/status/")
    version = django_cache.get(cache.VERSION_KEY)
    private.services.add(world["website"])
    assert django_cache.get(cache.VERSION_KEY) == version
    public.services.add(world["website"])
    assert django_cache.get(cache.VERSION_KEY) is None  # dropped: the next request reads the new version


def test_an_incident_restricted_since_is_not_served_from_the_cache(client, world):
    incident = declare("Checkout errors", severity=world["severity"], services=[world["checkout"]])
    publish(world, incident)
    public_id = client.get("/status/api/v2/summary.json").json()["incidents"][0]["id"]
    page = f"/status/incidents/{public_id}/"
    assert client.get(page).status_code == 200
    incident_services.incident_restriction_set(incident=incident, restricted=True, actor=world["writer"])
    assert client.get(page).status_code == 404
    assert django_cache.get(cache.DOCUMENT_KEY.format(f"incident:{public_id}")) is None  # nobody serves it
    assert client.get("/status/api/v2/summary.json").json()["incidents"] == []
