"""The public reads: the ONE place that decides what the public status page may show.

Every public document (HTML, Atom, each Statuspage v2 JSON) is built from the objects returned here,
never from models directly. The rules:

- An incident is public when it is not restricted and has at least one published external update.
  Restricted incidents never appear publicly, whatever was published on them.
- Of an incident, the public sees its public name (the public title communications set, else a
  neutral one from its public services: comms/public_name.py) and impact statement, its impact (from the severity level: 1 critical, 2 major, 3 minor,
  4 and below none), when impact started, and its published external updates. Never its summary,
  notes, timeline, roles, people, severity labels, internal reference or internal updates.
- Of an update, only published external ones, with their public status, sanitised body and the
  public services they name (non-public services are left out).
- An incident's public status follows its published external updates (resolving it internally does
  not resolve it publicly). Updates count in their place in the sequence: a correction stands where
  the update it corrects stood, so publishing a correction of an older update never moves the page back.
- Components are the public services (`Service.is_public`), grouped by ServiceGroup. A component's
  status is the worst status its unresolved public incidents left it at: an update that names it
  sets it, and it carries over until a later update changes it (as on Atlassian Statuspage);
  otherwise under_maintenance while a maintenance covering it is in progress; otherwise operational.
- Scheduled maintenances are written for the public: those on at least one public service are shown,
  with their public services only (work on internal services only stays internal).

Reads are a fixed number of queries whatever the number of rows (tests say so).
"""

from dataclasses import dataclass, field, replace
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Prefetch, Q, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from comms.models import (
    ComponentStatus,
    MaintenanceUpdate,
    ScheduledMaintenance,
    Update,
    UpdateComponent,
)
from comms.public_name import incident_public_name
from incidents.models import Incident, Service

from . import public_ids

HISTORY_DAYS = 90
RECENT_LIMIT = 50
UNRESOLVED_PUBLIC = ("investigating", "identified", "monitoring")
# Newest first in the sequence of updates: a correction stands where the update it corrects stood.
SEQUENCE_DESC = (Coalesce("corrects__published_at", "published_at").desc(), "-published_at", "-id")

# Worst last. Maintenance ranks below every outage: an incident on a component under maintenance wins.
COMPONENT_RANK = {
    ComponentStatus.OPERATIONAL: 0,
    ComponentStatus.UNDER_MAINTENANCE: 1,
    ComponentStatus.DEGRADED_PERFORMANCE: 2,
    ComponentStatus.PARTIAL_OUTAGE: 3,
    ComponentStatus.MAJOR_OUTAGE: 4,
}
IMPACT_BY_LEVEL = {1: "critical", 2: "major", 3: "minor"}  # 4 and below: none
IMPACT_RANK = {"none": 0, "maintenance": 0, "minor": 1, "major": 2, "critical": 3}

STATUS_LABELS = dict(ComponentStatus.choices) | dict(Update.PublicStatus.choices)
STATUS_LABELS |= dict(ScheduledMaintenance.Status.choices)


def impact_for(severity):
    return IMPACT_BY_LEVEL.get(severity.level, "none")


def worst(statuses, default=ComponentStatus.OPERATIONAL):
    return max(statuses, key=lambda s: COMPONENT_RANK.get(s, 0), default=default)


# ---- what the documents are made of ----------------------------------------------------------------


@dataclass
class PublicGroup:
    pk: int
    id: str
    name: str
    position: int
    components: list = field(default_factory=list)
    status: str = ComponentStatus.OPERATIONAL
    updated_at: object = None

    is_group = True

    @property
    def status_label(self):
        return STATUS_LABELS[self.status]


@dataclass
class PublicComponent:
    pk: int
    id: str
    name: str
    position: int
    slug: str
    group: PublicGroup | None
    status: str = ComponentStatus.OPERATIONAL
    updated_at: object = None

    is_group = False

    @property
    def status_label(self):
        return STATUS_LABELS[self.status]

    @property
    def long_name(self):
        """As Statuspage names it in an update's affected components: "GROUP - Component"."""
        return f"{self.group.name} - {self.name}" if self.group else self.name


@dataclass
class AffectedComponent:
    component: PublicComponent
    old_status: str
    new_status: str

    @property
    def new_status_label(self):
        return STATUS_LABELS[self.new_status]


