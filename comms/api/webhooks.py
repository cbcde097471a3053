"""Outbound webhooks in /api/v1/: endpoints (list, create, edit, delete) and the delivery log (read only).

Managing endpoints needs the comms webhook-endpoint permissions (superusers by default; see the
migration); allowing private destinations or restricted incidents needs more (see comms.webhooks).
Writes go through the services in comms.webhooks.
"""

import json

import django_filters as filters
from django import forms
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from comms import webhooks
from comms.models import WebhookDelivery, WebhookEndpoint
from incidents.api.filters import StrictBooleanFilter
from incidents.api.views import ApiViewMixin
from incidents.models import visible_incident_rows

Event = WebhookEndpoint.Event
State = WebhookDelivery.State


class WebhookEndpointSerializer(serializers.ModelSerializer):
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Event.choices),
        allow_empty=False,
        max_length=len(Event.choices) * 2,
        help_text="Event types to receive: " + ", ".join(Event.values) + ".",
    )
    secret = serializers.CharField(
        read_only=True, help_text="whsec_…: verify each delivery's webhook-signature with it (Standard Webhooks)."
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "events",
            "secret",
            "is_active",
            "allow_private_destination",
            "include_restricted",
            "created_at",
        ]
        read_only_fields = ["id", "secret", "created_at"]
        extra_kwargs = {
            "allow_private_destination": {
                "help_text": "Allow loopback, link-local and private addresses. Only administrators may set it."
            },
            "include_restricted": {
                "help_text": "Send events about restricted incidents too. Only those who see all of them may set it."
            },
        }


@extend_schema_field({"type": "object", "additionalProperties": True})
class PayloadField(serializers.Field):
    def to_representation(self, value):
        try:
            return json.loads(value)
        except ValueError:
            return {}


class WebhookDeliverySerializer(serializers.ModelSerializer):
    incident = serializers.CharField(
        source="incident.reference",
        read_only=True,
        allow_null=True,
        help_text="The incident it is about, e.g. INC-1042.",
    )
    payload = PayloadField(source="body", read_only=True, help_text="The JSON body sent (signed as is).")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint",
            "event_id",
            "event_type",
            "incident",
            "state",
            "attempts",
            "response_status_code",
            "response_body",
            "error",
            "next_attempt_at",
            "created_at",
            "last_attempt_at",
            "delivered_at",
            "payload",
        ]
        read_only_fields = fields


class IdFilter(filters.NumberFilter):
    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class WebhookEndpointFilterSet(filters.FilterSet):
    is_active = StrictBooleanFilter(help_text="true: only active endpoints; false: only disabled ones.")

    class Meta:
        model = WebhookEndpoint
        fields = []


class WebhookDeliveryFilterSet(filters.FilterSet):
    endpoint = IdFilter(field_name="endpoint_id", help_text="An endpoint's id.")
    state = filters.ChoiceFilter(choices=State.choices)
    event_type = filters.ChoiceFilter(choices=[*Event.choices, (webhooks.TEST_EVENT, "Test event")])

    class Meta:
        model = WebhookDelivery
        fields = []


@extend_schema_view(
    list=extend_schema(summary="List webhook endpoints"),
    create=extend_schema(
        summary="Add a webhook endpoint",
        description="The URL is checked: loopback, link-local and private destinations are refused unless "
        "allow_private_destination is set (administrators only). The response carries the signing secret.",
    ),
    update=extend_schema(summary="Replace a webhook endpoint"),
    partial_update=extend_schema(summary="Edit a webhook endpoint"),
    destroy=extend_schema(summary="Delete a webhook endpoint and its delivery log"),
)
class WebhookEndpointViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointSerializer
    filterset_class = WebhookEndpointFilterSet
    lookup_value_regex = r"\d+"

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_create(actor=request.user, **serializer.validated_data)
        return Response(self.get_serializer(endpoint).data, status=status.HTTP_201_CREATED)

    def update(self, request, pk=None, partial=False):
        endpoint = self.get_object()
        serializer = self.get_serializer(endpoint, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_update(endpoint=endpoint, actor=request.user, **serializer.validated_data)
        return Response(self.get_serializer(endpoint).data)

    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    def perform_destroy(self, instance):
        webhooks.webhook_endpoint_delete(endpoint=instance)


@extend_schema_view(
    list=extend_schema(
        summary="List webhook deliveries",
        description="Newest first: each event sent to each endpoint, its state, attempts and the last answer.",
    )
)
class WebhookDeliveryViewSet(ApiViewMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = WebhookDeliverySerializer
    filterset_class = WebhookDeliveryFilterSet
    queryset = WebhookDelivery.objects.all()

    def get_queryset(self):
        deliveries = WebhookDelivery.objects.select_related("incident")
        # Deliveries about restricted incidents show only to those who may see the incident.
        return visible_incident_rows(deliveries, self.request.user, "incident")


ROUTES = [
    ("webhook-endpoints", WebhookEndpointViewSet, "webhook-endpoint"),
    ("webhook-deliveries", WebhookDeliveryViewSet, "webhook-delivery"),
]
