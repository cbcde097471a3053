"""Restricted incidents: the one visibility rule, and the services that restrict and add members."""

import pytest
from django.contrib.auth.models import Permission

from incidents import services
from incidents.models import Incident, IncidentMember, RoleAssignment, TimelineEvent, visible_incident_rows
from tests.incidents.factories import UserFactory, declare

pytestmark = pytest.mark.django_db
Kind = TimelineEvent.Kind


@pytest.fixture
def people(db):
    lead = UserFactory(username="lead", groups=["Responders"])
    global_viewer = UserFactory(username="ciso", groups=["Viewers"])
    global_viewer.user_permissions.add(Permission.objects.get(codename="view_restricted_incident"))
    return {
        "lead": lead,
        "outsider": UserFactory(username="outsider", groups=["Responders"]),
        "member": UserFactory(username="member", groups=["Viewers"]),
        "former": UserFactory(username="former", groups=["Responders"]),
        "global": global_viewer,
        "root": UserFactory(username="root", is_superuser=True),
    }


@pytest.fixture
def restricted(people):
    incident = declare("Credential stuffing against login", actor=people["lead"], restricted=True)
    services.role_assign(incident=incident, role="commander", user=people["lead"], actor=people["lead"])
    services.role_assign(incident=incident, role="scribe", user=people["former"], actor=people["lead"])
    scribe = incident.role_assignments.get(user=people["former"])
    services.role_relieve(assignment=scribe, actor=people["lead"])  # past role holders keep access
    services.incident_member_add(incident=incident, user=people["member"], actor=people["lead"])
    return incident


def visible_ids(user):
    return set(Incident.objects.visible_to(user).values_list("pk", flat=True))


@pytest.mark.parametrize("who", ["lead", "former", "member", "global", "root"])
def test_participants_and_the_global_permission_see_a_restricted_incident(people, restricted, who):
    assert restricted.pk in visible_ids(people[who])


def test_an_outsider_sees_open_incidents_but_not_restricted_ones(people, restricted):
    public = declare("Slow search")
    assert visible_ids(people["outsider"]) == {public.pk}


def test_anonymous_and_inactive_users_see_no_restricted_incident(people, restricted):
    from django.contrib.auth.models import AnonymousUser

    people["lead"].is_active = False
    people["lead"].save()
    people["lead"] = type(people["lead"]).objects.get(pk=people["lead"].pk)  # fresh permission cache
    assert restricted.pk not in visible_ids(people["lead"])
    assert restricted.pk not in visible_ids(AnonymousUser())


def test_the_rule_is_exists_subqueries_not_a_join_with_distinct(people):
    sql = str(Incident.objects.visible_to(people["outsider"]).query).upper()
    assert sql.count("EXISTS") == 2 and "DISTINCT" not in sql and " JOIN " not in sql


def test_role_and_member_rows_follow_their_own_incident(people, restricted):
    """The rule reads role assignments and memberships, and also filters rows of those same tables (the
    admin's history, the roles inline): a member of one restricted incident sees its rows, not another's."""
    lead = people["lead"]
    other = declare("Payroll export", actor=lead, restricted=True)
    services.role_assign(incident=other, role="commander", user=lead, actor=lead)
    services.incident_member_add(incident=other, user=people["former"], actor=lead)
    for rows in (RoleAssignment.objects.all(), IncidentMember.objects.all()):
        assert set(visible_incident_rows(rows, people["member"]).values_list("incident", flat=True)) == {restricted.pk}
        assert other.pk in set(visible_incident_rows(rows, lead).values_list("incident", flat=True))


def test_the_global_permission_adds_no_filter(people):
    assert not Incident.objects.visible_to(people["global"]).query.where


def test_restricting_and_lifting_are_on_the_timeline(people):
    lead = people["lead"]
    incident = declare("Legal hold", actor=lead)
    services.incident_take_command(incident=incident, actor=lead)  # lifting needs the commander (issue 11)
    assert not incident.is_restricted
    services.incident_restriction_set(incident=incident, restricted=True, actor=lead, note="customer named")
    services.incident_restriction_set(incident=incident, restricted=True, actor=lead)  # repeat: no-op
    services.incident_restriction_set(incident=incident, restricted=False, actor=lead)
    events = list(incident.timeline.filter(kind=Kind.RESTRICTION_CHANGED).values_list("data", "actor", "body"))
    assert events == [
        ({"from": False, "to": True}, lead.pk, "customer named"),
        ({"from": True, "to": False}, lead.pk, ""),
    ]
    incident.refresh_from_db()
    assert not incident.is_restricted


def test_declaring_restricted_is_recorded(people, restricted):
    declared = restricted.timeline.get(kind=Kind.DECLARED)
    assert declared.data["restricted"] is True and restricted.is_restricted


def test_members_are_added_once_and_removed_on_the_timeline(people, restricted):
    lead, member = people["lead"], people["member"]
    services.incident_member_add(incident=restricted, user=member, actor=lead)  # again: no-op
    assert IncidentMember.objects.filter(incident=restricted, user=member).count() == 1
    assert restricted.timeline.filter(kind=Kind.MEMBER_ADDED).count() == 1
    services.incident_member_remove(member=IncidentMember.objects.get(user=member), actor=lead)
    assert restricted.pk not in visible_ids(member)
    removed = restricted.timeline.get(kind=Kind.MEMBER_REMOVED)
    assert removed.data == {"user": "member"} and removed.actor == lead
