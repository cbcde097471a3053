"""Customer reports through the API: support and feedback tools send them, staff attach unlinked ones.

- ``POST /api/v1/incidents/{id}/customer-reports/`` (and ``GET``: the incident's reports and impact) —
  the action lives on IncidentViewSet and uses the serializers here;
- ``GET, POST /api/v1/customer-reports/`` — every report the key's user may see (``?linked=false`` for
  the ones waiting to be attached), and reports not yet linked to an incident;
- ``POST /api/v1/customer-reports/{id}/attach/`` — ``{"incident": "INC-1042"}``.
"""

import re

import django_filters as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from incidents import services
from incidents.models import Account, CustomerReport
from incidents.selectors import customer_report_list

from .base import ApiViewMixin
from .fields import BoundedDateTimeField
from .filters import StrictBooleanFilter
from .schema import error_response
from .serializers import IncidentReferenceField


class CustomerReportSerializer(serializers.ModelSerializer):
    incident = IncidentReferenceField(read_only=True, allow_null=True, help_text="Null while unlinked.")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    account = serializers.SlugRelatedField(
        slug_field="external_id", read_only=True, allow_null=True, help_text="The account's external id, if linked."
    )
    sentiment = serializers.ChoiceField(
        choices=CustomerReport.Sentiment.choices, allow_blank=True, read_only=True, help_text="Empty if unknown."
    )

    class Meta:
        model = CustomerReport
        fields = [
            "id",
            "incident",
            "customer_id",
            "account",
            "channel",
            "text",
            "sentiment",
            "revenue_at_risk",
            "currency",
            "received_at",
            "source_reference",
            "created_at",
            "created_by",
            "attached_at",
        ]
        read_only_fields = fields


class CustomerReportInputSerializer(serializers.Serializer):
    customer_id = serializers.CharField(max_length=200, help_text="The customer's or account's id.")
    channel = serializers.ChoiceField(choices=CustomerReport.Channel.choices, default=CustomerReport.Channel.OTHER)
    text = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)
    sentiment = serializers.ChoiceField(
        choices=CustomerReport.Sentiment.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="Empty if unknown.",
    )
    revenue_at_risk = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=0, required=False, allow_null=True, default=None
    )
    currency = serializers.CharField(
        min_length=3, max_length=3, default="USD", help_text="ISO 4217 code of the revenue figure, e.g. EUR."
    )
    received_at = BoundedDateTimeField(required=False, help_text="When the customer reported it; defaults to now.")
    source_reference = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=200,
        help_text="Your tool's id for the report (a ticket number): sending it again returns the first report.",
    )

    account = serializers.SlugRelatedField(
        slug_field="external_id",
        queryset=Account.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="The customer account by its external id (CRM id). Left out: the account whose external id "
        "is the customer id, if there is one.",
    )

    def validate_currency(self, value):
        if not re.fullmatch(r"[A-Za-z]{3}", value):
            raise serializers.ValidationError("A currency is a three-letter ISO 4217 code, e.g. EUR.")
        return value.upper()


class UnlinkedCustomerReportInputSerializer(CustomerReportInputSerializer):
    incident = IncidentReferenceField(
        required=False, allow_null=True, default=None, help_text="Link it now (e.g. INC-1042), or leave it for later."
    )


class AttachInputSerializer(serializers.Serializer):
    incident = IncidentReferenceField(help_text="The incident to attach the report to, e.g. INC-1042.")


class RevenueSerializer(serializers.Serializer):
    currency = serializers.CharField()
    amount = serializers.DecimalField(max_digits=20, decimal_places=2)


class SentimentCountsSerializer(serializers.Serializer):
    negative = serializers.IntegerField()
    neutral = serializers.IntegerField()
    positive = serializers.IntegerField()
    unknown = serializers.IntegerField()


class ReportsPerHourSerializer(serializers.Serializer):
    hour = serializers.DateTimeField()
    count = serializers.IntegerField()


