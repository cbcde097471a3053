"""The daily metric roll-ups (issue 14): after any change through the services they equal a from-scratch
computation, and the figures read from them equal those computed from the incidents."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from incidents import metrics, rollups, services
from incidents.models import Incident, MetricsRollup
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare
from tests.incidents.test_metrics import SINCE, UNTIL, at, boss, dataset  # noqa: F401

pytestmark = pytest.mark.django_db


def snapshot():
    return {
        (r.day, r.severity_id, r.service_id, r.restricted): (
            r.incidents,
            r.recurrences,
            r.reopened,
            r.detected_by_alert,
            r.impact_ended_us,
            r.impact_open,
            r.impact_open_start_us,
            r.durations,
            bytes(r.histograms) and rollups.zlib.decompress(bytes(r.histograms)),
        )
        for r in MetricsRollup.objects.all()
    }


def assert_equals_from_scratch():
    kept = snapshot()
    rollups.rollup_rebuild()
    assert kept == snapshot()
    return kept


def test_rollups_follow_every_kind_of_change():
    person = UserFactory(username="dana", groups=["Responders"])
    sev1, sev2 = SeverityFactory(level=1), SeverityFactory(level=2)
    api, web = ServiceFactory(slug="api"), ServiceFactory(slug="web")
    base = datetime(2026, 3, 2, 10, tzinfo=UTC)
    a = declare("A", severity=sev1, services=[api], detected_at=base, started_at=base - timedelta(minutes=5))
    b = declare("B", severity=sev2, services=[api, web], detected_at=base + timedelta(hours=3), actor=person)
    assert snapshot(), "declaring rolls up"
    assert_equals_from_scratch()

    services.incident_acknowledge(incident=a, actor=person, at=base + timedelta(minutes=7))
    services.incident_transition(incident=a, to="resolved", actor=person, at=base + timedelta(hours=1))
    services.incident_transition(incident=a, to="responding", actor=person, at=base + timedelta(hours=2))  # reopen
    services.incident_transition(incident=a, to="resolved", actor=person, at=base + timedelta(hours=4))
    assert_equals_from_scratch()

    services.incident_severity_change(incident=b, severity=sev1, actor=person)
    services.incident_restriction_set(incident=b, restricted=True, actor=person)
    assert_equals_from_scratch()

    # Backdated detection moves the incident to another day: both days are recomputed.
    services.incident_update(incident=b, actor=person, detected_at=base - timedelta(days=3), services=[web])
    rows = snapshot()
    assert {key[0] for key in rows} == {base.date(), (base - timedelta(days=3)).date()}
    assert_equals_from_scratch()

    # Dismissing (as a duplicate) takes it out; undoing the dismissal puts it back.
    c = declare("C", severity=sev2, services=[web], detected_at=base + timedelta(hours=5))
    services.incident_transition(incident=c, to="dismissed", actor=person, duplicate_of=a)
    assert_equals_from_scratch()
    services.incident_transition(incident=c, to="triaging", actor=person)
    assert_equals_from_scratch()
    # A note by a person acknowledges nothing new here, but is harmless either way.
    services.timeline_note_add(incident=c, actor=person, body="Looking")
    assert_equals_from_scratch()


def test_random_changes_keep_the_rollup_exact():
    rng = random.Random(7)
    person = UserFactory(username="dana", groups=["Responders"])
    severities = [SeverityFactory(level=level) for level in (1, 2, 3)]
    svcs = [ServiceFactory(slug=f"s{i}") for i in range(3)]
    start = datetime(2026, 1, 5, tzinfo=UTC)
    incidents = []
    for n in range(25):
        detected = start + timedelta(hours=rng.randint(0, 24 * 20))
        incidents.append(
            declare(
                f"i{n}",
                severity=rng.choice(severities),
                services=rng.sample(svcs, rng.randint(0, 2)),
                detected_at=detected,
                started_at=detected - timedelta(minutes=rng.randint(0, 30)) if rng.random() < 0.5 else None,
                actor=person if rng.random() < 0.5 else None,
            )
        )
    for _step in range(80):
        incident = Incident.objects.get(pk=rng.choice(incidents).pk)
        choice = rng.random()
        at_ = max(incident.last_activity_at, incident.detected_at) + timedelta(minutes=rng.randint(1, 600))
        try:
            if choice < 0.5:
                targets = sorted(incident.allowed_transitions())
                if targets:
                    to = rng.choice(targets)
                    kwargs = {}
                    if to == "dismissed" and rng.random() < 0.3:
                        kwargs["duplicate_of"] = rng.choice(incidents)
                    services.incident_transition(incident=incident, to=to, actor=person, at=at_, **kwargs)
            elif choice < 0.65:
                services.incident_severity_change(incident=incident, severity=rng.choice(severities), actor=person)
            elif choice < 0.8:
                services.incident_acknowledge(incident=incident, actor=person, at=at_)
            elif choice < 0.9:
                services.incident_update(incident=incident, actor=person, services=rng.sample(svcs, rng.randint(0, 3)))
            else:
                services.incident_restriction_set(incident=incident, restricted=rng.random() < 0.5, actor=person)
        except services.IncidentError:
            pass  # a refused change changes nothing
    assert_equals_from_scratch()


def comparable(result):
    """Everything but the definitions; medians and p90 rounded to the second."""
    out = {}
    for key, metric in result.items():
        values = {k: v for k, v in metric.items() if k not in ("name", "definition", "unit", "kind", "key")}
        for name in ("median", "p90"):
            if values.get(name) is not None:
                values[name] = round(values[name])
        out[key] = values
    return out


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"since": SINCE, "until": UNTIL},
        {"since": SINCE + timedelta(hours=9, minutes=30), "until": UNTIL - timedelta(hours=3)},  # partial days
        {"since": SINCE, "until": UNTIL, "service": "api"},
        {"since": SINCE, "until": UNTIL, "severity": [1, 2]},
        {"since": SINCE, "until": UNTIL, "service": ["api", "web"]},  # several services: computed live
        {"since": at(4, 11), "until": at(4, 13)},  # under a day
    ],
)
def test_figures_from_the_rollup_equal_the_figures_from_the_incidents(dataset, boss, filters):  # noqa: F811
    rollups.rollup_rebuild()  # the data set sets timestamps with update(), without the services
    for incident, customer in ((dataset["a"], "c1"), (dataset["a"], "c2"), (dataset["c"], "c1"), (dataset["f"], "c3")):
        services.customer_report_create(actor=boss, incident=incident, customer_id=customer)
    services.customer_report_create(actor=boss, customer_id="c9")  # unlinked
    viewer = UserFactory(username="vera", groups=["Viewers"])
    allowed = UserFactory(username="sam")
    allowed.user_permissions.add(Permission.objects.get(codename="view_restricted_incident"))
    secret = declare("J", severity=SeverityFactory(level=4), detected_at=at(11, 9), restricted=True)
    member = UserFactory(username="mo", groups=["Viewers"])
    services.incident_member_add(incident=secret, user=member, actor=boss)
    assert rollups.rollup_built()
    for user in (boss, viewer, allowed, member):
        live = metrics.metrics_compute(user=user, **filters)
        read = rollups.metrics_read(user=user, **filters)
        assert comparable(read) == comparable(live), user


def test_rollup_is_not_used_until_built(dataset, boss):  # noqa: F811
    rollups.MetricsRollupState.objects.all().delete()
    assert rollups.selection_for(user=boss) is None
    assert comparable(rollups.metrics_read(user=boss)) == comparable(metrics.metrics_compute(user=boss))


def test_medians_from_the_histograms_are_within_one_percent_of_rank(boss):  # noqa: F811
    """With enough incidents the histograms answer; the value's rank is within 1% of the asked rank."""
    rng = random.Random(3)
    severity = SeverityFactory(level=3)
    start = datetime(2026, 2, 2, tzinfo=UTC)
    rows = []
    for n in range(3000):
        detected = start + timedelta(minutes=13 * n)
        rows.append(
            Incident(
                number=10_000 + n,
                title=f"x{n}",
                severity=severity,
                detected_at=detected,
                last_activity_at=detected,
                acknowledged_at=detected + timedelta(seconds=rng.randint(60, 1800)),
                status="triaging",
            )
        )
    Incident.objects.bulk_create(rows)  # written without the services, like bench/generate.py: rebuild
    rollups.rollup_rebuild()
    read = rollups.metrics_read(user=boss)
    values = sorted((r.acknowledged_at - r.detected_at).total_seconds() for r in rows)
    for name, fraction in (("median", 0.5), ("p90", 0.9)):
        value = read["mtta"][name]
        rank = sum(v <= value for v in values) / len(values)
        assert abs(rank - fraction) <= 0.01, (name, value, rank)
    assert read["mtta"]["mean"] == round(sum(values) / len(values), 3)
    assert read["mtta"]["count"] == 3000