@dataclass
class PublicUpdate:
    pk: int
    id: str
    status: str
    body: str
    body_html: str
    published_at: object
    affected: list = field(default_factory=list)
    corrects: "PublicUpdate | None" = None

    @property
    def status_label(self):
        return STATUS_LABELS[self.status]

    @property
    def is_correction(self):
        return self.corrects is not None


@dataclass
class PublicIncident:
    pk: int
    id: str
    name: str
    status: str
    impact: str
    created_at: object
    updated_at: object
    started_at: object
    monitoring_at: object
    resolved_at: object
    updates: list  # newest first
    components: list
    impact_statement: str = ""  # what customers notice, as communications put it
    component_statuses: dict = field(default_factory=dict)  # component pk -> status the updates left it at
    kind = "incident"

    @property
    def status_label(self):
        return STATUS_LABELS[self.status]

    @property
    def path(self):
        return reverse("status:incident", args=[self.id])

    @property
    def url(self):
        return settings.SITE_URL + self.path

    @property
    def is_resolved(self):
        return self.status not in UNRESOLVED_PUBLIC


@dataclass
class PublicMaintenance:
    pk: int
    id: str
    name: str
    status: str
    impact: str
    body_html: str
    created_at: object
    updated_at: object
    started_at: object
    resolved_at: object
    scheduled_for: object
    scheduled_until: object
    updates: list
    components: list
    kind = "maintenance"
    monitoring_at = None

    @property
    def status_label(self):
        return STATUS_LABELS[self.status]

    @property
    def path(self):
        return reverse("status:maintenance", args=[self.id])

    @property
    def url(self):
        return settings.SITE_URL + self.path


@dataclass
class OverallStatus:
    indicator: str
    description: str


@dataclass
class StatusPage:
    updated_at: object
    status: OverallStatus
    groups_and_components: list  # top level, in order: PublicGroup (with its components) and PublicComponent
    components: list  # every PublicComponent, flat
    unresolved: list
    active_maintenances: list
    upcoming_maintenances: list
    incidents: list = field(default_factory=list)  # what the caller asked for besides
    maintenances: list = field(default_factory=list)

    @property
    def groups_flat(self):
        """Statuspage's components array: each group followed by its components, then ungrouped ones."""
        flat = []
        for item in self.groups_and_components:
            flat.append(item)
            if item.is_group:
                flat.extend(item.components)
        return flat


# ---- queries ---------------------------------------------------------------------------------------


def published_external_updates():
    return Update.objects.filter(
        audience=Update.Audience.EXTERNAL, status=Update.Status.PUBLISHED, published_at__isnull=False
    )


def public_incident_queryset():
    """Incidents the public may know of, annotated with what the public documents need."""
    published = published_external_updates().filter(incident=OuterRef("pk"))
    latest = published.order_by(*SEQUENCE_DESC)
    return (
        Incident.objects.filter(is_restricted=False)
        .filter(Exists(published))
        .annotate(
            public_first_at=Subquery(published.order_by("published_at", "id").values("published_at")[:1]),
            public_last_at=Subquery(latest.values("published_at")[:1]),
            public_latest_status=Subquery(latest.values("public_status")[:1]),
        )
        .select_related("severity")
        .only(
            "id",
            "public_title",
            "public_impact",
            "status",
            "severity__level",
            "started_at",
            "detected_at",
            "resolved_at",
            "closed_at",
            "mitigated_at",
        )
        .prefetch_related(
            Prefetch(
                "updates",
                queryset=published_external_updates()
                .order_by("published_at", "id")
                .only("id", "incident_id", "public_status", "body", "body_html", "published_at", "corrects_id")
                .prefetch_related(
                    Prefetch(
                        "components",
                        queryset=UpdateComponent.objects.filter(service__is_public=True).only(
                            "id", "update_id", "service_id", "status"
                        ),
                        to_attr="public_components",
                    )
                ),
                to_attr="public_updates",
            ),
            Prefetch("services", queryset=Service.objects.filter(is_public=True).only("id", "name"), to_attr="public_services"),
        )
    )


def _unresolved_condition():
    # The public state follows published updates only: resolving internally drafts the resolving
    # update for review (comms.services.resolution) instead of resolving the page silently.
    return Q(public_latest_status__in=UNRESOLVED_PUBLIC)


