import re
import time
from datetime import timezone as dt_timezone

import django_filters as filters
from django import forms
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.signals import post_delete, post_save
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import get_model_field
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError

from incidents.models import Incident, Service
from incidents.timebounds import OUT_OF_RANGE, within_bounds


class CommaSeparatedMultipleChoiceField(forms.MultipleChoiceField):
    """Accepts ?status=a&status=b and ?status=a,b alike."""

    def to_python(self, value):
        return [part.strip() for item in super().to_python(value) for part in item.split(",") if part.strip()]


class CommaSeparatedCharField(forms.Field):
    widget = forms.SelectMultiple  # reads every occurrence of the parameter

    def to_python(self, value):
        items = value if isinstance(value, (list, tuple)) else [value] if value else []
        parts = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
        if any("\x00" in part or len(part) > 200 for part in parts):
            raise forms.ValidationError("Invalid value.", code="invalid")
        return parts


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class UTCDateTimeField(IsoDateTimeField):
    """PostgreSQL refuses offsets beyond ±15:59 (and Python years beyond 9999): compare in UTC, refuse the rest."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            value = value.astimezone(dt_timezone.utc)
        except OverflowError:
            raise forms.ValidationError(OUT_OF_RANGE, code="invalid") from None
        if not within_bounds(value):
            raise forms.ValidationError(OUT_OF_RANGE, code="invalid")
        return value


class UTCDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class StrictBooleanField(forms.NullBooleanField):
    """true/false (or 1/0, yes/no); anything else is an error instead of being ignored."""

    widget = forms.TextInput

    def to_python(self, value):
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        meaning = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
            str(value).lower()
        )
        if meaning is None:
            raise forms.ValidationError("Use true or false.", code="invalid")
        return meaning

    def validate(self, value):
        pass


class StrictBooleanFilter(filters.BooleanFilter):
    field_class = StrictBooleanField


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class MultipleValueFilter(filters.Filter):
    field_class = CommaSeparatedCharField

    def filter(self, qs, value):
        return qs.filter(**{f"{self.field_name}__in": value}) if value else qs


class StatusFilter(filters.MultipleChoiceFilter):
    field_class = CommaSeparatedMultipleChoiceField

    def __init__(self, *args, **kwargs):
        # A status is a column of the row: no join, so no DISTINCT (which would sort the whole table).
        kwargs.setdefault("distinct", False)
        super().__init__(*args, **kwargs)


class SeverityLevelsField(CommaSeparatedCharField):
    def to_python(self, value):
        levels = super().to_python(value)
        if not all(level.isdigit() and len(level) < 6 for level in levels):
            raise forms.ValidationError("Severity levels are numbers, e.g. severity=1,2.", code="invalid")
        return [int(level) for level in levels]


@extend_schema_field({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 32767}})
class SeverityFilter(MultipleValueFilter):
    field_class = SeverityLevelsField


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter quietly drops what it cannot read: an empty ``?detected_before=``, ``?active=null`` on a
    boolean, ``?severity=0.5`` for a level. The schema promises a date-time, a boolean, an integer, a value
    from a list: anything else is a 400 here, like every other bad filter value, never an ignored filter.
    Free text (CharFilter, a MultipleValueFilter of names) may be empty."""

    FREE_TEXT = (filters.CharFilter, MultipleValueFilter)

    narrowed = False  # DRF makes a backend per use: filter_queryset sets it, to_html (the form) does not

    def filter_queryset(self, request, queryset, view):
        self.narrowed = True  # only the filters asked for (see IncidentFilterSet.narrowed_to)
        return super().filter_queryset(request, queryset, view)

    def get_filterset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None:
            return None
        if self.narrowed and hasattr(filterset_class, "narrowed_to"):
            filterset_class = filterset_class.narrowed_to(request.query_params.keys())
        filterset = filterset_class(**self.get_filterset_kwargs(request, queryset, view))
        if filterset is not None:
            errors = self.value_errors(filterset, request.query_params)
            if errors:
                raise ValidationError(errors)
        return filterset

    def value_errors(self, filterset, params):
        errors = {}
        for name, filter_ in filterset.filters.items():
            for value in params.getlist(name):
                problem = self.problem(filterset, filter_, value)
                if problem:
                    errors[name] = [problem]
                    break
        return errors

    def problem(self, filterset, filter_, value):
        if value.strip() == "":
            # Free text may be empty, and an empty ordering means the default one.
            empty_ok = type(filter_) in self.FREE_TEXT or isinstance(filter_, filters.OrderingFilter)
            return None if empty_ok else "A value is required."
        if isinstance(filter_, filters.BooleanFilter) and not isinstance(filter_, StrictBooleanFilter):
            return None if value.lower() in ("true", "false") else "Use true or false."
        if isinstance(filter_, filters.NumberFilter) and self.is_integer_field(filterset, filter_):
            return None if re.fullmatch(r"-?[0-9]{1,18}", value) else "A whole number is required."
        return None

    @staticmethod
    def is_integer_field(filterset, filter_):
        field = get_model_field(filterset._meta.model, filter_.field_name) if filterset._meta.model else None
        return isinstance(field, (models.IntegerField, models.ForeignKey))