class ImpactSerializer(serializers.Serializer):
    customers_affected = serializers.IntegerField(help_text="Distinct customer or account ids.")
    reports = serializers.IntegerField()
    first_report_at = serializers.DateTimeField(allow_null=True)
    last_report_at = serializers.DateTimeField(allow_null=True)
    revenue_at_risk = RevenueSerializer(many=True, help_text="Sum per currency, largest first.")
    sentiment = SentimentCountsSerializer()
    reports_over_time = ReportsPerHourSerializer(many=True, help_text="Reports per hour received, oldest first.")


class IncidentCustomerReportsSerializer(serializers.Serializer):
    incident = serializers.CharField(help_text="The incident's reference.")
    impact = ImpactSerializer()
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last page.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page, or null on the first page.")
    results = CustomerReportSerializer(many=True)


PAGE_PARAMETERS = [
    OpenApiParameter("cursor", str, description="Opaque position from a `next` or `previous` link."),
    OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": 100}, description="Results per page."),
]

INCIDENT_ACTION_SCHEMA = [
    extend_schema(
        methods=["GET"],
        summary="An incident's customer reports and impact",
        description="Customers affected, reports per hour and revenue at risk, and the reports, newest first.",
        parameters=PAGE_PARAMETERS,
        responses={200: IncidentCustomerReportsSerializer, 400: error_response("Invalid cursor or page size.")},
    ),
    extend_schema(
        methods=["POST"],
        summary="Add a customer report to an incident",
        description="From support and feedback tools. With a `source_reference` already sent by this key's user, "
        "nothing changes and the first report is returned (200).",
        request=CustomerReportInputSerializer,
        responses={201: CustomerReportSerializer, 200: CustomerReportSerializer},
    ),
]


def customer_report_created_response(report, created):
    return Response(
        CustomerReportSerializer(report).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
    )


def create_report(request, data, incident):
    """Create through the service; (report, created)."""
    existing_before = None
    if data.get("source_reference"):
        existing_before = CustomerReport.objects.filter(
            created_by=request.user, source_reference=data["source_reference"]
        ).first()
    report = services.customer_report_create(actor=request.user, incident=incident, **data)
    return report, existing_before is None or existing_before.pk != report.pk


class CustomerReportFilterSet(filters.FilterSet):
    linked = StrictBooleanFilter(
        method="filter_linked", help_text="false: only reports not yet attached to an incident."
    )
    customer = filters.CharFilter(field_name="customer_id", help_text="One customer or account id.")
    channel = filters.ChoiceFilter(choices=CustomerReport.Channel.choices)

    class Meta:
        model = CustomerReport
        fields = []

    def filter_linked(self, queryset, name, value):
        return queryset if value is None else queryset.filter(incident__isnull=not value)


@extend_schema_view(
    list=extend_schema(summary="List customer reports", description="Newest first; `linked=false` for unlinked ones."),
    create=extend_schema(
        summary="Send a customer report",
        description="Linked to an incident (`incident`) or not (staff attach it later). With a `source_reference` "
        "already sent by this key's user, nothing changes and the first report is returned (200).",
        request=UnlinkedCustomerReportInputSerializer,
        responses={201: CustomerReportSerializer, 200: CustomerReportSerializer},
    ),
)
class CustomerReportViewSet(ApiViewMixin, mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    queryset = CustomerReport.objects.all()
    serializer_class = CustomerReportSerializer
    filterset_class = CustomerReportFilterSet
    lookup_value_regex = r"\d+"
    action_permissions = {"attach": {"POST": ["incidents.change_customerreport", "incidents.view_incident"]}}

    def get_queryset(self):
        return customer_report_list(user=self.request.user)

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "POST":
            return AttachInputSerializer if self.action == "attach" else UnlinkedCustomerReportInputSerializer
        return CustomerReportSerializer

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        incident = data.pop("incident", None)
        report, created = create_report(request, data, incident)
        return customer_report_created_response(report, created)

    @extend_schema(
        summary="Attach a customer report to an incident",
        request=AttachInputSerializer,
        responses={
            200: CustomerReportSerializer,
            400: error_response("Invalid input, or the report is already attached to another incident."),
        },
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def attach(self, request, pk=None):
        report = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        report = services.customer_report_attach(
            report=report, incident=serializer.validated_data["incident"], actor=request.user
        )
        return Response(CustomerReportSerializer(report).data)


ROUTES = [("customer-reports", CustomerReportViewSet, "customer-report")]