def _maintenance_queryset():
    """Maintenances on at least one public service (work on internal services only stays internal)."""
    public_service = ScheduledMaintenance.services.through.objects.filter(
        scheduledmaintenance_id=OuterRef("pk"), service__is_public=True
    )
    return ScheduledMaintenance.objects.filter(Exists(public_service)).prefetch_related(
        Prefetch(
            "services", queryset=Service.objects.filter(is_public=True).only("id"), to_attr="public_services"
        ),
        Prefetch("updates", queryset=MaintenanceUpdate.objects.order_by("-created_at", "-id"), to_attr="all_updates"),
    )


def _components():
    """Public services with their groups, positions and last public change; one query."""
    published_change = (
        UpdateComponent.objects.filter(
            service=OuterRef("pk"),
            update__audience=Update.Audience.EXTERNAL,
            update__status=Update.Status.PUBLISHED,
            update__incident__is_restricted=False,
        )
        .order_by("-update__published_at")
        .values("update__published_at")[:1]
    )
    maintenance_change = (
        MaintenanceUpdate.objects.filter(maintenance__services=OuterRef("pk"))
        .order_by("-created_at")
        .values("created_at")[:1]
    )
    services = (
        Service.objects.filter(is_public=True)
        .select_related("group")
        .annotate(last_incident_change=Subquery(published_change), last_maintenance_change=Subquery(maintenance_change))
        .order_by("group__position", "group__name", "name")
    )
    groups = {}
    top = []
    components = []
    for service in services:
        changed = max(
            (t for t in (service.last_incident_change, service.last_maintenance_change) if t is not None),
            default=None,
        )
        group = None
        if service.group_id is not None:
            group = groups.get(service.group_id)
            if group is None:
                group = PublicGroup(
                    pk=service.group_id,
                    id=public_ids.encode("group", service.group_id),
                    name=service.group.name,
                    position=0,
                )
                groups[service.group_id] = group
                top.append(group)
        component = PublicComponent(
            pk=service.pk,
            id=public_ids.encode("component", service.pk),
            name=service.name,
            position=len(group.components) + 1 if group else 0,
            slug=service.slug,
            group=group,
            updated_at=changed,
        )
        components.append(component)
        if group:
            group.components.append(component)
        else:
            top.append(component)
    # Groups first (in their order), then ungrouped components by name, as Statuspage lists them.
    top = [item for item in top if item.is_group] + [item for item in top if not item.is_group]
    for position, item in enumerate(top, start=1):
        item.position = position
    return top, components


# ---- building the public objects --------------------------------------------------------------------


def _sequence_key(update, by_pk):
    """Where an update stands in the incident's sequence: a correction takes its original's place."""
    original = by_pk.get(update.corrects_id)
    return (original.published_at if original is not None else update.published_at, update.published_at, update.pk)


def _build_incident(incident, components_by_pk):
    status = incident.public_latest_status
    rows = incident.public_updates  # oldest first, by publication
    originals = {update.pk: update for update in rows}
    current = {}  # component pk -> status, as the updates so far left it (carried over until changed)
    affected_by_pk = {}
    monitoring_at = resolved_at = None
    named = {}
    for update in sorted(rows, key=lambda u: _sequence_key(u, originals)):  # in the sequence they stand for
        affected = []
        for row in update.public_components:
            component = components_by_pk.get(row.service_id)
            if component is None:
                continue
            affected.append(AffectedComponent(component, current.get(row.service_id, "operational"), row.status))
            current[row.service_id] = row.status
            named[row.service_id] = component
        affected_by_pk[update.pk] = affected
        if update.public_status == "monitoring" and monitoring_at is None:
            monitoring_at = update.published_at
        if update.public_status in ("resolved", "postmortem") and resolved_at is None:
            resolved_at = update.published_at
        if update.public_status in UNRESOLVED_PUBLIC:
            resolved_at = None  # reopened publicly
    updates, by_pk = [], {}
    for update in rows:
        public = PublicUpdate(
            pk=update.pk,
            id=public_ids.encode("update", update.pk),
            status=update.public_status,
            body=update.body,
            body_html=update.body_html,
            published_at=update.published_at,
            affected=affected_by_pk[update.pk],
            corrects=by_pk.get(update.corrects_id),
        )
        by_pk[update.pk] = public
        updates.append(public)
    if status in UNRESOLVED_PUBLIC:
        resolved_at = None
    elif resolved_at is None:
        resolved_at = incident.public_last_at
    updated_at = max(t for t in (incident.public_last_at, resolved_at) if t is not None)
    updates.reverse()
    return PublicIncident(
        pk=incident.pk,
        id=public_ids.encode("incident", incident.pk),
        name=incident_public_name(incident, incident.public_services),
        status=status,
        impact=impact_for(incident.severity),
        created_at=incident.public_first_at,
        updated_at=updated_at,
        started_at=incident.started_at or incident.detected_at,
        monitoring_at=monitoring_at,
        resolved_at=resolved_at,
        updates=updates,
        components=sorted(named.values(), key=lambda c: c.name),
        impact_statement=incident.public_impact,
        component_statuses=current,
    )


