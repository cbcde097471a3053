"""The database itself refuses inconsistent incidents and roles, whoever writes them.

Each test starts from a consistent row written by the services, then writes around them with
QuerySet.update() or Model.save() and expects an IntegrityError from the database.
"""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from incidents import services
from incidents.models import Incident, RoleAssignment
from tests.incidents.factories import UserFactory, declare, drive

pytestmark = pytest.mark.django_db

S = Incident.Status
Role = RoleAssignment.Role
UNIQUE = "(?i)unique"  # SQLite names the columns of a unique violation, PostgreSQL the constraint


@pytest.fixture
def t0():
    return timezone.now() - timedelta(days=1)


def minutes(t, n):
    return t + timedelta(minutes=n)


def assert_refused(queryset, constraint, **values):
    """The update fails, and for check constraints (which both backends name in the error) the named one."""
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        queryset.update(**values)


def test_a_consistent_direct_write_is_accepted(t0):
    """The control: the rows below are refused for what they say, not for being written directly."""
    incident = declare(detected_at=t0)
    rows = Incident.objects.filter(pk=incident.pk)

    rows.update(status=S.RESOLVED, mitigated_at=minutes(t0, 5), resolved_at=minutes(t0, 6))
    rows.update(status=S.CLOSED, closed_at=minutes(t0, 7))

    assert Incident.objects.get(pk=incident.pk).status == S.CLOSED


@pytest.mark.parametrize(
    ("status", "stamps", "constraint"),
    [
        (S.MITIGATED, {}, "incident_mitigated_stamped"),
        (S.RESOLVED, {"mitigated_at": 5}, "incident_resolved_stamped"),
        (S.RESOLVED, {"resolved_at": 5}, "incident_mitigated_stamped"),
        (S.POSTMORTEM, {"mitigated_at": 5}, "incident_resolved_stamped"),
        (S.CLOSED, {"mitigated_at": 5, "resolved_at": 6}, "incident_closed_stamped"),
        (S.DISMISSED, {}, "incident_closed_stamped"),
    ],
    ids=[
        "mitigated-unstamped",
        "resolved-unstamped",
        "resolved-unmitigated",
        "postmortem-unstamped",
        "closed-unstamped",
        "dismissed-unstamped",
    ],
)
def test_a_status_needs_its_timestamps(status, stamps, constraint, t0):
    incident = declare(detected_at=t0)
    rows = Incident.objects.filter(pk=incident.pk)

    assert_refused(rows, constraint, status=status, **{f: minutes(t0, n) for f, n in stamps.items()})
    assert rows.get().status == S.DETECTED


# Which statuses may carry each timestamp; every other status must leave it empty.
STAMPED_IN = {
    "mitigated_at": (Incident.MITIGATED_OR_LATER_STATUSES, "incident_open_not_mitigated"),
    "resolved_at": (Incident.RESOLVED_OR_LATER_STATUSES, "incident_unresolved_not_resolved"),
    "closed_at": ((S.CLOSED, S.DISMISSED), "incident_closed_stamped"),
}
OUT_OF_PLACE = [
    (status, stamp) for stamp, (statuses, _) in STAMPED_IN.items() for status in S if status not in statuses
]


@pytest.mark.parametrize(("status", "stamp"), OUT_OF_PLACE, ids=[f"{s}-{f}" for s, f in OUT_OF_PLACE])
def test_a_status_carries_no_timestamp_it_has_not_reached(status, stamp, t0):
    incident = drive(declare(detected_at=t0), status, at=t0)
    assert getattr(incident, stamp) is None

    assert_refused(Incident.objects.filter(pk=incident.pk), STAMPED_IN[stamp][1], **{stamp: minutes(t0, 60)})


@pytest.mark.parametrize(
    ("field", "offset", "constraint"),
    [
        ("started_at", 1, "incident_started_before_detected"),
        ("acknowledged_at", -1, "incident_acknowledged_after_detected"),
        ("mitigated_at", -1, "incident_mitigated_stamped"),
        ("resolved_at", 14, "incident_resolved_stamped"),
        ("closed_at", -1, "incident_closed_stamped"),
    ],
    ids=[
        "impact-after-detection",
        "acknowledged-before-detection",
        "mitigated-before-detection",
        "resolved-before-mitigation",
        "closed-before-detection",
    ],
)
def test_timestamps_keep_their_order(field, offset, constraint, t0):
    # acknowledged +5, mitigated +15, resolved +20, closed +30
    incident = drive(declare(detected_at=t0), S.CLOSED, actor=UserFactory(), at=t0)

    assert_refused(Incident.objects.filter(pk=incident.pk), constraint, **{field: minutes(t0, offset)})


