"""The PostgreSQL full-text expressions behind search: the migration indexes exactly these, and the
selectors query exactly these, so the planner uses the indexes (changing one needs a new migration that
rebuilds its index: postmortems/migrations/0003_search.py imports these). English stemming ("timeouts" finds
"timeout"); coalesce and || only, because an index expression must be immutable (concat_ws is not).
"""

CONFIG = "'english'::regconfig"

# Stored as the generated column incidents_incident.search_document.
INCIDENT_DOCUMENT = (
    f"setweight(to_tsvector({CONFIG}, coalesce(title, '')), 'A') || "
    f"setweight(to_tsvector({CONFIG}, coalesce(summary, '')), 'B')"
)
NOTE_VECTOR = f"to_tsvector({CONFIG}, coalesce(body, ''))"
SECTIONS = (
    "summary",
    "customer_impact",
    "timeline",
    "root_cause",
    "contributing_factors",
    "what_went_well",
    "what_went_badly",
    "lessons_learned",
)
REVIEW_VECTOR = f"to_tsvector({CONFIG}, " + " || ' ' || ".join(f"coalesce({name}, '')" for name in SECTIONS) + ")"
FACTOR_VECTOR = f"to_tsvector({CONFIG}, coalesce(description, ''))"

# How much each place counts towards an incident's rank: its own title and summary (weights A/B inside
# the document) first, then its published review and factors, then the notes of its timeline.
REVIEW_WEIGHT = 0.6
FACTOR_WEIGHT = 0.4
NOTE_WEIGHT = 0.3


def matches_sql(*, published_only, with_review):
    """SQL giving (incident_id, rank) for every incident matching the tsquery %(q)s, best first.

    published_only: only published reviews (and their factors) count, as in the knowledge base shown
    to everyone; with_review: only incidents that have a review (the review list's search).
    """
    status = "AND r.status = 'published'" if published_only else ""
    has_review = (
        "AND EXISTS (SELECT 1 FROM postmortems_review r2 WHERE r2.incident_id = {col}"
        + (" AND r2.status = 'published'" if published_only else "")
        + ")"
    )
    own = has_review.format(col="i.id") if with_review else ""
    notes = has_review.format(col="e.incident_id") if with_review else ""
    return f"""
        SELECT incident_id, sum(rank) AS rank FROM (
            SELECT i.id AS incident_id, ts_rank(i.search_document, q) AS rank
              FROM incidents_incident i, query WHERE i.search_document @@ q {own}
            UNION ALL
            SELECT e.incident_id, {NOTE_WEIGHT} * ts_rank({NOTE_VECTOR.replace("body", "e.body")}, q)
              FROM incidents_timelineevent e, query
             WHERE e.kind = 'note' AND {NOTE_VECTOR.replace("body", "e.body")} @@ q {notes}
            UNION ALL
            SELECT r.incident_id, {REVIEW_WEIGHT} * ts_rank({_prefixed(REVIEW_VECTOR, "r")}, q)
              FROM postmortems_review r, query WHERE {_prefixed(REVIEW_VECTOR, "r")} @@ q {status}
            UNION ALL
            SELECT r.incident_id, {FACTOR_WEIGHT} * ts_rank({FACTOR_VECTOR.replace("description", "f.description")}, q)
              FROM postmortems_contributingfactor f JOIN postmortems_review r ON r.id = f.review_id, query
             WHERE {FACTOR_VECTOR.replace("description", "f.description")} @@ q {status}
        ) found GROUP BY incident_id"""


def _prefixed(vector, alias):
    for name in SECTIONS:
        vector = vector.replace(f"coalesce({name},", f"coalesce({alias}.{name},")
    return vector
