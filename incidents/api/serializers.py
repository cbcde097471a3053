"""Output serializers read what the selectors loaded (no hidden queries); input serializers only validate.

Writes never go through ``serializer.save()`` for incidents: the views hand validated data to the services.
"""

import re

from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from incidents.models import (
    Alert,
    Incident,
    IncidentMember,
    RoleAssignment,
    Service,
    ServiceGroup,
    Severity,
    TimelineEvent,
    links_hidden_from,
    references_redacted,
    sees_all_incidents,
)

from .fields import BoundedDateTimeField

Status = Incident.Status


class LookupField(serializers.SlugRelatedField):
    """A related object named by a unique text field (slug, username). Anything but plain text is invalid."""

    def to_internal_value(self, data):
        if not isinstance(data, str) or "\x00" in data or len(data) > 200 or not data.isprintable():
            self.fail("invalid")
        return super().to_internal_value(data)

    def run_validation(self, data=serializers.empty):
        if data == "":  # DRF reads "" as null on related fields; the schema does not offer it
            self.fail("invalid")
        return super().run_validation(data)


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": 32767})
class SeverityLevelField(serializers.SlugRelatedField):
    """A severity named by its level number: 1 is the most severe."""

    default_error_messages = {
        "does_not_exist": "There is no severity level {value}.",
        "invalid": "A severity is a level number, e.g. 1.",
    }

    def __init__(self, **kwargs):
        if not kwargs.get("read_only"):
            kwargs.setdefault("queryset", Severity.objects.all())
        super().__init__(slug_field="level", **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int) or not 0 <= data <= 32767:
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "pattern": "^INC-[0-9]+$", "example": "INC-1042"})
class IncidentReferenceField(serializers.RelatedField):
    """An incident named by its reference, e.g. INC-1042."""

    default_error_messages = {
        "does_not_exist": "There is no incident {value}.",
        "invalid": "An incident reference looks like INC-1042.",
    }

    def __init__(self, **kwargs):
        if not kwargs.get("read_only"):
            kwargs.setdefault("queryset", Incident.objects.all())
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        incidents = super().get_queryset()
        return incidents.visible_to(request.user) if request is not None else incidents.none()

    def to_internal_value(self, data):
        match = re.fullmatch(r"INC-(\d{1,9})", data.strip(), re.IGNORECASE) if isinstance(data, str) else None
        if match is None:
            self.fail("invalid")
        try:
            return self.get_queryset().get(number=int(match[1]))
        except Incident.DoesNotExist:
            self.fail("does_not_exist", value=data)

    def run_validation(self, data=serializers.empty):
        if data == "":  # DRF reads "" as null on related fields; the schema does not offer it
            self.fail("invalid")
        return super().run_validation(data)

    def to_representation(self, value):
        return value.reference


def _hidden_links(user, incidents):
    """links_hidden_from, also for rows that carry their links' numbers and restriction as columns (the list)."""
    if not incidents or "recurrence_restricted" not in incidents[0].__dict__:
        return links_hidden_from(user, incidents)
    linked = {
        pk
        for incident in incidents
        for pk, restricted in (
            (incident.recurrence_of_id, incident.recurrence_restricted),
            (incident.duplicate_of_id, incident.duplicate_restricted),
        )
        if restricted
    }
    if not linked or sees_all_incidents(user):
        return set()
    return linked - set(Incident.objects.visible_to(user).filter(pk__in=linked).values_list("pk", flat=True))


class IncidentListSerializer(serializers.ListSerializer):
    def to_representation(self, data):
        incidents = list(data.all() if hasattr(data, "all") else data)
        self.child.hidden_links = _hidden_links(self.context["request"].user, incidents)
        return [self.child.to_representation(incident) for incident in incidents]


class IncidentSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:incident-detail")
    reference = serializers.CharField(read_only=True, help_text="INC-<number>, the name people use.")
    severity = SeverityLevelField(read_only=True, help_text="Severity level: 1 is the most severe.")
    services = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    commander = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="The active incident commander's username."
    )
    recurrence_of = IncidentReferenceField(read_only=True, allow_null=True)
    duplicate_of = IncidentReferenceField(read_only=True, allow_null=True)
    status = serializers.ChoiceField(choices=Status.choices, read_only=True)
    is_open = serializers.BooleanField(read_only=True)
    restricted = serializers.BooleanField(
        source="is_restricted", read_only=True, help_text="Visible only to its participants."
    )
    allowed_transitions = serializers.ListField(
        child=serializers.ChoiceField(choices=Status.choices),
        read_only=True,
        help_text="Statuses this incident may move to now.",
    )

    class Meta:
        model = Incident
        fields = [
            "id",
            "url",
            "reference",
            "title",
            "summary",
            "status",
            "is_open",
            "restricted",
            "allowed_transitions",
            "severity",
            "services",
            "started_at",
            "detected_at",
            "acknowledged_at",
            "mitigated_at",
            "resolved_at",
            "closed_at",
            "commander",
            "recurrence_of",
            "duplicate_of",
            "created_at",
            "updated_at",
            "last_activity_at",
            "version",
        ]
        read_only_fields = fields
        list_serializer_class = IncidentListSerializer

    def to_representation(self, instance):
        data = self.plain_representation(instance)
        hidden = getattr(self, "hidden_links", None)
        if hidden is None:  # a single incident; a list works this out once for its page
            hidden = links_hidden_from(self.context["request"].user, [instance])
        for field in ("recurrence_of", "duplicate_of"):
            if getattr(instance, f"{field}_id") in hidden:
                data[field] = None  # links to incidents this user may not see are left out
        return data

    def plain_representation(self, instance):
        """What ModelSerializer.to_representation gives, five times faster: the list's hot path.

        The fields below are read straight from the row (no field objects, no reverse() per row); any
        other field in Meta.fields goes through DRF as usual. test_api_speed checks the two agree.
        """
        plan = self.__dict__.get("_plain_plan")
        if plan is None:
            # Built from the names alone: self.fields (DRF's model introspection) only for a field PLAIN lacks.
            plan = self._plain_plan = [
                (name, PLAIN[name], None) if name in PLAIN else (name, None, self.fields[name])
                for name in self.Meta.fields
            ]
            self._url_parts = self._detail_url_parts()
            self._timezone = timezone.get_current_timezone()
        data = {}
        for name, read, field in plan:
            if read is not None:
                data[name] = read(self, instance)
            else:
                attribute = field.get_attribute(instance)
                data[name] = None if attribute is None else field.to_representation(attribute)
        return data

    def _detail_url_parts(self):
        request = self.context.get("request")
        url = reverse("api:incident-detail", kwargs={"pk": URL_SENTINEL})
        url = request.build_absolute_uri(url) if request is not None else url
        return url.split(str(URL_SENTINEL), 1)

    def _time(self, value):
        if value is None:
            return None
        text = value.astimezone(self._timezone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text


URL_SENTINEL = 987654321987654321
_STATUS_ORDER = {status: i for i, status in enumerate(Status.values)}
_TRANSITIONS = {
    status: [str(t) for t in sorted(targets, key=_STATUS_ORDER.__getitem__)]
    for status, targets in Incident.TRANSITIONS.items()
}


def _time_of(name):
    return lambda serializer, incident: serializer._time(getattr(incident, name))


def _commander(incident):
    if "commander_username" in incident.__dict__:  # the list's column
        return incident.__dict__["commander_username"]
    return incident.commander.username if incident.commander_id is not None else None


def _service_slugs(incident):
    slugs = getattr(incident, "service_slugs", None)  # annotated on PostgreSQL (incidents.api.views)
    return list(slugs) if slugs is not None else [service.slug for service in incident.services.all()]


def _reference_of(name, number_column):
    def read(serializer, incident):
        if number_column in incident.__dict__:  # the list's column
            number = incident.__dict__[number_column]
            return None if number is None else f"INC-{number}"
        linked = getattr(incident, name)
        return None if linked is None else linked.reference

    return read


PLAIN = {
    "id": lambda s, i: i.pk,
    "url": lambda s, i: f"{s._url_parts[0]}{i.pk}{s._url_parts[1]}",
    "reference": lambda s, i: i.reference,
    "title": lambda s, i: i.title,
    "summary": lambda s, i: i.summary,
    "status": lambda s, i: i.status,
    "is_open": lambda s, i: i.is_open,
    "restricted": lambda s, i: i.is_restricted,
    "allowed_transitions": lambda s, i: list(_TRANSITIONS[i.status]),
    "severity": lambda s, i: i.__dict__["severity_level"] if "severity_level" in i.__dict__ else i.severity.level,
    "services": lambda s, i: _service_slugs(i),
    "commander": lambda s, i: _commander(i),
    "recurrence_of": _reference_of("recurrence_of", "recurrence_number"),
    "duplicate_of": _reference_of("duplicate_of", "duplicate_number"),
    "version": lambda s, i: i.version,
    **{
        name: _time_of(name)
        for name in (
            "started_at",
            "detected_at",
            "acknowledged_at",
            "mitigated_at",
            "resolved_at",
            "closed_at",
            "created_at",
            "updated_at",
            "last_activity_at",
        )
    },
}


class IncidentInputSerializer(serializers.Serializer):
    """What a client may set when declaring or editing an incident. Status moves have their own endpoints."""

    title = serializers.CharField(max_length=200)
    summary = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    severity = SeverityLevelField(help_text="Severity level: 1 is the most severe.")
    services = LookupField(
        slug_field="slug", many=True, required=False, queryset=Service.objects.all(), help_text="Service slugs."
    )
    started_at = BoundedDateTimeField(required=False, allow_null=True, help_text="When impact began, if known.")
    detected_at = BoundedDateTimeField(required=False, help_text="Defaults to now.")
    recurrence_of = IncidentReferenceField(
        required=False, allow_null=True, help_text="An earlier incident this one repeats, e.g. INC-1042."
    )
    restricted = serializers.BooleanField(
        source="is_restricted",
        required=False,
        help_text="Restrict it to its role holders, members and those who may see all restricted incidents.",
    )


class IncidentDeclareInputSerializer(IncidentInputSerializer):
    commander = LookupField(
        slug_field="username",
        queryset=get_user_model().objects.filter(is_active=True),
        required=False,
        allow_null=True,
        help_text="Who takes command: a username. Leave it out and the declaring user (the key's user) takes "
        "command; null declares without a commander.",
    )


class TransitionInputSerializer(serializers.Serializer):
    to = serializers.ChoiceField(choices=Status.choices, help_text="The status to move to.")
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)


class AcknowledgeInputSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)


class TimelineEventSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="Who did it; null for the system."
    )

    class Meta:
        model = TimelineEvent
        fields = ["id", "kind", "occurred_at", "recorded_at", "actor", "body", "data"]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        # References to incidents the reader may not see (the view finds them for the page in one query).
        data["data"] = references_redacted(data["data"], self.context.get("hidden_references"))
        return data


class NoteInputSerializer(serializers.Serializer):
    body = serializers.CharField(max_length=20000)
    occurred_at = BoundedDateTimeField(
        required=False, help_text="When it happened, to write up history; defaults to now."
    )


class RoleAssignmentSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    assigned_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = RoleAssignment
        fields = ["id", "role", "user", "assigned_at", "relieved_at", "assigned_by", "is_active"]
        read_only_fields = fields


class RoleAssignInputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=RoleAssignment.Role.choices)
    user = LookupField(
        slug_field="username", queryset=get_user_model().objects.filter(is_active=True), help_text="A username."
    )


class IncidentMemberSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    added_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = IncidentMember
        fields = ["id", "user", "added_at", "added_by"]
        read_only_fields = fields


class MemberAddInputSerializer(serializers.Serializer):
    user = LookupField(
        slug_field="username", queryset=get_user_model().objects.filter(is_active=True), help_text="A username."
    )


class MemberRemovedSerializer(serializers.Serializer):
    user = serializers.CharField(help_text="The username taken off the incident.")
    notices = serializers.ListField(
        child=serializers.CharField(), help_text="What they leave behind, e.g. open action items they still own."
    )


class AlertSerializer(serializers.ModelSerializer):
    integration = serializers.CharField(source="group.integration.name", read_only=True)
    sender = serializers.CharField(source="group.integration.kind", read_only=True, help_text="alertmanager, …")
    severity = serializers.IntegerField(source="severity_level", read_only=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "integration",
            "sender",
            "fingerprint",
            "status",
            "starts_at",
            "ends_at",
            "acknowledged_at",
            "last_seen_at",
            "severity",
            "summary",
            "labels",
            "annotations",
        ]
        read_only_fields = fields


class ServiceSerializer(serializers.ModelSerializer):
    group = LookupField(
        slug_field="name",
        queryset=ServiceGroup.objects.all(),
        required=False,
        allow_null=True,
        help_text="The name of the service group it is listed under.",
    )

    class Meta:
        model = Service
        fields = ["id", "name", "slug", "description", "owning_team", "contact", "is_public", "group"]


class SeveritySerializer(serializers.ModelSerializer):
    class Meta:
        model = Severity
        fields = [
            "level",
            "name",
            "label",
            "definition",
            "expected_response",
            "ack_target_minutes",
            "update_interval_minutes",
            "review_required",
            "colour",
        ]
        read_only_fields = fields
