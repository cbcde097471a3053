"""Keyset ("cursor") pagination that stays fast on any page of a large table, in any offered ordering.

DRF's CursorPagination keys on the first ordering field plus an offset among equal values, which is
slow (and capped) when many rows share a value, e.g. ``?ordering=severity``. Here the cursor carries
the whole sort key of the row at the page boundary, the ordering always ends in the model's own
ordering and the primary key (so it is total), and the next page is read with
``WHERE first <= v1 AND (first < v1 OR (first = v1 AND second < v2) OR …)`` — an index range scan.
Cursors are signed, so a client cannot hand us values that were never in a page.
"""

from django.core import signing
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

SIGNING_SALT = "incidents.api.cursor"


def _key(field):
    """("severity__level", descending) from "-severity__level"."""
    return (field[1:], True) if field.startswith("-") else (field, False)


def _value(instance, path):
    for attr in path.split("__"):
        instance = getattr(instance, attr)
    return instance


def _column(path):
    return f"keyset_{path}"


def _json_value(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _after(keys, values):
    """Rows strictly after the boundary row in the ordering given by keys."""
    strictly_after = Q()
    for i, (path, descending) in enumerate(keys):
        step = Q(**{f"{path}__{'lt' if descending else 'gt'}": values[i]})
        for j in range(i):
            step &= Q(**{keys[j][0]: values[j]})
        strictly_after |= step
    first_path, first_descending = keys[0]
    return Q(**{f"{first_path}__{'lte' if first_descending else 'gte'}": values[0]}) & strictly_after


class KeysetPagination(BasePagination):
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    page_size = 25
    max_page_size = 100
    invalid_cursor_message = _("Invalid cursor: start again from the first page.")

    def ordering(self, queryset):
        """The queryset's ordering made total: the requested fields, then the model's ordering, then the pk."""
        fields = [f for f in (queryset.query.order_by or queryset.model._meta.ordering) if isinstance(f, str)]
        keys = [_key(f) for f in fields]
        for path, descending in (_key(f) for f in queryset.model._meta.ordering):
            if path not in (k[0] for k in keys):
                keys.append((path, descending))
        pk_name = queryset.model._meta.pk.name
        if not any(path in ("pk", pk_name) for path, _d in keys):
            keys.append((pk_name, keys[-1][1] if keys else False))
        return keys

    def get_page_size(self, request):
        """The default without the parameter; a 400 for anything but a whole number from 1 to max_page_size."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= self.max_page_size):
            raise exceptions.ValidationError(
                {self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size}."]}
            )
        return int(raw)

    def decode_cursor(self, request, keys):
        raw = request.query_params.get(self.cursor_query_param)
        if not raw:
            return None
        try:
            cursor = signing.loads(raw, salt=SIGNING_SALT)
        except signing.BadSignature:
            raise exceptions.ValidationError({self.cursor_query_param: [self.invalid_cursor_message]}) from None
        if cursor.get("o") != [[p, d] for p, d in keys]:
            raise exceptions.ValidationError({self.cursor_query_param: [self.invalid_cursor_message]})
        return cursor

    def encode_cursor(self, keys, instance, backwards):
        values = [instance.__dict__.get(_column(p), None) if "__" in p else _value(instance, p) for p, _d in keys]
        cursor = {"o": [[p, d] for p, d in keys], "v": [_json_value(v) for v in values]}
        if backwards:
            cursor["b"] = 1
        return replace_query_param(self.base_url, self.cursor_query_param, signing.dumps(cursor, salt=SIGNING_SALT))

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.base_url = request.build_absolute_uri()
        size = self.get_page_size(request)
        keys = self.ordering(queryset)
        cursor = self.decode_cursor(request, keys)
        backwards = bool(cursor and cursor.get("b"))
        read_keys = [(p, not d) for p, d in keys] if backwards else keys
        queryset = queryset.order_by(*(f"-{p}" if d else p for p, d in read_keys))
        # A sort key on a related row (severity__level) comes as a column of the page's query, so the
        # boundary rows' cursors never load that row (one query per page, whatever the ordering).
        queryset = queryset.annotate(**{_column(p): F(p) for p, _d in keys if "__" in p})
        if cursor is not None:
            queryset = queryset.filter(_after(read_keys, cursor["v"]))
        rows = list(queryset[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        if backwards:
            rows.reverse()
            has_previous, has_next = more, True
        else:
            has_previous, has_next = cursor is not None, more
        self.next_link = self.encode_cursor(keys, rows[-1], False) if has_next and rows else None
        if has_previous and rows:
            self.previous_link = self.encode_cursor(keys, rows[0], True)
        elif has_previous:  # an empty page after the last row: the first page is a safe way back
            self.previous_link = remove_query_param(self.base_url, self.cursor_query_param)
        else:
            self.previous_link = None
        return rows

    def get_paginated_response(self, data):
        return Response({"next": self.next_link, "previous": self.previous_link, "results": data})

    def get_paginated_response_schema(self, schema):
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {**link, "description": "The next page, or null on the last page."},
                "previous": {**link, "description": "The previous page, or null on the first page."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Opaque position from a `next` or `previous` link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page, {self.page_size} by default, at most {self.max_page_size}.",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]
