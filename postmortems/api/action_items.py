"""/api/v1/action-items/: list with filters, create, read, edit (status changes included).

Reads are generic (one query per page whatever its size); writes go through postmortems.services.
A restricted incident's items follow it: invisible (404, left out of lists) to those who may not see it.
"""

import django_filters as filters
from django import forms
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from incidents.api.fields import UrlOrBlankField
from incidents.api.filters import (
    REFERENCE,
    CommaSeparatedCharField,
    MultipleValueFilter,
    StatusFilter,
    StrictBooleanFilter,
)
from incidents.api.permissions import ModelPermissions
from incidents.api.serializers import IncidentReferenceField, LookupField
from incidents.api.views import ApiViewMixin
from incidents.models import Incident
from postmortems import services
from postmortems.models import ActionItem

Status = ActionItem.Status


class ActionItemSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:action-item-detail")
    incident = IncidentReferenceField(read_only=True, help_text="The incident it came from, e.g. INC-1042.")
    review = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="The id of the incident's post-incident review, if any."
    )
    owner = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="The owner's username."
    )
    is_overdue = serializers.SerializerMethodField(help_text="Still to do and past its due date.")
    tracker_url = UrlOrBlankField(read_only=True, help_text="Link to the ticket in an external tracker, or empty.")

    class Meta:
        model = ActionItem
        fields = [
            "id",
            "url",
            "incident",
            "review",
            "title",
            "description",
            "owner",
            "due_date",
            "is_overdue",
            "priority",
            "kind",
            "status",
            "wont_do_reason",
            "tracker_url",
            "created_at",
            "updated_at",
            "completed_at",
        ]
        read_only_fields = fields

    def get_is_overdue(self, item) -> bool:
        return item.is_overdue(self.context.get("today"))


def _http_url(value):
    if value and not value.lower().startswith(("http://", "https://")):
        raise serializers.ValidationError("The tracker URL must be an http or https address.")
    return value


class ActionItemUpdateSerializer(serializers.Serializer):
    """What a client may change. A status of wont_do needs a wont_do_reason."""

    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    owner = LookupField(
        slug_field="username",
        queryset=get_user_model().objects.filter(is_active=True),
        required=False,
        allow_null=True,
        help_text="A username, or null for nobody.",
    )
    due_date = serializers.DateField(required=False, allow_null=True)
    priority = serializers.ChoiceField(choices=ActionItem.Priority.choices, required=False)
    kind = serializers.ChoiceField(choices=ActionItem.Kind.choices, required=False)
    tracker_url = UrlOrBlankField(
        required=False, max_length=500, validators=[_http_url], help_text="http or https."
    )
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    wont_do_reason = serializers.CharField(
        required=False, allow_blank=True, max_length=20000, help_text="Required with status wont_do."
    )


class ActionItemCreateSerializer(ActionItemUpdateSerializer):
    incident = IncidentReferenceField(help_text="The incident it comes from, e.g. INC-1042.")


class ReferenceListField(CommaSeparatedCharField):
    def to_python(self, value):
        numbers = []
        for part in super().to_python(value):
            match = REFERENCE.fullmatch(part)
            if match is None:
                raise forms.ValidationError("Incident references look like INC-1042.", code="invalid")
            numbers.append(int(match[1]))
        return numbers


class IncidentReferenceFilter(MultipleValueFilter):
    field_class = ReferenceListField


class ActionItemFilterSet(filters.FilterSet):
    status = StatusFilter(choices=Status.choices, help_text="One or more statuses, e.g. open,in_progress.")
    priority = StatusFilter(choices=ActionItem.Priority.choices, help_text="One or more priorities.")
    kind = StatusFilter(choices=ActionItem.Kind.choices, help_text="One or more kinds.")
    owner = MultipleValueFilter(field_name="owner__username", help_text="One or more owners' usernames.")
    incident = IncidentReferenceFilter(
        field_name="incident__number", help_text="One or more incident references, e.g. INC-1042."
    )
    service = MultipleValueFilter(method="filter_service", help_text="Items of incidents affecting these services.")
    overdue = StrictBooleanFilter(
        method="filter_overdue", help_text="true: open or in progress and past the due date; false: the others."
    )
    due_before = filters.DateFilter(field_name="due_date", lookup_expr="lte", help_text="Due on or before this date.")
    due_after = filters.DateFilter(field_name="due_date", lookup_expr="gte", help_text="Due on or after this date.")
    search = filters.CharFilter(method="filter_search", help_text="Words in the title or description.")
    ordering = filters.OrderingFilter(
        fields=(("created_at", "created_at"), ("updated_at", "updated_at")),
        help_text="Sort key; prefix with - for descending. Default: -created_at.",
    )

    class Meta:
        model = ActionItem
        fields = []

    def filter_service(self, queryset, name, value):
        if not value:
            return queryset
        links = Incident.services.through.objects.filter(incident_id=OuterRef("incident_id"), service__slug__in=value)
        return queryset.filter(Exists(links))

    def filter_overdue(self, queryset, name, value):
        if value is None:
            return queryset
        overdue = Q(status__in=ActionItem.ACTIVE_STATUSES, due_date__lt=timezone.localdate())
        return queryset.filter(overdue) if value else queryset.exclude(overdue)

    def filter_search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(Q(title__icontains=value) | Q(description__icontains=value))


