"""Restricted incidents (issue 7): the evidence matrix.

Every admin page and every API operation is found by walking the URL conf (``admin.site``'s
registry and each ModelAdmin's ``get_urls()``) and the published OpenAPI schema, so a page or an
endpoint added later is covered without anyone listing it here. An outsider (staff, a responder,
with every permission but "view all restricted incidents") must learn nothing of a restricted
incident anywhere: its title, summary, reference, notes, alerts and payloads never appear, and its
pages answer 404 (the API, never 403) or the admin's "doesn't exist" redirect. Its role holders
(present and past), its members, holders of the global permission and superusers see it.
"""

import json
import re
from datetime import UTC, timedelta
from urllib.parse import quote, urlencode

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db.models import ForeignKey
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from comms.services import update_draft_create
from incidents import ingestion, services
from incidents.ingestion import label_fingerprint
from incidents.models import (
    Alert,
    AlertGroup,
    AlertPayload,
    Incident,
    IncidentMember,
    RoleAssignment,
    TimelineEvent,
    references_hidden_from,
    references_redacted,
    visible_incident_rows,
)
from incidents_site.api_urls import router
from postmortems.models import Review
from postmortems.services import action_item_create
from tests.api import api_client_for as api_client
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

MARKER = "Quokka7731"  # in the restricted incident's title, summary, note, alert labels and group key
NOTE = f"Forensics found {MARKER} in the payroll export"
ADMIN_PREFIX = "/admin/"
Kind = TimelineEvent.Kind


# ---- the world ----------------------------------------------------------------------------------


def _iso(dt):
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _am_body(*alertnames, starts, status="firing"):
    alerts = []
    for name in alertnames:
        labels = {"alertname": name, "severity": "critical", "team": f"sec-{MARKER}"}
        alerts.append(
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": f"{name} fired", "description": f"Exfiltration pattern {MARKER}."},
                "startsAt": _iso(starts),
                "endsAt": _iso(timezone.now()) if status == "resolved" else "0001-01-01T00:00:00Z",
                "fingerprint": label_fingerprint(labels),
            }
        )
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{team="sec-{MARKER}"}}',
            "status": status,
            "receiver": "incidents",
            "groupLabels": {"team": f"sec-{MARKER}"},
            "commonLabels": {"team": f"sec-{MARKER}", "severity": "critical"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        }
    ).encode()


def _staff(username, **kwargs):
    """Staff in the Responders group with every permission of the project's apps but the global one."""
    user = UserFactory(username=username, groups=["Responders"], **kwargs)
    perms = Permission.objects.filter(content_type__app_label__in=("incidents", "postmortems", "comms", "auth"))
    user.user_permissions.add(*perms.exclude(codename="view_restricted_incident"))
    return user


class World:
    pass


