# ruff: noqa: F811  (the `world` fixture is imported from the restricted-incident matrix)
"""Issue 11, access: people pickers, restricted links in read-only fields and filters, the admin's
"Recent actions", action-item owners on restricted incidents, and who may lift a restriction."""

from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse

from incidents import services
from incidents.models import Incident, IncidentMember, TimelineEvent
from postmortems.models import ActionItem
from postmortems.services import action_item_create, action_item_update
from tests.incidents.factories import UserFactory, declare
from tests.incidents.test_restricted import leaks, world  # noqa: F401  the restricted-incident world

pytestmark = pytest.mark.django_db


def _autocomplete(client, app_label, model_name, field_name, term=""):
    query = urlencode({"app_label": app_label, "model_name": model_name, "field_name": field_name, "term": term})
    return client.get(f"/admin/autocomplete/?{query}")


def _fields(form):
    """A form's fields as a browser posts them back (split date and time widgets included)."""
    data = {}
    for name in form.fields:
        bound = form[name]
        value = bound.value()
        widget = bound.field.widget
        if hasattr(widget, "widgets") and not isinstance(value, list | tuple):
            for index, part in enumerate(widget.decompress(value)):
                data[f"{bound.html_name}_{index}"] = "" if part is None else str(part)
        elif isinstance(value, list | tuple):
            data[bound.html_name] = [str(v) for v in value]
        elif value is not None and value is not False:
            data[bound.html_name] = value
    return data


def _page_data(page):
    """What a browser would post back unchanged from an admin change page (the form and its inlines)."""
    data = _fields(page.context["adminform"].form)
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update(_fields(formset.management_form))
        for subform in formset.initial_forms:
            data.update(_fields(subform))
    return data


def _errors(response):
    if not response.context:
        return response.status_code
    form = response.context["adminform"].form
    inline = [f.errors for i in response.context["inline_admin_formsets"] for f in i.formset.forms if f.errors]
    return form.errors, inline, [i.formset.non_form_errors() for i in response.context["inline_admin_formsets"]]


# ---- people pickers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [("postmortems", "actionitem", "owner"), ("incidents", "roleassignment", "user")],
    ids=["action-item owner", "role holder"],
)
def test_responder_can_pick_people_without_the_user_admin(client, responder, source):
    alice = UserFactory(username="alice.nguyen", first_name="Alice", last_name="Nguyen")
    UserFactory(username="alice.gone", is_active=False)
    UserFactory(username="alice.customer", is_staff=False)
    client.force_login(responder)

    response = _autocomplete(client, *source, term="alice")

    assert response.status_code == 200  # was 403: "The results could not be loaded."
    results = response.json()["results"]
    assert results == [{"id": str(alice.pk), "text": "alice.nguyen"}]  # active staff only, no e-mail shown
    assert _autocomplete(client, *source, term="Nguyen").json()["results"] == results
    # The user admin itself stays closed to them.
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_people_who_assign_nobody_cannot_look_people_up(client, viewer):
    client.force_login(viewer)
    assert _autocomplete(client, "postmortems", "actionitem", "owner", "a").status_code == 403


def test_nul_in_an_autocomplete_term_is_no_error(admin_client, responder, sev3):
    declare("Checkout down", severity=sev3, actor=responder)
    for source in (("incidents", "incident", "recurrence_of"), ("postmortems", "actionitem", "owner")):
        response = _autocomplete(admin_client, *source, term="Check\x00out")
        assert response.status_code == 200  # PostgreSQL refused the NUL: a 500 before
    client_responder = admin_client
    client_responder.force_login(responder)
    assert _autocomplete(client_responder, "postmortems", "actionitem", "owner", "\x00").status_code == 200


# ---- restricted links ------------------------------------------------------------------------------