def test_a_change_is_in_the_next_read_although_days_already_read_are_memoized(dataset, boss, monkeypatch):  # noqa: F811
    # A read keeps the decoded histograms of the days it read (rollups._row_packed, _rows_packed), keyed by
    # their stored bytes: a day recomputed after a change must be read anew, never the earlier sums.
    monkeypatch.setattr(rollups, "MAX_RANK_ERROR", 1.0)  # medians from the histograms, never from the incidents
    rollups.rollup_rebuild()
    period = {"since": SINCE, "until": UNTIL}
    first = rollups.metrics_read(user=boss, **period)
    late = dataset["a"].detected_at + timedelta(hours=30)
    unacknowledged = next(
        incident
        for incident in Incident.objects.filter(detected_at__gte=SINCE, detected_at__lt=UNTIL, acknowledged_at=None)
        if incident.status not in ("dismissed",) and incident.duplicate_of_id is None
    )
    services.incident_acknowledge(incident=unacknowledged, actor=boss, at=max(late, unacknowledged.detected_at))
    second = rollups.metrics_read(user=boss, **period)
    assert second["mtta"]["count"] == first["mtta"]["count"] + 1
    rollups._summed.clear()
    rollups._unpacked.clear()
    assert second == rollups.metrics_read(user=boss, **period), "the same as read with nothing memoized"
    assert second["mtta"]["median"] != first["mtta"]["median"]