def test_only_a_dismissed_incident_is_a_duplicate(t0):
    original = declare(detected_at=t0)
    incident = drive(declare(detected_at=t0), S.TRIAGING, at=t0)

    assert_refused(Incident.objects.filter(pk=incident.pk), "incident_duplicate_is_dismissed", duplicate_of=original)

    # Reopening a dismissed duplicate by hand, without clearing the link, is refused too.
    services.incident_transition(incident=incident, to=S.DISMISSED, actor=None, duplicate_of=original)
    assert_refused(
        Incident.objects.filter(pk=incident.pk), "incident_duplicate_is_dismissed", status=S.TRIAGING, closed_at=None
    )


def test_saving_a_model_around_the_services_is_refused(t0):
    incident = declare(detected_at=t0)
    incident.status = S.CLOSED  # no closing, resolution or mitigation time

    with pytest.raises(IntegrityError), transaction.atomic():
        incident.save()

    assert Incident.objects.get(pk=incident.pk).status == S.DETECTED


def test_incident_numbers_are_unique(t0):
    first, second = declare(detected_at=t0), declare(detected_at=t0)

    assert_refused(Incident.objects.filter(pk=second.pk), UNIQUE, number=first.number)


# --- roles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", RoleAssignment.SINGLE_HOLDER_ROLES)
def test_a_single_holder_role_has_one_active_holder(role, t0):
    incident = declare(detected_at=t0)
    alice, bob = UserFactory(), UserFactory()
    RoleAssignment.objects.create(incident=incident, role=role, user=alice, assigned_at=minutes(t0, 1))

    with pytest.raises(IntegrityError, match=UNIQUE), transaction.atomic():
        RoleAssignment.objects.create(incident=incident, role=role, user=bob, assigned_at=minutes(t0, 2))

    # Once the first holder is relieved, the next one may start; history rows are not limited.
    RoleAssignment.objects.filter(incident=incident, role=role).update(relieved_at=minutes(t0, 3))
    RoleAssignment.objects.create(incident=incident, role=role, user=bob, assigned_at=minutes(t0, 3))
    RoleAssignment.objects.create(
        incident=incident, role=role, user=alice, assigned_at=minutes(t0, 4), relieved_at=minutes(t0, 5)
    )
    assert incident.role_assignments.filter(role=role, relieved_at__isnull=True).count() == 1


def test_two_active_commanders_are_refused_even_when_relieving_is_undone(t0):
    incident = declare(detected_at=t0)
    first = RoleAssignment.objects.create(
        incident=incident, role=Role.COMMANDER, user=UserFactory(), assigned_at=minutes(t0, 1)
    )
    RoleAssignment.objects.filter(pk=first.pk).update(relieved_at=minutes(t0, 2))
    RoleAssignment.objects.create(
        incident=incident, role=Role.COMMANDER, user=UserFactory(), assigned_at=minutes(t0, 2)
    )

    assert_refused(RoleAssignment.objects.filter(pk=first.pk), UNIQUE, relieved_at=None)


def test_experts_may_be_several_but_each_person_once(t0):
    incident = declare(detected_at=t0)
    alice, bob = UserFactory(), UserFactory()
    RoleAssignment.objects.create(incident=incident, role=Role.EXPERT, user=alice)
    RoleAssignment.objects.create(incident=incident, role=Role.EXPERT, user=bob)

    with pytest.raises(IntegrityError, match=UNIQUE), transaction.atomic():
        RoleAssignment.objects.create(incident=incident, role=Role.EXPERT, user=alice)

    assert incident.role_assignments.filter(role=Role.EXPERT, relieved_at__isnull=True).count() == 2


def test_a_role_cannot_end_before_it_began(t0):
    incident = declare(detected_at=t0)
    assignment = RoleAssignment.objects.create(
        incident=incident, role=Role.SCRIBE, user=UserFactory(), assigned_at=minutes(t0, 10)
    )

    assert_refused(
        RoleAssignment.objects.filter(pk=assignment.pk), "role_relieved_after_assigned", relieved_at=minutes(t0, 9)
    )