_OP, _UM = ComponentStatus.OPERATIONAL.value, ComponentStatus.UNDER_MAINTENANCE.value
MAINTENANCE_COMPONENT_CHANGE = {  # what each maintenance update did to its components (old, new)
    ScheduledMaintenance.Status.SCHEDULED: (_OP, _OP),
    ScheduledMaintenance.Status.IN_PROGRESS: (_OP, _UM),
    ScheduledMaintenance.Status.VERIFYING: (_UM, _OP),
    ScheduledMaintenance.Status.COMPLETED: (_UM, _OP),
}


def _build_maintenance(maintenance, components_by_pk):
    components = [components_by_pk[s.pk] for s in maintenance.public_services if s.pk in components_by_pk]
    updates = [
        PublicUpdate(
            pk=update.pk,
            id=public_ids.encode("maintenance_update", update.pk),
            status=update.status,
            body=update.body,
            body_html=update.body_html,
            published_at=update.created_at,
            affected=[AffectedComponent(c, *MAINTENANCE_COMPONENT_CHANGE[update.status]) for c in components],
        )
        for update in maintenance.all_updates
    ]
    return PublicMaintenance(
        pk=maintenance.pk,
        id=public_ids.encode("maintenance", maintenance.pk),
        name=maintenance.name,
        status=maintenance.status,
        impact=maintenance.impact,
        body_html=maintenance.body_html,
        created_at=maintenance.created_at,
        updated_at=max([maintenance.updated_at, *(u.published_at for u in updates)]),
        started_at=maintenance.started_at or maintenance.scheduled_for,
        resolved_at=maintenance.completed_at,
        scheduled_for=maintenance.scheduled_for,
        scheduled_until=maintenance.scheduled_until,
        updates=updates,
        components=sorted(components, key=lambda c: c.name),
    )


DESCRIPTIONS = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major Service Outage",
    "maintenance": "Service Under Maintenance",
}
INDICATOR_BY_COMPONENT = {
    ComponentStatus.DEGRADED_PERFORMANCE: ("minor", "Partially Degraded Service"),
    ComponentStatus.PARTIAL_OUTAGE: ("major", "Partial System Outage"),
    ComponentStatus.MAJOR_OUTAGE: ("critical", "Major Service Outage"),
}


def overall_status(components, unresolved, active_maintenances):
    """Statuspage's page status: the worse of the worst component and the worst unresolved incident."""
    worst_component = worst(c.status for c in components)
    indicator, description = INDICATOR_BY_COMPONENT.get(worst_component, ("none", DESCRIPTIONS["none"]))
    worst_impact = max((i.impact for i in unresolved), key=IMPACT_RANK.__getitem__, default="none")
    if IMPACT_RANK[worst_impact] > IMPACT_RANK[indicator]:
        indicator, description = worst_impact, DESCRIPTIONS[worst_impact]
    if indicator == "none" and active_maintenances:
        indicator, description = "maintenance", DESCRIPTIONS["maintenance"]
    return OverallStatus(indicator, description)


