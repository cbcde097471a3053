"""/api/v1/subscribers/ (staff: the Communications group) and /api/v1/outreach-contacts/: reads are
generic, writes go through comms.services. Subscribers added here are confirmed by whoever adds them."""

import django_filters as filters
from django.db import IntegrityError
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.response import Response

from comms import services as comms_services
from comms.models import Subscriber
from incidents.api.serializers import LookupField, SeverityLevelField
from incidents.api.views import ApiViewMixin
from incidents.models import Service


class SubscriberSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:subscriber-detail")
    email = serializers.SerializerMethodField(help_text="The address (null for webhook and Slack subscribers).")
    endpoint = serializers.SerializerMethodField(help_text="Webhook or Slack incoming-webhook URL (null for e-mail).")
    services = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    min_severity = SeverityLevelField(read_only=True, allow_null=True)
    active = serializers.BooleanField(source="is_active", read_only=True, help_text="Confirmed and not unsubscribed.")

    class Meta:
        model = Subscriber
        fields = [
            "id",
            "url",
            "channel",
            "email",
            "endpoint",
            "services",
            "min_severity",
            "source",
            "active",
            "created_at",
            "confirmed_at",
            "unsubscribed_at",
        ]

    @extend_schema_field({"type": "string", "format": "email", "nullable": True})
    def get_email(self, subscriber):
        return subscriber.email or None

    @extend_schema_field({"type": "string", "format": "uri", "nullable": True})
    def get_endpoint(self, subscriber):
        return subscriber.url or None


class SubscriberInputSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Subscriber.Channel.choices, default=Subscriber.Channel.EMAIL)
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    endpoint = serializers.URLField(
        required=False, allow_blank=True, max_length=500, help_text="For webhook and slack subscribers."
    )
    services = LookupField(
        slug_field="slug",
        many=True,
        required=False,
        queryset=Service.objects.all(),
        help_text="Service slugs; none: every service.",
    )
    min_severity = SeverityLevelField(
        required=False, allow_null=True, help_text="Hear of incidents at this level or worse (1 is the worst)."
    )
    active = serializers.BooleanField(required=False, help_text="false unsubscribes, true subscribes again.")


class SubscriberFilterSet(filters.FilterSet):
    channel = filters.ChoiceFilter(choices=Subscriber.Channel.choices)
    active = filters.BooleanFilter(method="filter_active", help_text="Confirmed and not unsubscribed.")
    service = filters.CharFilter(field_name="services__slug", help_text="A service slug.", distinct=True)

    class Meta:
        model = Subscriber
        fields = ["channel", "active", "service"]

    def filter_active(self, queryset, name, value):
        active = {"confirmed_at__isnull": False, "unsubscribed_at__isnull": True}
        return queryset.filter(**active) if value else queryset.exclude(**active)


@extend_schema_view(
    list=extend_schema(summary="List subscribers"),
    retrieve=extend_schema(summary="Get a subscriber"),
    create=extend_schema(
        summary="Add a subscriber (confirmed)",
        request=SubscriberInputSerializer,
        responses={201: SubscriberSerializer},
    ),
    partial_update=extend_schema(
        summary="Edit a subscriber", request=SubscriberInputSerializer, responses={200: SubscriberSerializer}
    ),
    destroy=extend_schema(summary="Delete a subscriber"),
)
class SubscriberViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Subscriber.objects.select_related("min_severity").prefetch_related("services")
    serializer_class = SubscriberSerializer
    filterset_class = SubscriberFilterSet
    lookup_value_regex = r"\d+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_class(self):
        if self.request is not None and self.request.method in ("POST", "PATCH"):
            return SubscriberInputSerializer
        return SubscriberSerializer

    def _validated(self, partial=False):
        serializer = SubscriberInputSerializer(data=self.request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "endpoint" in data:
            data["url"] = data.pop("endpoint")
        return data

    def _respond(self, subscriber, code=status.HTTP_200_OK):
        subscriber = self.get_queryset().get(pk=subscriber.pk)
        return Response(SubscriberSerializer(subscriber, context=self.get_serializer_context()).data, status=code)

    def create(self, request):
        data = self._validated()
        active = data.pop("active", True)
        try:
            subscriber = comms_services.subscriber_create(source=Subscriber.Source.API, confirmed=active, **data)
        except comms_services.SubscriberError as exc:
            raise exceptions.ValidationError(str(exc)) from None
        except IntegrityError:  # created by someone else meanwhile
            raise exceptions.ValidationError("This subscriber already exists.") from None
        return self._respond(subscriber, status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        subscriber = self.get_object()
        data = self._validated(partial=True)
        try:
            subscriber = comms_services.subscriber_update(subscriber=subscriber, **data)
        except comms_services.SubscriberError as exc:
            raise exceptions.ValidationError(str(exc)) from None
        except IntegrityError:
            raise exceptions.ValidationError("Another subscriber already has this address.") from None
        return self._respond(subscriber)

    def perform_destroy(self, instance):
        comms_services.subscriber_delete(subscriber=instance)


ROUTES = [("subscribers", SubscriberViewSet, "subscriber")]