class OwnerMayUpdate(ModelPermissions):
    """The admin's permissions, plus: an item's owner may edit it (mark it done, say) without the group's
    change permission, as in the admin (issue 11)."""

    def has_permission(self, request, view):
        if super().has_permission(request, view):
            return True
        owner_edit = request.method == "PATCH" and getattr(view, "action", None) == "partial_update"
        return owner_edit and bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request, view, obj):
        if request.method != "PATCH" or request.user.has_perm("postmortems.change_actionitem"):
            return True
        return obj.owner_id == request.user.pk


@extend_schema_view(
    list=extend_schema(
        summary="List action items",
        description="Newest first by default. E.g. `?overdue=true&owner=alice` for Alice's overdue items.",
    ),
    retrieve=extend_schema(summary="Get an action item"),
)
class ActionItemViewSet(ApiViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = ActionItem.objects.all()
    serializer_class = ActionItemSerializer
    filterset_class = ActionItemFilterSet
    permission_classes = [OwnerMayUpdate]
    lookup_value_regex = r"\d+"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return services.action_items_visible_to(
            self.request.user, ActionItem.objects.select_related("incident", "owner")
        )

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "POST":
            return ActionItemCreateSerializer
        if self.request is not None and self.request.method == "PATCH":
            return ActionItemUpdateSerializer
        return ActionItemSerializer

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "today": timezone.localdate()}

    def item_response(self, item, status_code=status.HTTP_200_OK):
        item = self.get_queryset().get(pk=item.pk)
        data = ActionItemSerializer(item, context=self.get_serializer_context()).data
        headers = {"Location": data["url"]} if status_code == status.HTTP_201_CREATED else {}
        return Response(data, status=status_code, headers=headers)

    @staticmethod
    def _set_status(item, data, actor):
        if "status" in data or "wont_do_reason" in data:
            item = services.action_item_status_set(
                item=item, status=data.get("status", item.status), actor=actor, reason=data.get("wont_do_reason", "")
            )
        return item

    @extend_schema(
        summary="Add an action item",
        description="Recorded on the incident's timeline; linked to the incident's review when it has one.",
        request=ActionItemCreateSerializer,
        responses={201: ActionItemSerializer},
    )
    def create(self, request):
        serializer = ActionItemCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        status_data = {key: data.pop(key) for key in ("status", "wont_do_reason") if key in data}
        with transaction.atomic():
            item = services.action_item_create(actor=request.user, **data)
            if status_data.get("status", Status.OPEN) != Status.OPEN:
                item = self._set_status(item, status_data, request.user)
        return self.item_response(item, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit an action item",
        description="Any of its fields, and its status: open, in_progress, done, or wont_do with a "
        "wont_do_reason. Done and won't do stamp completed_at; reopening clears it. Every change is "
        "recorded on the incident's timeline.",
        request=ActionItemUpdateSerializer,
        responses={200: ActionItemSerializer},
    )
    def partial_update(self, request, pk=None):
        item = self.get_object()
        serializer = ActionItemUpdateSerializer(data=request.data, partial=True, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        status_data = {key: data.pop(key) for key in ("status", "wont_do_reason") if key in data}
        with transaction.atomic():
            if data:
                item = services.action_item_update(item=item, actor=request.user, **data)
            item = self._set_status(item, status_data, request.user)
        return self.item_response(item)


ROUTES = [("action-items", ActionItemViewSet, "action-item")]