def test_a_period_read_again_is_memoized_and_a_committed_change_shows_at_once(dataset, boss, monkeypatch):  # noqa: F811
    # The sums of a period's roll-up rows are memoized under the versions of its days (rollups._reads); every
    # recomputation of a day gives it a new version in the change's own transaction, so the next read after a
    # change has it, while a read with nothing changed reads no roll-up row.
    monkeypatch.setattr(rollups, "MAX_RANK_ERROR", 1.0)
    rollups.rollup_rebuild()
    rollups._reads.clear()
    period = {"since": SINCE, "until": UNTIL}
    first = rollups.metrics_read(user=boss, **period)
    with CaptureQueriesContext(connection) as again:
        assert rollups.metrics_read(user=boss, **period) == first
    assert not [q for q in again.captured_queries if 'incidents_metricsrollup"' in q["sql"]], "rows memoized"

    declare("Late", severity=SeverityFactory(level=2), detected_at=SINCE + timedelta(days=3, hours=2))
    unacknowledged = next(
        incident
        for incident in Incident.objects.filter(detected_at__gte=SINCE, detected_at__lt=UNTIL, acknowledged_at=None)
        if incident.status != "dismissed" and incident.duplicate_of_id is None
    )
    services.incident_acknowledge(
        incident=unacknowledged, actor=boss, at=unacknowledged.detected_at + timedelta(hours=1)
    )
    second = rollups.metrics_read(user=boss, **period)
    assert second["incidents"]["count"] == first["incidents"]["count"] + 1
    assert second["mtta"]["count"] == first["mtta"]["count"] + 1
    rollups._reads.clear()
    assert second == rollups.metrics_read(user=boss, **period), "the same as read with nothing memoized"


def test_a_read_inside_a_rolled_back_change_is_never_shown_afterwards(dataset, boss):  # noqa: F811
    # A read made inside a transaction that changed a day, then rolled back, memoized uncommitted sums under
    # that day's new version; the versions are random, so a later change of the same day cannot meet them.
    rollups.rollup_rebuild()
    period = {"since": SINCE, "until": UNTIL}
    before = rollups.metrics_read(user=boss, **period)["incidents"]["count"]
    detected = SINCE + timedelta(days=3, hours=2)
    with pytest.raises(RuntimeError), transaction.atomic():
        declare("Undone", severity=SeverityFactory(level=2), detected_at=detected)
        assert rollups.metrics_read(user=boss, **period)["incidents"]["count"] == before + 1
        raise RuntimeError("rolled back")
    assert rollups.metrics_read(user=boss, **period)["incidents"]["count"] == before
    declare("Kept", severity=SeverityFactory(level=2), detected_at=detected, started_at=detected - timedelta(hours=5))
    after = rollups.metrics_read(user=boss, **period)
    assert after["incidents"]["count"] == before + 1
    rollups._reads.clear()
    assert after == rollups.metrics_read(user=boss, **period)