@pytest.fixture
def world(db, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    cache.clear()
    ingestion.integration_cache_clear()
    for level in (1, 2, 3, 4):
        SeverityFactory(level=level)
    w = World()
    w.service = ServiceFactory(slug="payroll", name="Payroll")
    w.lead = _staff("lena")
    w.outsider = _staff("otto")
    w.participant = _staff("pia")
    w.past_holder = _staff("paul")
    w.member = _staff("mona")
    w.global_viewer = _staff("gus")
    w.global_viewer.user_permissions.add(Permission.objects.get(codename="view_restricted_incident"))
    w.superuser = UserFactory(username="sue", is_superuser=True)

    # An alert opens the incident; a responder restricts it; later posts keep following it.
    starts = timezone.now() - timedelta(minutes=5)
    w.starts = starts
    w.integration, w.key = ingestion.integration_create(
        kind="alertmanager", name="Alertmanager sec", services=[w.service]
    )
    _payload, result = ingestion.post_receive(
        kind="alertmanager", body=_am_body(f"Payroll{MARKER}", starts=starts), headers={}, key=w.key
    )
    incident = result.incident
    services.incident_restriction_set(incident=incident, restricted=True, actor=w.lead, note="Security matter")
    services.incident_update(
        incident=incident,
        actor=w.lead,
        title=f"Payroll data exposure {MARKER}",
        summary=f"Customer records reachable; see {MARKER}.",
    )
    services.role_assign(incident=incident, role="commander", user=w.participant, actor=w.lead)
    services.role_assign(incident=incident, role="scribe", user=w.past_holder, actor=w.lead)
    scribe = RoleAssignment.objects.get(incident=incident, user=w.past_holder)
    services.role_relieve(assignment=scribe, actor=w.lead)
    services.incident_member_add(incident=incident, user=w.member, actor=w.lead)
    services.timeline_note_add(incident=incident, actor=w.participant, body=NOTE)
    # Ingestion keeps working on the restricted incident (system actor): a new alert joins it.
    _payload2, result2 = ingestion.post_receive(
        kind="alertmanager", body=_am_body(f"Payroll{MARKER}", f"Ledger{MARKER}", starts=starts), headers={}, key=w.key
    )
    assert result2.incident.pk == incident.pk and not result2.incident_created
    w.restricted = Incident.objects.get(pk=incident.pk)
    w.reference = w.restricted.reference
    w.open = declare("Search is slow", severity=SeverityFactory(level=3), actor=w.lead, services=[w.service])
    # An open incident linked to the restricted one by someone who may see both: the link must not
    # show the restricted incident to those who may not.
    w.open = services.incident_update(incident=w.open, actor=w.participant, recurrence_of=w.restricted)
    w.dup = declare("Payroll alert seen twice", severity=SeverityFactory(level=3), actor=w.lead)
    w.dup = services.incident_transition(incident=w.dup, to="dismissed", actor=w.participant, duplicate_of=w.restricted)
    w.linked = (w.open, w.dup)
    # Rows of the other apps that belong to these incidents, so the matrix reaches their pages too.
    Review.objects.create(incident=w.restricted, root_cause=f"The export job {MARKER} ran unchecked.")
    for incident in w.linked:
        Review.objects.create(incident=incident, root_cause="A slow query.")
    for incident, words in ((w.restricted, f"Payroll {MARKER}"), (w.open, "Search")):
        action_item_create(incident=incident, title=f"Lock down {words}", actor=w.superuser)
        update_draft_create(
            incident=incident,
            actor=w.superuser,
            audience="external",
            public_status="investigating",
            title=f"{words} issue",
            body=f"We are looking into {words}.",
        )
        services.customer_report_create(
            actor=w.superuser, customer_id=f"acme-{incident.pk}", incident=incident, text=f"{words} is broken"
        )
    return w


def leaks(w, text, query=None):
    """What of the restricted incident shows in a response body (empty when nothing does).

    The search term a request sent is echoed back (the search box, links that keep the filters):
    those echoes are not leaks, and are taken out first.
    """
    for value in (query or {}).values():
        if value:
            text = text.replace(f'value="{value}"', "")
            text = re.sub(rf"(=|%3D){re.escape(quote(value, safe=''))}(?![\w-])", "", text)
    found = []
    if MARKER.lower() in text.lower():
        found.append(MARKER)
    if re.search(rf"\b{re.escape(w.reference)}\b", text, re.IGNORECASE):
        found.append(w.reference)
    if reverse("admin:incidents_incident_change", args=[w.restricted.pk]) in text:
        found.append("link to its admin page")
    if f"/api/v1/incidents/{w.restricted.pk}/" in text:
        found.append("link to its API URL")
    return found


def snapshot(w):
    """Everything a write could change on the restricted incident."""
    incident = Incident.objects.get(pk=w.restricted.pk)
    return (
        incident.version,
        incident.status,
        incident.duplicate_of_id,
        TimelineEvent.objects.filter(incident=incident).count(),
        RoleAssignment.objects.filter(incident=incident).count(),
        IncidentMember.objects.filter(incident=incident).count(),
        Alert.objects.filter(incident=incident).count(),
        AlertGroup.objects.filter(incident=incident).count(),
        AlertPayload.objects.filter(incident=incident).count(),
    )


# ---- the admin matrix ---------------------------------------------------------------------------


def attached_objects(w, model, incident=None):
    """Primary keys of rows of `model` that belong to the restricted incident (or `incident`), found from the
    model's fields."""
    incident = incident or w.restricted
    if issubclass(model, Incident):
        return [incident.pk]
    pks = set()
    for field in model._meta.get_fields():
        if isinstance(field, ForeignKey) and issubclass(field.related_model, Incident):
            pks.update(model._default_manager.filter(**{field.name: incident}).values_list("pk", flat=True))
    return sorted(pks)


def admin_pages(w):
    """(model_admin, changelist URL, [object URLs with the restricted incident's rows substituted])."""
    pages = []
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        object_urls = []
        for pk in attached_objects(w, model):
            for pattern in model_admin.get_urls():
                route = str(pattern.pattern)
                if "<path:object_id>" not in route:
                    continue
                object_urls.append(changelist + route.replace("<path:object_id>", quote(str(pk))))
        pages.append((model_admin, changelist, object_urls))
    return pages


def changelist_queries(w, model_admin):
    queries = [{}, {"_popup": "1", "_to_field": "id"}]
    if model_admin.search_fields:
        queries += [{"q": MARKER}, {"q": w.reference}, {"q": str(w.restricted.pk)}]
    if issubclass(model_admin.model, Incident):
        queries.append({"is_restricted__exact": "1"})
    return queries


def autocomplete_urls(w):
    """The admin's autocomplete endpoint, for every autocomplete field of every registered admin."""
    urls = []
    for model, model_admin in admin.site._registry.items():
        for field_name in model_admin.autocomplete_fields:
            for term in (MARKER, w.reference, ""):
                query = {
                    "app_label": model._meta.app_label,
                    "model_name": model._meta.model_name,
                    "field_name": field_name,
                    "term": term,
                }
                urls.append(f"{ADMIN_PREFIX}autocomplete/?{urlencode(query)}")
    return urls


GHOST_PK = "987654321"


def ghost_url(url):
    """The same page for an object that does not exist."""
    return re.sub(r"^(/admin/\w+/\w+/)[^/]+/", rf"\g<1>{GHOST_PK}/", url)


def _outcome(response):
    return response.status_code, [ghost_url(path) for path, _status in response.redirect_chain]


def _hidden(response):
    """A 404, or the admin's redirect to its index saying the object doesn't exist."""
    if response.status_code in (404, 405):
        return True
    if response.redirect_chain and response.request["PATH_INFO"] == ADMIN_PREFIX:
        return "doesn’t exist" in response.content.decode()
    return False


def _may_open(user, model_admin):
    opts = model_admin.model._meta
    return any(user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}") for action in ("view", "change"))


def test_admin_matrix_outsider_sees_nothing(world, client):
    w = world
    client.force_login(w.outsider)
    before = snapshot(w)
    exercised, object_pages = 0, 0
    for model_admin, changelist, object_urls in admin_pages(w):
        if not _may_open(w.outsider, model_admin):
            continue  # a page refused with 403 shows nothing (the beat schedule, say)
        for query in changelist_queries(w, model_admin):
            response = client.get(changelist, query)
            exercised += 1
            assert response.status_code == 200, (changelist, query, response.status_code)
            found = leaks(w, response.content.decode(), query)
            assert not found, (changelist, query, found)
        for url in object_urls:
            object_pages += 1
            # Writes too (transition, acknowledge and duplicate answer only POST): nothing happens.
            data = {"to": "dismissed", "original": w.open.reference, "note": "x", "post": "yes"}
            for method in ("get", "post"):
                response = getattr(client, method)(url, data if method == "post" else None, follow=True)
                exercised += 1
                assert not leaks(w, response.content.decode()), (method, url, leaks(w, response.content.decode()))
                # Answered exactly as for an id that exists nowhere (the incident's delete page is a
                # 403 for everyone: incidents are never deleted).
                ghost = getattr(client, method)(ghost_url(url), data if method == "post" else None, follow=True)
                assert _outcome(response) == _outcome(ghost), (method, url, _outcome(response), _outcome(ghost))
                assert _hidden(response) or response.status_code == 403, (method, url, _outcome(response))
    for url in autocomplete_urls(w):
        response = client.get(url)
        exercised += 1
        assert response.status_code == 200, (url, response.status_code)
        assert not leaks(w, response.content.decode()), (url, leaks(w, response.content.decode()))
    # The index, and the pages of the unrestricted incidents linked to it (as a recurrence, as a
    # duplicate): the links show only to those who may see the restricted incident.
    linked_pages = [
        reverse(f"admin:incidents_{name}", args=[incident.pk])
        for incident in w.linked
        for name in ("incident_change", "incident_history")
    ]
    for url in (ADMIN_PREFIX, f"{ADMIN_PREFIX}incidents/", *linked_pages):
        response = client.get(url)
        exercised += 1
        assert response.status_code == 200, (url, response.status_code)
        assert not leaks(w, response.content.decode()), (url, leaks(w, response.content.decode()))
    assert snapshot(w) == before
    # Saving the open incident's page keeps the link the outsider could not see (nor remove).
    data = {
        "title": "Search is slow for everyone",
        "summary": "",
        "severity": w.open.severity_id,
        "services": [w.service.pk],
        "detected_at_0": w.open.detected_at.strftime("%Y-%m-%d"),
        "detected_at_1": w.open.detected_at.strftime("%H:%M:%S"),
        "recurrence_of": "",  # the widget shows no choice, so the browser sends none
        "loaded_version": w.open.version,
    }
    for prefix in ("role_assignments", "role_assignments-2", "members", "members-2", "timeline", "timeline-2"):
        data.update({f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0})
    response = client.post(reverse("admin:incidents_incident_change", args=[w.open.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    w.open.refresh_from_db()
    assert w.open.title == "Search is slow for everyone" and w.open.recurrence_of_id == w.restricted.pk
    # …and naming the restricted incident by its id in the form is refused like an unknown id.
    data.update(title="Another", loaded_version=w.open.version, recurrence_of=str(w.restricted.pk))
    response = client.post(reverse("admin:incidents_incident_add"), data)
    assert response.status_code == 200 and "recurrence_of" in response.context["adminform"].form.errors
    assert not leaks(w, response.content.decode())
    # The walk really found the incident's pages and its alert records, not an empty registry.
    assert object_pages >= 15 and exercised >= 100, (object_pages, exercised)


def test_admin_outsider_cannot_mark_a_duplicate_of_a_restricted_incident(world, client):
    w = world
    client.force_login(w.outsider)
    url = reverse("admin:incidents_incident_duplicate", args=[w.open.pk])
    response = client.post(url, {"original": w.reference, "note": ""})
    assert response.status_code == 200
    assert "No incident has this reference." in response.content.decode()
    assert Incident.objects.get(pk=w.open.pk).duplicate_of_id is None


@pytest.mark.parametrize("who", ["participant", "past_holder", "member", "global_viewer", "superuser"])
def test_admin_matrix_those_allowed_see_it(world, client, who):
    w = world
    client.force_login(getattr(w, who))
    for _model_admin, changelist, object_urls in admin_pages(w):
        if object_urls:  # a list that holds one of the incident's rows shows it
            response = client.get(changelist)
            assert response.status_code == 200
            assert leaks(w, response.content.decode()), (who, changelist)
        for url in object_urls:
            if url.endswith(
                ("/transition/", "/acknowledge/", "/take-command/", "/note/", "/role/", "/relieve/", "/delete/")
            ):
                continue  # writes (POST only), and the incident can't be deleted by anyone
            response = client.get(url, follow=True)
            assert response.status_code == 200 and not response.redirect_chain[-1:] == [(ADMIN_PREFIX, 302)], (
                who,
                url,
            )
    response = client.get(reverse("admin:incidents_incident_change", args=[w.restricted.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert MARKER in body and w.reference in body and NOTE in body
    autocomplete = f"{ADMIN_PREFIX}autocomplete/?" + urlencode(
        {"app_label": "incidents", "model_name": "incident", "field_name": "recurrence_of", "term": MARKER}
    )
    assert MARKER in client.get(autocomplete).content.decode()
    assert (
        w.reference in client.get(reverse("admin:incidents_incident_changelist"), {"q": w.reference}).content.decode()
    )


# ---- the API matrix -----------------------------------------------------------------------------


@pytest.fixture
def schema(world):
    client = Client()
    client.force_login(world.superuser)
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def operations(schema):
    """(method, path template, operation) for every operation of the API (not the ingestion endpoints)."""
    for path, item in schema["paths"].items():
        if path.startswith("/api/v1/integrations/"):
            continue  # senders authenticate with an integration key, not as a user
        if not _path_about_incidents(path):
            continue  # subscribers, webhook endpoints, templates: nothing of an incident to leak
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method, path.replace("{incident_pk}", "{id}"), operation  # both name the incident


def api_object_id(w, path, incident):
    """What `{id}` stands for in `path`: the incident's own id, or the id of the row of the path's resource
    (a review, an action item, …) that belongs to the incident, found from the API router."""
    model = _path_model(path)
    if model is not None and not issubclass(model, Incident):
        pks = attached_objects(w, model, incident)
        return pks[0] if pks else GHOST_PK
    return incident.pk


def _path_model(path):
    """The model behind an API path, from the router (None for paths outside it, e.g. metrics)."""
    for prefix, viewset, _basename in router.registry:
        if path.startswith(f"/api/v1/{prefix}/") and getattr(viewset, "queryset", None) is not None:
            return viewset.queryset.model
    return None


def _path_about_incidents(path):
    model = _path_model(path)
    return model is None or issubclass(model, Incident) or any(
        isinstance(field, ForeignKey) and issubclass(field.related_model, Incident) for field in model._meta.get_fields()
    )


def fill(w, path):
    path = path.replace("{id}", str(api_object_id(w, path, w.restricted)))
    # A role assignment and a member of the restricted incident (relieve a role, remove a member).
    assignment = RoleAssignment.objects.filter(incident=w.restricted).order_by("pk").first()
    path = path.replace("{assignment_id}", str(assignment.pk)).replace("{username}", w.member.username)
    return path.replace("{slug}", w.service.slug).replace("{level}", "1")


def write_body(w, path, method):
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return {
        "transition": {"to": "dismissed", "note": "x"},
        "acknowledge": {"note": "x"},
        "timeline": {"body": "outsider note"},
        "roles": {"role": "expert", "user": w.outsider.username},
        "members": {"user": w.outsider.username},
        "relieve": {},
    }.get(last, {"title": "Renamed by an outsider", "restricted": False} if method == "patch" else {})


def list_queries(w, operation):
    names = {p["name"] for p in operation.get("parameters", ()) if p.get("in") == "query"}
    queries = [{}]
    if "search" in names:
        queries += [{"search": MARKER}, {"search": w.reference}]
    if "service" in names:
        queries.append({"service": w.service.slug})
    return queries


def test_api_matrix_outsider_gets_404_and_sees_nothing(world, schema):
    w = world
    client = api_client(w.outsider)
    before = snapshot(w)
    exercised = set()
    for method, path, operation in operations(schema):
        url = fill(w, path)
        if method == "get":
            for query in list_queries(w, operation) if "{" not in path else [{}]:
                response = client.get(url, query)
                found = leaks(w, response.content.decode(), query)
                assert not found, (method, url, query, found)
                if "{id}" in path:
                    assert response.status_code == 404, (method, url, response.status_code)
                else:
                    assert response.status_code == 200, (method, url, response.status_code)
        elif "{id}" in path:
            response = getattr(client, method)(url, write_body(w, path, method), format="json")
            assert response.status_code == 404, (method, url, response.status_code, response.content)
            assert not leaks(w, response.content.decode())
        else:
            continue  # creating services etc. is not about an incident; declaring is checked below
        exercised.add((method, path))
    # The unrestricted incidents linked to it: readable, without the link.
    for incident in w.linked:
        for method, path, _operation in operations(schema):
            if method == "get" and "{id}" in path:
                object_id = api_object_id(w, path, incident)
                if object_id == GHOST_PK:
                    continue  # no row of that resource on this incident
                response = client.get(path.replace("{id}", str(object_id)))
                assert response.status_code == 200, (path, incident, response.status_code)
                found = leaks(w, response.content.decode())
                assert not found, (path, incident.reference, found)
        detail = client.get(f"/api/v1/incidents/{incident.pk}/").json()
        assert detail["recurrence_of"] is None and detail["duplicate_of"] is None
    assert snapshot(w) == before
    incident_ops = {(m, p) for m, p in exercised if "{id}" in p}
    # detail GET and PATCH, transition, acknowledge, timeline GET/POST, roles GET/POST at least
    assert len(incident_ops) >= 8, sorted(exercised)
    for new in (
        ("get", "/api/v1/incidents/{id}/members/"),
        ("post", "/api/v1/incidents/{id}/members/"),
        ("delete", "/api/v1/incidents/{id}/members/{username}/"),
        ("post", "/api/v1/incidents/{id}/roles/{assignment_id}/relieve/"),
        ("get", "/api/v1/incidents/{id}/alerts/"),
    ):
        assert new in exercised, new


def test_api_outsider_cannot_name_a_restricted_incident_as_recurrence_of(world):
    w = world
    client = api_client(w.outsider)
    response = client.post(
        "/api/v1/incidents/",
        {"title": "Payroll again", "severity": 3, "recurrence_of": w.reference},
        format="json",
    )
    assert response.status_code == 400
    assert "There is no incident" in response.content.decode()
    assert not Incident.objects.filter(title="Payroll again").exists()
    # The open one can be named: it is the restricted one that is invisible, not the field that is broken.
    response = client.post(
        "/api/v1/incidents/",
        {"title": "Search again", "severity": 3, "recurrence_of": w.open.reference},
        format="json",
    )
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("who", ["participant", "past_holder", "member", "global_viewer", "superuser"])
def test_api_matrix_those_allowed_see_it(world, schema, who):
    w = world
    client = api_client(getattr(w, who))
    seen = 0
    for method, path, _operation in operations(schema):
        if method != "get":
            continue
        url = fill(w, path)
        response = client.get(url)
        assert response.status_code == 200, (who, url, response.status_code)
        if path.startswith("/api/v1/incidents/"):
            names_only = path.endswith(("/roles/", "/members/"))  # usernames, nothing of the incident itself
            assert leaks(w, response.content.decode()) or names_only, (who, url)
            seen += 1
    assert seen >= 4
    roles = client.get(f"/api/v1/incidents/{w.restricted.pk}/roles/").json()["results"]
    assert {r["user"] for r in roles} >= {w.participant.username, w.past_holder.username}
    timeline = client.get(f"/api/v1/incidents/{w.restricted.pk}/timeline/").json()["results"]
    assert NOTE in [e["body"] for e in timeline]
    listed = client.get("/api/v1/incidents/", {"search": MARKER}).json()["results"]
    assert [i["reference"] for i in listed] == [w.reference]
    # …and the links to it from other incidents.
    assert client.get(f"/api/v1/incidents/{w.open.pk}/").json()["recurrence_of"] == w.reference
    assert client.get(f"/api/v1/incidents/{w.dup.pk}/").json()["duplicate_of"] == w.reference
    timeline = client.get(f"/api/v1/incidents/{w.dup.pk}/timeline/").json()["results"]
    assert w.reference in [e["data"].get("duplicate_of") for e in timeline]


# ---- ingestion and the timeline -----------------------------------------------------------------


def test_ingestion_follows_a_restricted_incident_as_the_system(world):
    w = world
    incident = w.restricted
    assert incident.is_restricted
    alerts = Alert.objects.filter(incident=incident)
    assert alerts.count() == 2 and alerts.filter(status="firing").count() == 2
    assert AlertPayload.objects.filter(incident=incident, status="accepted").count() == 2
    alert_events = TimelineEvent.objects.filter(incident=incident, kind=Kind.ALERT).order_by("id")
    assert alert_events.count() == 2
    assert all(e.actor_id is None for e in alert_events)
    assert "Ledger" in alert_events.last().body
    # The alert records follow the incident's visibility.
    assert not visible_incident_rows(Alert.objects.all(), w.outsider).exists()
    assert visible_incident_rows(Alert.objects.all(), w.member).count() == 2


def test_timeline_records_restriction_changes_with_their_actor(world):
    w = world
    incident = declare(f"Legal hold {MARKER}", actor=w.lead, restricted=True)
    assert incident.is_restricted
    declared = TimelineEvent.objects.get(incident=incident, kind=Kind.DECLARED)
    assert declared.data["restricted"] is True and declared.actor == w.lead
    assert not Incident.objects.visible_to(w.outsider).filter(pk=incident.pk).exists()

    services.incident_restriction_set(incident=incident, restricted=False, actor=w.global_viewer, note="Cleared")
    assert Incident.objects.visible_to(w.outsider).filter(pk=incident.pk).exists()
    services.incident_restriction_set(incident=incident, restricted=True, actor=w.lead)
    services.incident_restriction_set(incident=incident, restricted=True, actor=w.lead)  # no-op, not recorded
    assert not Incident.objects.visible_to(w.outsider).filter(pk=incident.pk).exists()

    changes = TimelineEvent.objects.filter(incident=incident, kind=Kind.RESTRICTION_CHANGED).order_by("id")
    assert [(e.data, e.actor, e.body) for e in changes] == [
        ({"from": True, "to": False}, w.global_viewer, "Cleared"),
        ({"from": False, "to": True}, w.lead, ""),
    ]
    # The incident from the world fixture: restricted after ingestion opened it, by the responder.
    event = TimelineEvent.objects.get(incident=w.restricted, kind=Kind.RESTRICTION_CHANGED)
    assert event.actor == w.lead and event.data == {"from": False, "to": True} and event.body == "Security matter"


def test_a_recurrence_opened_by_ingestion_does_not_show_the_restricted_incident(world, client):
    """Its alerts resolve, the group fires again: ingestion opens a new incident as a recurrence,
    restricted to the same people. Once someone lifts that, the old alerts, the link and the
    reference still stay hidden from the outsider."""
    w = world
    names = (f"Payroll{MARKER}", f"Ledger{MARKER}")
    ingestion.post_receive(
        kind="alertmanager", body=_am_body(*names, starts=w.starts, status="resolved"), headers={}, key=w.key
    )
    assert Incident.objects.get(pk=w.restricted.pk).status == "resolved"
    _payload, result = ingestion.post_receive(
        kind="alertmanager", body=_am_body(*names, starts=timezone.now()), headers={}, key=w.key
    )
    again = result.incident
    assert result.incident_created and again.recurrence_of_id == w.restricted.pk
    # It inherits the restriction, and the people who could see the last one can see this one.
    assert again.is_restricted
    assert set(again.participants()) == set(w.restricted.participants())
    # Lifting takes the commander or the global permission (issue 11); the recurrence has no commander yet.
    services.incident_restriction_set(incident=again, restricted=False, actor=w.global_viewer, note="Nothing sensitive")

    def hidden_from_outsider(text):
        return not re.search(rf"\b{w.reference}\b", text) and (
            reverse("admin:incidents_incident_change", args=[w.restricted.pk]) not in text
        )

    client.force_login(w.outsider)
    group = AlertGroup.objects.get(incident=again)
    for url in (
        reverse("admin:incidents_alertgroup_change", args=[group.pk]),
        reverse("admin:incidents_alertgroup_changelist"),
        reverse("admin:incidents_alert_changelist"),
        reverse("admin:incidents_incident_change", args=[again.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200 and hidden_from_outsider(response.content.decode()), url
    # The group's page lists only the new alerts: the old ones belong to the restricted incident.
    inline = client.get(reverse("admin:incidents_alertgroup_change", args=[group.pk])).context["inline_admin_formsets"]
    assert {f.form.instance.incident_id for f in inline[0]} == {again.pk}
    api = api_client(w.outsider)
    for url in (f"/api/v1/incidents/{again.pk}/", f"/api/v1/incidents/{again.pk}/timeline/", "/api/v1/incidents/"):
        response = api.get(url)
        assert response.status_code == 200 and hidden_from_outsider(response.content.decode()), url
    # Those who may see it still see where it came from.
    api = api_client(w.participant)
    assert api.get(f"/api/v1/incidents/{again.pk}/").json()["recurrence_of"] == w.reference


def test_hidden_references_in_timeline_data(world):
    """Links recorded on other incidents' timelines by reference are found in one query; free text that
    only looks like a reference (a title in a "details changed" event) is harmless."""
    w = world
    events = [
        TimelineEvent(data={"recurrence_of": [None, w.reference]}),
        TimelineEvent(data={"title": ["INC-99999999999999999999", "INC-１２"], "to": w.open.reference}),
    ]
    assert references_hidden_from(w.outsider, events) == {w.reference}
    assert references_hidden_from(w.member, events) == set()
    assert references_hidden_from(w.global_viewer, events) == set()
    assert references_redacted(events[0].data, {w.reference}) == {"recurrence_of": [None, None]}
