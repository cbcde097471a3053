"""Reads shared by the admin and the API: the knowledge base search and "similar past incidents"."""

import re
from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from django.db import connection
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, Value, When

from incidents.models import Alert, Incident, TimelineEvent, visible_incident_rows

from . import search_sql
from .models import REVIEW_SECTIONS, ContributingFactor, Review

REFERENCE = re.compile(r"(?:INC-?)?(\d{1,9})", re.IGNORECASE)
# Words too common to say two incident titles are alike.
STOP_WORDS = frozenset(
    "a an and are as at be by for from has in is it of on or the to was were with after before during "
    "error errors issue issues incident incidents problem problems down slow failing failed failure".split()
)


def review_list(user):
    """The reviews this user may see: those of incidents they may see (restricted ones follow the incident)."""
    return visible_incident_rows(Review.objects.all(), user, "incident")


def _words(text, limit=10):
    """Lower-case words of a search text (letters, digits, _ and -), at most `limit`."""
    return re.findall(r"[a-z0-9][a-z0-9_-]*", text.lower())[:limit]


def _tsquery(words, operator):
    # Each word quoted as a lexeme source: only [a-z0-9_-] reach PostgreSQL's tsquery parser.
    return f" {operator} ".join(f"'{word}'" for word in words)


def incident_text_matches(text, *, any_word=False, published_only=True, with_review=False, limit=None):
    """[(incident_id, rank)], best first: incidents whose title, summary, notes or review (published ones
    unless published_only=False) match `text`, over the whole history.

    Every word must match (any_word=True: at least one, ranked by how well). PostgreSQL full-text search
    with English stemming, on the indexes of postmortems/migrations/0003_search.py; elsewhere (SQLite) a
    simple fallback: case-insensitive containment, ranked by how many places and words match.
    """
    words = _words(text)
    if not words:
        return []
    if _full_text_ready():
        sql = (
            f"WITH query AS (SELECT to_tsquery('english', %s) AS q) "
            f"SELECT incident_id, rank FROM ({search_sql.matches_sql(published_only=published_only, with_review=with_review)}) m "
            f"ORDER BY rank DESC, incident_id DESC" + (" LIMIT %s" if limit else "")
        )
        params = [_tsquery(words, "|" if any_word else "&"), *([limit] if limit else [])]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [(incident_id, float(rank)) for incident_id, rank in cursor.fetchall()]
    return _fallback_matches(words, any_word=any_word, published_only=published_only, with_review=with_review)[:limit]


_ready = {}


def _full_text_ready():
    """PostgreSQL with the search column and indexes of migration postmortems 0003. A database that
    recorded that migration while it was an empty placeholder (this session's dev databases) uses the
    fallback instead of failing."""
    if connection.vendor != "postgresql":
        return False
    name = connection.settings_dict["NAME"]
    if name not in _ready:
        with connection.cursor() as cursor:
            columns = connection.introspection.get_table_description(cursor, Incident._meta.db_table)
        _ready[name] = any(column.name == "search_document" for column in columns)
    return _ready[name]


def _fallback_matches(words, *, any_word, published_only, with_review):
    """The SQLite fallback: per word, incidents containing it in a title, summary, note or review."""
    reviews = Review.objects.filter(status=Review.Status.PUBLISHED) if published_only else Review.objects.all()
    weights = {}
    per_word = []
    for word in words:
        places = [
            (Incident.objects.filter(title__icontains=word), "pk", 1.0),
            (Incident.objects.filter(summary__icontains=word), "pk", 0.5),
            (TimelineEvent.objects.filter(kind=TimelineEvent.Kind.NOTE, body__icontains=word), "incident_id", 0.3),
            (
                reviews.filter(reduce(or_, (Q(**{f"{name}__icontains": word}) for name, _label in REVIEW_SECTIONS))),
                "incident_id",
                0.6,
            ),
            (
                ContributingFactor.objects.filter(review__in=reviews, description__icontains=word),
                "review__incident_id",
                0.4,
            ),
        ]
        found = set()
        for rows, column, weight in places:
            for incident_id in rows.values_list(column, flat=True).distinct():
                found.add(incident_id)
                weights[incident_id] = weights.get(incident_id, 0) + weight
        per_word.append(found)
    matched = set.union(*per_word) if any_word else set.intersection(*per_word)
    if with_review:
        matched &= set(reviews.values_list("incident_id", flat=True))
    return sorted(((i, weights[i]) for i in matched), key=lambda pair: (-pair[1], -pair[0]))


