"""Customer accounts through the API, kept in sync from a CRM, and an incident's impact on them.

- ``GET /api/v1/accounts/`` (filters: ``tier``, ``service``), ``GET /api/v1/accounts/{external_id}/``;
- ``PUT /api/v1/accounts/{external_id}/`` — create or replace (idempotent: the same body twice changes
  nothing): 201 when created, 200 when it existed;
- ``GET /api/v1/incidents/{id}/impact/`` — accounts affected (by tier, contract value at risk) and the
  customer reports' figures.
"""

import django_filters as filters
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from incidents.accounts import AccountData, AccountError, account_upsert, currency_clean
from incidents.models import Account, AccountTier, Incident, Service
from incidents.selectors import incident_accounts_impact, incident_impact

from .base import ApiViewMixin
from .customer_reports import ImpactSerializer, RevenueSerializer
from .schema import error_response


class AccountContactSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    email = serializers.EmailField(max_length=254)
    role = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    incident_emails = serializers.BooleanField(
        required=False, default=False, help_text="Opted in to incident e-mail (direct outreach)."
    )


class AccountSerializer(serializers.ModelSerializer):
    tier = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    services = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    contacts = AccountContactSerializer(many=True, read_only=True)
    annual_contract_value = serializers.DecimalField(max_digits=14, decimal_places=2, read_only=True)

    class Meta:
        model = Account
        fields = [
            "external_id",
            "name",
            "tier",
            "annual_contract_value",
            "currency",
            "services",
            "contacts",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AccountInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    tier = serializers.SlugRelatedField(
        slug_field="slug", queryset=AccountTier.objects.all(), help_text="A tier's slug, e.g. enterprise."
    )
    annual_contract_value = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=0, required=False, default=0, help_text="A decimal string."
    )
    currency = serializers.CharField(min_length=3, max_length=3, required=False, default="USD", help_text="ISO 4217.")
    services = serializers.SlugRelatedField(
        slug_field="slug", queryset=Service.objects.all(), many=True, required=False, default=list
    )
    contacts = AccountContactSerializer(many=True, required=False, default=list)

    def validate_currency(self, value):
        try:
            return currency_clean(value)
        except AccountError as error:
            raise serializers.ValidationError(str(error)) from None


class AccountFilterSet(filters.FilterSet):
    tier = filters.ModelChoiceFilter(
        field_name="tier", to_field_name="slug", queryset=AccountTier.objects.all(), help_text="A tier's slug."
    )
    service = filters.ModelChoiceFilter(
        field_name="services", to_field_name="slug", queryset=Service.objects.all(), help_text="A service's slug."
    )

    class Meta:
        model = Account
        fields = ["tier", "service"]


@extend_schema_view(
    list=extend_schema(summary="List customer accounts"),
    retrieve=extend_schema(summary="Get a customer account"),
    update=extend_schema(
        summary="Create or replace a customer account",
        description="Idempotent upsert by the CRM's id: services and contacts become exactly the ones sent. "
        "201 when the account is new, 200 when it existed.",
        request=AccountInputSerializer,
        responses={200: AccountSerializer, 201: AccountSerializer, 400: error_response("Invalid account.")},
    ),
)
class AccountViewSet(ApiViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Account.objects.select_related("tier").prefetch_related("services", "contacts")
    serializer_class = AccountSerializer
    filterset_class = AccountFilterSet
    lookup_field = "external_id"
    lookup_value_regex = r"[^/]{1,200}"
    http_method_names = ["get", "put", "head", "options"]
    # The upsert both adds and changes, so it needs both permissions.
    action_permissions = {"update": {"PUT": ["incidents.add_account", "incidents.change_account"]}}

    def get_serializer_class(self):
        return AccountInputSerializer if self.action == "update" else AccountSerializer

    def update(self, request, external_id=None):
        serializer = AccountInputSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = AccountData(external_id=external_id, **serializer.validated_data)
        try:
            with transaction.atomic():
                account, created = account_upsert(data=data)
        except AccountError as error:
            raise serializers.ValidationError({"non_field_errors": [str(error)]}) from None
        account = self.get_queryset().get(pk=account.pk)
        return Response(
            AccountSerializer(account).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class TierImpactSerializer(serializers.Serializer):
    tier = serializers.CharField(help_text="The tier's slug.")
    name = serializers.CharField()
    accounts = serializers.IntegerField()
    annual_contract_value = RevenueSerializer(many=True, help_text="Sum per currency.")


class AffectedAccountSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    name = serializers.CharField()
    tier = serializers.CharField()
    annual_contract_value = serializers.DecimalField(max_digits=14, decimal_places=2)
    currency = serializers.CharField()
    reported = serializers.BooleanField(help_text="The account reported this incident.")


class AccountsImpactSerializer(serializers.Serializer):
    accounts = serializers.IntegerField(help_text="Accounts affected, each counted once.")
    annual_contract_value_at_risk = RevenueSerializer(many=True, help_text="Sum per currency, largest first.")
    by_tier = TierImpactSerializer(many=True, help_text="In tier rank order.")
    top_accounts = AffectedAccountSerializer(many=True, help_text="The ten largest by contract value.")


class IncidentImpactSerializer(serializers.Serializer):
    incident = serializers.CharField(help_text="The incident's reference.")
    accounts = AccountsImpactSerializer(
        help_text="Accounts using an affected service, plus accounts that reported the incident."
    )
    reports = ImpactSerializer(help_text="The incident's customer reports.")


@extend_schema_view(
    list=extend_schema(
        summary="An incident's impact on customer accounts",
        responses={200: IncidentImpactSerializer, 404: error_response("No such incident (or not visible to you).")},
    )
)
class IncidentImpactViewSet(ApiViewMixin, viewsets.GenericViewSet):
    single_object_list = True  # one document, not an array (incidents.api.schema)
    serializer_class = IncidentImpactSerializer
    pagination_class = None
    filter_backends = []
    queryset = Account.objects.none()  # the model whose view permission reading impact needs, with the incident's
    action_permissions = {"list": {"GET": ["incidents.view_incident", "incidents.view_account"]}}

    def list(self, request, incident_pk=None):
        incident = get_object_or_404(Incident.objects.visible_to(request.user), pk=incident_pk)
        return Response(
            IncidentImpactSerializer(
                {
                    "incident": incident.reference,
                    "accounts": incident_accounts_impact(incident),
                    "reports": incident_impact(incident),
                }
            ).data
        )


ROUTES = [
    ("accounts", AccountViewSet, "account"),
    (r"incidents/(?P<incident_pk>\d{1,18})/impact", IncidentImpactViewSet, "incident-impact"),
]
