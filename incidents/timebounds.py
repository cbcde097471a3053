"""The range of times the product accepts from people and senders: 1970 through 2100 (UTC).

Anything outside is a typo or a sender's zero value, and once stored it breaks every computation over
the period (PostgreSQL intervals, charts, /metrics/). The API and alert ingestion both check with this.
"""

from datetime import UTC, datetime

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2101, 1, 1, tzinfo=UTC)  # exclusive: every moment of the year 2100 is accepted
OUT_OF_RANGE = "Times must fall between 1970-01-01 and 2100-12-31 (UTC)."


def within_bounds(value):
    """True for an aware datetime in the accepted range (a naive one is read as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return EARLIEST <= value < LATEST