# Service slugs -> ids, per process, so the service filter costs no query of its own. Saving or deleting a
# service clears it at once in the process that did it; another process may still read a renamed service's
# old slug for up to SERVICE_IDS_SECONDS (as API keys are trusted for API_KEY_CACHE_SECONDS). A slug not
# in it is looked up each time, so a new service is found at once.
SERVICE_IDS_SECONDS = 10
_service_ids = {}  # slug -> (service id, monotonic time it was read)
_SERVICE_IDS_MAX = 10_000


def service_ids_clear(**_signal_kwargs):
    _service_ids.clear()


def service_ids(slugs):
    """The ids of the services with these slugs (unknown slugs have none)."""
    now = time.monotonic()
    ids, missing = [], []
    for slug in slugs:
        cached = _service_ids.get(slug)
        if cached is not None and now - cached[1] < SERVICE_IDS_SECONDS:
            ids.append(cached[0])
        else:
            missing.append(slug)
    if missing:
        found = Service.objects.filter(slug__in=missing).order_by().values_list("slug", "id")
        for slug, pk in found:
            if len(_service_ids) >= _SERVICE_IDS_MAX:
                _service_ids.clear()
            _service_ids[slug] = (pk, now)
            ids.append(pk)
    return ids


post_save.connect(service_ids_clear, sender=Service, dispatch_uid="incidents-api-service-ids")
post_delete.connect(service_ids_clear, sender=Service, dispatch_uid="incidents-api-service-ids-del")


REFERENCE = re.compile(r"(?:INC-)?(\d{1,9})", re.IGNORECASE)


class IncidentFilterSet(filters.FilterSet):
    status = StatusFilter(choices=Incident.Status.choices, help_text="One or more statuses.")
    severity = SeverityFilter(field_name="severity__level", help_text="One or more severity levels, e.g. 1,2.")
    service = MultipleValueFilter(method="filter_service", help_text="One or more service slugs.")
    commander = MultipleValueFilter(field_name="commander__username", help_text="One or more usernames.")
    open = StrictBooleanFilter(method="filter_open", help_text="true: still open; false: mitigated or later.")
    detected_after = UTCDateTimeFilter(field_name="detected_at", lookup_expr="gte")
    detected_before = UTCDateTimeFilter(field_name="detected_at", lookup_expr="lt")
    updated_since = UTCDateTimeFilter(
        field_name="updated_at",
        lookup_expr="gte",
        help_text="Incidents changed at or after this time, for incremental sync: with ordering=updated_at, "
        "page through and keep the last updated_at you saw for the next run.",
    )
    search = filters.CharFilter(
        method="filter_search", help_text="A reference (INC-1042), or words in title or summary."
    )
    ordering = filters.OrderingFilter(
        fields=(
            ("detected_at", "detected_at"),
            ("number", "reference"),
            ("severity__level", "severity"),
            ("updated_at", "updated_at"),
            ("last_activity_at", "last_activity_at"),
        ),
        help_text="Sort key; prefix with - for descending. Default: -detected_at.",
    )

    class Meta:
        model = Incident
        fields = []

    def get_form_class(self):
        # The form depends on the filters alone, not the request: build its class once, not per request.
        cls = type(self)
        if "_form_class" not in cls.__dict__:
            cls._form_class = super().get_form_class()
        return cls._form_class

    _NARROWED_MAX = 256

    @classmethod
    def narrowed_to(cls, names):
        """This filter set with only the filters named (a request's parameters): a filter set copies every
        filter and its form every field, so a request pays for the filters it uses, not all ten. An
        absent filter filters nothing, so the result is the same. One class per set of names, built once."""
        names = frozenset(cls.base_filters.keys() & set(names))
        if len(names) == len(cls.base_filters):
            return cls
        narrowed = cls.__dict__.get("_narrowed")
        if narrowed is None:
            narrowed = cls._narrowed = {}
        subclass = narrowed.get(names)
        if subclass is None:
            subclass = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
            subclass.base_filters = {name: f for name, f in cls.base_filters.items() if name in names}
            if len(narrowed) >= cls._NARROWED_MAX:
                narrowed.clear()
            narrowed[names] = subclass
        return subclass

    def filter_service(self, queryset, name, value):
        """On the through table's own service ids, not joined to the slug: then the planner knows how
        common each service is, so a busy one walks the (detected_at, id) index probing (incident_id,
        service_id) per row and a rare one starts from its few links; and no known slug reads no incident
        at all. Joined to the slug, every service looked alike: ``?service=<unknown or rare>`` walked the
        whole table (0.8 s at 200,000 incidents)."""
        if not value:
            return queryset
        ids = service_ids(value)
        if not ids:
            return queryset.none()
        links = Incident.services.through.objects.filter(incident_id=OuterRef("pk"), service_id__in=ids)
        return queryset.filter(Exists(links))

    def filter_open(self, queryset, name, value):
        if value is None:
            return queryset
        return queryset.open() if value else queryset.exclude(status__in=Incident.OPEN_STATUSES)

    def filter_search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        text = Q(title__icontains=value) | Q(summary__icontains=value)
        match = REFERENCE.fullmatch(value)
        return queryset.filter(Q(number=int(match[1])) | text if match else text)
