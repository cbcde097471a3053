"""Reads shared by the admin and the API: the knowledge base search and "similar past incidents"."""

import re
from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from django.db.models import Exists, OuterRef, Q

from incidents.models import Alert, Incident, visible_incident_rows

from .models import REVIEW_SECTIONS, ContributingFactor, Review

# What a search looks through: every section, the incident's reference and title, the factors.
REVIEW_SEARCH_FIELDS = (*(name for name, _label in REVIEW_SECTIONS), "incident__title", "incident__summary")
REFERENCE = re.compile(r"(?:INC-?)?(\d{1,9})", re.IGNORECASE)
# Words too common to say two incident titles are alike.
STOP_WORDS = frozenset(
    "a an and are as at be by for from has in is it of on or the to was were with after before during "
    "error errors issue issues incident incidents problem problems down slow failing failed failure".split()
)


def review_list(user):
    """The reviews this user may see: those of incidents they may see (restricted ones follow the incident)."""
    return visible_incident_rows(Review.objects.all(), user, "incident")


def review_search(queryset, text):
    """Reviews matching every word of `text` somewhere (any section, the incident, a contributing factor).

    A reference (INC-1042, 1042) finds that incident's review.
    """
    text = text.strip()
    if not text:
        return queryset
    match = REFERENCE.fullmatch(text)
    if match:
        return queryset.filter(incident__number=int(match[1]))
    for word in text.split()[:10]:
        in_fields = reduce(or_, (Q(**{f"{name}__icontains": word}) for name in REVIEW_SEARCH_FIELDS))
        in_factors = Exists(ContributingFactor.objects.filter(review=OuterRef("pk"), description__icontains=word))
        queryset = queryset.filter(in_fields | in_factors)
    return queryset


def title_words(title):
    return [w for w in re.findall(r"[a-z0-9][a-z0-9_-]{2,}", title.lower()) if w not in STOP_WORDS]


@dataclass
class SimilarIncident:
    incident: Incident
    score: int = 0
    reasons: list = field(default_factory=list)


def similar_incidents(incident, user, limit=5):
    """Earlier incidents like this one, most alike first: same services, same alert group, similar title.

    Only incidents the user may see; [SimilarIncident(incident, score, reasons)]. A few indexed queries:
    candidates that share a service or an alert group or a title word, then scored here.
    """
    visible = Incident.objects.visible_to(user).exclude(pk=incident.pk).exclude(status=Incident.Status.DISMISSED)
    service_ids = set(incident.services.values_list("pk", flat=True))
    group_ids = set(
        Alert.objects.filter(incident=incident).values_list("group_id", flat=True).distinct()
    ) | set(incident.alert_groups.values_list("pk", flat=True))
    words = title_words(incident.title)[:6]

    conditions = []
    if service_ids:
        links = Incident.services.through.objects.filter(incident_id=OuterRef("pk"), service_id__in=service_ids)
        conditions.append(Exists(links))
    if group_ids:
        conditions.append(Exists(Alert.objects.filter(incident_id=OuterRef("pk"), group_id__in=group_ids)))
    conditions += [Q(title__icontains=word) for word in words]
    if not conditions:
        return []
    candidates = list(
        visible.filter(reduce(or_, conditions))
        .filter(detected_at__lte=incident.detected_at)
        .select_related("severity")
        .prefetch_related("services")
        .order_by("-detected_at", "-id")[:100]
    )
    if not candidates:
        return []
    same_group = set()
    if group_ids:
        same_group = set(
            Alert.objects.filter(incident__in=candidates, group_id__in=group_ids).values_list("incident_id", flat=True)
        )
    results = []
    for candidate in candidates:
        found = SimilarIncident(candidate)
        shared = [s.name for s in candidate.services.all() if s.pk in service_ids]
        if shared:
            found.score += 2 * len(shared)
            found.reasons.append("same service: " + ", ".join(shared))
        if candidate.pk in same_group:
            found.score += 5
            found.reasons.append("same alert group")
        common = sorted(set(words) & set(title_words(candidate.title)))
        if common:
            found.score += 2 * len(common)
            found.reasons.append("similar title: " + ", ".join(common))
        if found.score:
            results.append(found)
    results.sort(key=lambda f: (-f.score, -f.incident.detected_at.timestamp()))
    return results[:limit]


def recurrence_links(incident, user):
    """(the earlier incident this one repeats, [later incidents that repeat this one]), visible ones only."""
    visible = Incident.objects.visible_to(user)
    earlier = visible.filter(pk=incident.recurrence_of_id).first() if incident.recurrence_of_id else None
    later = list(visible.filter(recurrence_of_id=incident.pk).order_by("detected_at", "id"))
    return earlier, later
