# Full-text search for similar past incidents and the knowledge base (issue 12), PostgreSQL only:
# SQLite has no tsvector and uses the simple fallback in postmortems/selectors.py.
#
# - incidents_incident.search_document: a stored generated tsvector of the title (weight A) and the
#   summary (weight B), kept up to date by PostgreSQL on every write, with a GIN index. Stored, so
#   ranking reads it instead of parsing every matching row again. It is not a model field: Django never
#   names it in an INSERT or UPDATE, and postmortems.selectors reads it with raw SQL.
# - GIN expression indexes on the notes (timeline events of kind "note"), the review sections and the
#   contributing factors. postmortems.selectors uses exactly these expressions (search_sql), so the
#   planner matches them.
from django.db import migrations

from postmortems.search_sql import FACTOR_VECTOR, INCIDENT_DOCUMENT, NOTE_VECTOR, REVIEW_VECTOR

FORWARD = [
    f"ALTER TABLE incidents_incident ADD COLUMN IF NOT EXISTS search_document tsvector "
    f"GENERATED ALWAYS AS ({INCIDENT_DOCUMENT}) STORED",
    "CREATE INDEX IF NOT EXISTS incident_search_idx ON incidents_incident USING gin (search_document)",
    f"CREATE INDEX IF NOT EXISTS timeline_note_search_idx ON incidents_timelineevent USING gin (({NOTE_VECTOR})) "
    "WHERE kind = 'note'",
    f"CREATE INDEX IF NOT EXISTS review_search_idx ON postmortems_review USING gin (({REVIEW_VECTOR}))",
    f"CREATE INDEX IF NOT EXISTS factor_search_idx ON postmortems_contributingfactor USING gin (({FACTOR_VECTOR}))",
]
BACKWARD = [
    "DROP INDEX IF EXISTS factor_search_idx",
    "DROP INDEX IF EXISTS review_search_idx",
    "DROP INDEX IF EXISTS timeline_note_search_idx",
    "DROP INDEX IF EXISTS incident_search_idx",
    "ALTER TABLE incidents_incident DROP COLUMN IF EXISTS search_document",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("postmortems", "0002_action_items"), ("incidents", "0013_incident_page")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