def review_search(queryset, text):
    """Reviews whose incident matches every word of `text` (title, summary, notes, any section of the
    review, a contributing factor), best match first; over every review, whatever its age.

    A reference (INC-1042, 1042) finds that incident's review.
    """
    text = text.strip()
    if not text:
        return queryset
    match = REFERENCE.fullmatch(text)
    if match:
        return queryset.filter(incident__number=int(match[1]))
    ranked = incident_text_matches(text, published_only=False, with_review=True)
    if not ranked:
        return queryset.none()
    ranks = dict(ranked)
    order = Case(*(When(incident_id=i, then=Value(n)) for n, i in enumerate(ranks)), output_field=IntegerField())
    return queryset.filter(incident_id__in=list(ranks)).annotate(search_position=order).order_by("search_position")


def title_words(title):
    return [w for w in re.findall(r"[a-z0-9][a-z0-9_-]{2,}", title.lower()) if w not in STOP_WORDS]


@dataclass
class SimilarIncident:
    incident: Incident
    score: int = 0
    reasons: list = field(default_factory=list)
    text_rank: float = 0.0


SIMILAR_TEXT_CANDIDATES = 50
SIMILAR_SERVICE_CANDIDATES = 20


def similar_incidents(incident, user, limit=5):
    """Earlier incidents like this one, most alike first: same alert group, similar text (the title's words
    in their title, summary, notes or published review, by full-text rank over the whole history), same
    services. Only incidents the user may see; [SimilarIncident(incident, score, reasons)].
    """
    visible = Incident.objects.visible_to(user).exclude(pk=incident.pk).exclude(status=Incident.Status.DISMISSED)
    service_ids = set(incident.services.values_list("pk", flat=True))
    group_ids = set(Alert.objects.filter(incident=incident).values_list("group_id", flat=True).distinct()) | set(
        incident.alert_groups.values_list("pk", flat=True)
    )
    words = title_words(incident.title)[:8]

    # Text first: every word, then any word if that finds too few (ranked by how many and how well).
    ranks = {}
    if words:
        for any_word in (False, True):
            for incident_id, rank in incident_text_matches(
                " ".join(words), any_word=any_word, limit=SIMILAR_TEXT_CANDIDATES + 1
            ):
                ranks.setdefault(incident_id, rank + (0 if any_word else 1))
            if len(ranks) > limit:
                break
    ranks.pop(incident.pk, None)
    candidate_ids = set(ranks)
    if group_ids:
        candidate_ids |= set(
            Alert.objects.filter(group_id__in=group_ids).exclude(incident=None).values_list("incident_id", flat=True)
        )
    if service_ids:
        links = Incident.services.through.objects.filter(incident_id=OuterRef("pk"), service_id__in=service_ids)
        candidate_ids |= set(
            visible.filter(Exists(links), detected_at__lte=incident.detected_at)
            .order_by("-detected_at", "-id")
            .values_list("pk", flat=True)[:SIMILAR_SERVICE_CANDIDATES]
        )
    if not candidate_ids:
        return []
    candidates = list(
        visible.filter(pk__in=candidate_ids, detected_at__lte=incident.detected_at)
        .select_related("severity")
        .prefetch_related("services")
    )
    same_group = set()
    if group_ids:
        same_group = set(
            Alert.objects.filter(incident__in=candidates, group_id__in=group_ids).values_list("incident_id", flat=True)
        )
    results = []
    for candidate in candidates:
        found = SimilarIncident(candidate, text_rank=ranks.get(candidate.pk, 0.0))
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
        elif candidate.pk in ranks:
            found.score += 1
            found.reasons.append("similar words in its summary, notes or review")
        if found.score:
            results.append(found)
    results.sort(key=lambda f: (-f.score, -f.text_rank, -f.incident.detected_at.timestamp()))
    return results[:limit]


def recurrence_links(incident, user):
    """(the earlier incident this one repeats, [later incidents that repeat this one]), visible ones only."""
    visible = Incident.objects.visible_to(user)
    earlier = visible.filter(pk=incident.recurrence_of_id).first() if incident.recurrence_of_id else None
    later = list(visible.filter(recurrence_of_id=incident.pk).order_by("detected_at", "id"))
    return earlier, later