def test_read_only_page_blanks_a_link_to_a_restricted_incident(world, client):
    w = world
    for groups in (["Viewers"], ["Communications"]):
        reader = UserFactory(username=f"reader-{groups[0].lower()}", groups=groups)
        client.force_login(reader)
        for incident in w.linked:  # recurrence of, duplicate of
            for query in ("", "?edit=1"):  # the page, and its edit form's read-only fields
                response = client.get(reverse("admin:incidents_incident_change", args=[incident.pk]) + query)
                assert response.status_code == 200
                assert not leaks(w, response.content.decode()), (groups, incident.title, query)


def test_saving_a_page_with_a_hidden_link_keeps_the_link(world, client):
    w = world
    client.force_login(w.outsider)
    url = reverse("admin:incidents_incident_change", args=[w.open.pk])
    page = client.get(url + "?edit=1")  # the edit form, as the page's "Edit details" opens it
    assert not leaks(w, page.content.decode())
    data = _page_data(page)
    data.update({"title": "Search is slow (edited)"})
    response = client.post(url, data)
    assert response.status_code == 302, _errors(response)
    incident = Incident.objects.get(pk=w.open.pk)
    assert incident.title == "Search is slow (edited)"
    assert incident.recurrence_of_id == w.restricted.pk


def test_filtering_on_a_restricted_link_tells_an_outsider_nothing(world, client):
    w = world
    client.force_login(w.outsider)
    changelist = reverse("admin:incidents_incident_changelist")
    hidden = client.get(changelist, {"recurrence_of__id__exact": w.restricted.pk})
    ghost = client.get(changelist, {"recurrence_of__id__exact": 987654321})
    assert hidden.status_code == ghost.status_code == 200
    assert w.open.title not in hidden.content.decode()  # it named the incident that links to it before
    assert list(hidden.context["cl"].result_list) == list(ghost.context["cl"].result_list) == []
    assert not client.get(changelist, {"duplicate_of__id__exact": w.restricted.pk}).context["cl"].result_list
    # Someone who may see it still filters by it.
    client.force_login(w.participant)
    seen = client.get(changelist, {"recurrence_of__id__exact": w.restricted.pk})
    assert [i.pk for i in seen.context["cl"].result_list] == [w.open.pk]


def test_recent_actions_leave_out_an_incident_restricted_later(world, client):
    w = world
    # The outsider edited an incident in the admin, which was restricted afterwards.
    incident = declare("Payroll Quokka7731 second export", actor=w.outsider)
    LogEntry.objects.log_actions(w.outsider.pk, [incident], CHANGE, "Changed title.", single_object=True)
    item = action_item_create(incident=incident, title="Rotate Quokka7731 credentials", actor=w.outsider)
    LogEntry.objects.log_actions(w.outsider.pk, [item], CHANGE, "Changed owner.", single_object=True)
    client.force_login(w.outsider)
    assert "Quokka7731" in client.get(reverse("admin:index")).content.decode()

    services.incident_restriction_set(incident=incident, restricted=True, actor=w.superuser)

    page = client.get(reverse("admin:index")).content.decode()
    assert "Quokka7731" not in page and incident.reference not in page
    # A participant still sees their own entries.
    services.incident_member_add(incident=incident, user=w.outsider, actor=w.superuser)
    assert "Quokka7731" in client.get(reverse("admin:index")).content.decode()


# ---- action-item owners ------------------------------------------------------------------------------


def test_an_owner_who_could_not_see_the_incident_becomes_a_member(world, client):
    w = world
    owner = UserFactory(username="olga", groups=["Viewers"])
    item = action_item_create(incident=w.restricted, title="Rotate keys", owner=owner, actor=w.participant)
    assert IncidentMember.objects.filter(incident=w.restricted, user=owner).exists()
    added = TimelineEvent.objects.filter(incident=w.restricted, kind=TimelineEvent.Kind.MEMBER_ADDED).last()
    assert added.data == {"user": "olga"} and added.actor == w.participant

    # Reassigning works the same way.
    other = UserFactory(username="omar", groups=["Viewers"])
    action_item_update(item=item, actor=w.participant, owner=other)
    assert IncidentMember.objects.filter(incident=w.restricted, user=other).exists()

    # The owner (a Viewer: no change permission of their own) can open and update the item.
    client.force_login(other)
    url = reverse("admin:postmortems_actionitem_change", args=[item.pk])
    page = client.get(url)
    assert page.status_code == 200 and page.context["has_change_permission"]
    data = _page_data(page)
    data["status"] = "done"
    response = client.post(url, data)
    assert response.status_code == 302, _errors(response)
    assert ActionItem.objects.get(pk=item.pk).status == ActionItem.Status.DONE