def status_page(*, incidents=None, maintenances=None, now=None, common=None):
    """Everything a public document needs, in a fixed number of queries.

    incidents: None; "history" (unresolved plus those resolved in the last 90 days); "recent" (the
    50 most recently updated, resolved included); or a public incident id (that one only).
    maintenances: None; "all" (the 50 latest by window); "upcoming"; "active"; or a public id.
    The unresolved incidents and the upcoming and active maintenances are always there.
    common: a page built just before (a refresh renders several documents at once) whose components,
    unresolved incidents and open maintenances are reused instead of read again.
    """
    now = now or timezone.now()
    if common is not None:
        page = replace(common, incidents=[], maintenances=[])
    else:
        page = _current_page()
    by_pk = {c.pk: c for c in page.components}
    base = public_incident_queryset()

    if incidents == "history":
        cutoff = now - timedelta(days=HISTORY_DAYS)
        rows = (
            base.exclude(_unresolved_condition())
            .filter(Q(resolved_at__gte=cutoff) | Q(closed_at__gte=cutoff) | Q(public_last_at__gte=cutoff))
            .order_by("-public_last_at", "-id")[:RECENT_LIMIT * 4]
        )
        page.incidents = [_build_incident(row, by_pk) for row in rows]
    elif incidents == "recent":
        page.incidents = [_build_incident(row, by_pk) for row in base.order_by("-public_last_at", "-id")[:RECENT_LIMIT]]
    elif incidents is not None:
        pk = public_ids.decode("incident", incidents)
        page.incidents = [_build_incident(row, by_pk) for row in base.filter(pk=pk)] if pk is not None else []

    if maintenances == "all":
        rows = _maintenance_queryset().order_by("-scheduled_for", "-id")[:RECENT_LIMIT]
        page.maintenances = [_build_maintenance(m, by_pk) for m in rows]
    elif maintenances == "upcoming":
        page.maintenances = page.upcoming_maintenances
    elif maintenances == "active":
        page.maintenances = page.active_maintenances
    elif maintenances is not None:
        pk = public_ids.decode("maintenance", maintenances)
        rows = _maintenance_queryset().filter(pk=pk) if pk is not None else []
        page.maintenances = [_build_maintenance(m, by_pk) for m in rows]

    page.updated_at = _page_updated_at(page, now)
    return page


def _current_page():
    """What every document shows: components, unresolved incidents, open maintenances, overall status."""
    top, components = _components()
    by_pk = {c.pk: c for c in components}

    base = public_incident_queryset()
    unresolved_rows = list(base.filter(_unresolved_condition()).order_by("-public_last_at", "-id"))
    unresolved = [_build_incident(row, by_pk) for row in unresolved_rows]

    open_maintenances = [
        _build_maintenance(m, by_pk)
        for m in _maintenance_queryset()
        .exclude(status=ScheduledMaintenance.Status.COMPLETED)
        .order_by("scheduled_for", "id")
    ]
    active = [m for m in open_maintenances if m.status != ScheduledMaintenance.Status.SCHEDULED]
    upcoming = [m for m in open_maintenances if m.status == ScheduledMaintenance.Status.SCHEDULED]

    # Component statuses as each unresolved incident's updates left them, then maintenance.
    given = {}
    for incident in unresolved:
        for pk, status in incident.component_statuses.items():
            given.setdefault(pk, []).append(status)
    in_maintenance = {
        c.pk for m in active if m.status == ScheduledMaintenance.Status.IN_PROGRESS for c in m.components
    }
    for component in components:
        statuses = given.get(component.pk, [])
        if component.pk in in_maintenance:
            statuses.append(ComponentStatus.UNDER_MAINTENANCE)
        component.status = worst(statuses)
    for item in top:
        if item.is_group:
            item.status = worst(c.status for c in item.components)
            item.updated_at = max((c.updated_at for c in item.components if c.updated_at), default=None)

    return StatusPage(
        updated_at=None,
        status=overall_status(components, unresolved, active),
        groups_and_components=top,
        components=components,
        unresolved=unresolved,
        active_maintenances=active,
        upcoming_maintenances=upcoming,
    )


def _page_updated_at(page, now):
    times = [c.updated_at for c in page.components if c.updated_at]
    times += [i.updated_at for i in (*page.unresolved, *page.incidents)]
    times += [m.updated_at for m in (*page.active_maintenances, *page.upcoming_maintenances, *page.maintenances)]
    return max(times, default=now)


def public_updates_for_feed(limit=RECENT_LIMIT):
    """The latest published external updates of public incidents, newest first (for the Atom feed).

    Each carries `public_name`: its incident's public name (never the internal title)."""
    updates = list(
        published_external_updates()
        .filter(incident__is_restricted=False)
        .select_related("incident", "corrects")
        .prefetch_related(
            Prefetch(
                "incident__services",
                queryset=Service.objects.filter(is_public=True).only("id", "name"),
                to_attr="public_services",
            )
        )
        .only(
            "id",
            "incident__id",
            "incident__public_title",
            "public_status",
            "body_html",
            "published_at",
            "corrects__id",
            "corrects__published_at",
        )
        .order_by("-published_at", "-id")[:limit]
    )
    for update in updates:
        update.public_name = incident_public_name(update.incident, update.incident.public_services)
    return updates
