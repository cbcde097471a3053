"""Input fields shared by every app's API serializers."""

from datetime import UTC, datetime

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from incidents.timebounds import OUT_OF_RANGE, within_bounds


@extend_schema_field({"anyOf": [{"type": "string", "format": "uri"}, {"type": "string", "maxLength": 0}]})
class UrlOrBlankField(serializers.URLField):
    """A link that may be left empty: "" or a URL, as the schema says (a bare URLField documents "uri" only)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)


class BoundedDateTimeField(serializers.DateTimeField):
    """A time between 1970 and 2100 (incidents.timebounds): year 1 or 9999 is a 400, never stored."""

    default_error_messages = {"out_of_range": OUT_OF_RANGE}

    def to_internal_value(self, value):
        try:
            parsed = super().to_internal_value(value)
        except OverflowError:  # an offset that pushes the time past year 9999 or before year 1
            self.fail("out_of_range")
        if not within_bounds(parsed):
            self.fail("out_of_range")
        return parsed


class BoundedDateField(serializers.DateField):
    """A calendar date between 1970 and 2100."""

    default_error_messages = {"out_of_range": OUT_OF_RANGE}

    def to_internal_value(self, value):
        parsed = super().to_internal_value(value)
        if not within_bounds(datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)):
            self.fail("out_of_range")
        return parsed