def test_removing_a_member_who_owns_open_items_says_so(world, client):
    w = world
    owner = UserFactory(username="olga", groups=["Responders"])
    action_item_create(incident=w.restricted, title="Rotate keys", owner=owner, actor=w.participant)
    membership = IncidentMember.objects.get(incident=w.restricted, user=owner)

    notices = services.incident_member_remove(member=membership, actor=w.participant)

    assert len(notices) == 1 and "olga still owns 1 open action item" in notices[0] and "Rotate keys" in notices[0]
    removed = TimelineEvent.objects.filter(incident=w.restricted, kind=TimelineEvent.Kind.MEMBER_REMOVED).last()
    assert "Rotate keys" in removed.body
    # Nobody to warn about: someone without open items.
    services.incident_member_add(incident=w.restricted, user=w.outsider, actor=w.participant)
    bare = IncidentMember.objects.get(incident=w.restricted, user=w.outsider)
    assert services.incident_member_remove(member=bare, actor=w.participant) == []


# ---- lifting a restriction ----------------------------------------------------------------------------


def test_only_the_commander_or_the_global_permission_lifts_a_restriction(world, client):
    w = world
    with pytest.raises(services.IncidentError, match="commander"):
        services.incident_restriction_set(incident=w.restricted, restricted=False, actor=w.member)
    assert Incident.objects.get(pk=w.restricted.pk).is_restricted

    # In the admin the member sees the box read-only, and a forged POST changes nothing.
    client.force_login(w.member)
    page = client.get(reverse("admin:incidents_incident_change", args=[w.restricted.pk]) + "?edit=1")
    assert "is_restricted" not in page.context["adminform"].form.fields

    services.incident_restriction_set(incident=w.restricted, restricted=False, actor=w.participant)  # commander
    assert not Incident.objects.get(pk=w.restricted.pk).is_restricted
    services.incident_restriction_set(incident=w.restricted, restricted=True, actor=w.member)  # anyone may restrict
    services.incident_restriction_set(incident=w.restricted, restricted=False, actor=w.global_viewer)
    assert not Incident.objects.get(pk=w.restricted.pk).is_restricted


def test_api_refuses_a_member_lifting_a_restriction(world):
    from rest_framework.test import APIClient

    w = world
    api = APIClient()
    api.force_authenticate(w.member)
    response = api.patch(f"/api/v1/incidents/{w.restricted.pk}/", {"restricted": False}, format="json")
    assert response.status_code == 400, response.content
    assert Incident.objects.get(pk=w.restricted.pk).is_restricted
    assert Permission.objects.filter(codename="view_restricted_incident").exists()


def test_the_owner_updates_their_item_through_the_api(world):
    from rest_framework.test import APIClient

    w = world
    owner = UserFactory(username="olga", groups=["Viewers"])
    item = action_item_create(incident=w.restricted, title="Rotate keys", owner=owner, actor=w.participant)
    api = APIClient()
    api.force_authenticate(owner)
    url = f"/api/v1/action-items/{item.pk}/"
    assert api.get(url).status_code == 200  # a member now: they see it
    response = api.patch(url, {"status": "done"}, format="json")
    assert response.status_code == 200, response.content
    assert ActionItem.objects.get(pk=item.pk).status == ActionItem.Status.DONE
    # Someone else with only the view permission still may not.
    other = UserFactory(username="victor2", groups=["Viewers"])
    services.incident_member_add(incident=w.restricted, user=other, actor=w.participant)
    api.force_authenticate(other)
    assert api.patch(url, {"status": "open"}, format="json").status_code == 403
