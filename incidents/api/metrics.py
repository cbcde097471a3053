"""GET /api/v1/metrics/: every reliability metric with its written definition, for a period, services and severities."""

from django import forms
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, viewsets
from rest_framework.response import Response

from incidents import metrics, rollups
from incidents.models import Incident, Service, Severity

from .filters import CommaSeparatedCharField, SeverityLevelsField, UTCDateTimeField
from .views import ApiViewMixin


class MetricsQueryForm(forms.Form):
    since = UTCDateTimeField(required=False)
    until = UTCDateTimeField(required=False)
    service = CommaSeparatedCharField(required=False)
    severity = SeverityLevelsField(required=False)

    def clean_service(self):
        slugs = self.cleaned_data["service"] or []
        known = set(Service.objects.filter(slug__in=slugs).values_list("slug", flat=True)) if slugs else set()
        unknown = [slug for slug in slugs if slug not in known]
        if unknown:
            raise forms.ValidationError(f"There is no service {unknown[0]!r}.", code="invalid")
        return slugs

    def clean_severity(self):
        levels = self.cleaned_data["severity"] or []
        if any(level > 32767 for level in levels):
            raise forms.ValidationError("There is no such severity level.", code="invalid")
        known = set(Severity.objects.filter(level__in=levels).values_list("level", flat=True)) if levels else set()
        unknown = [level for level in levels if level not in known]
        if unknown:
            raise forms.ValidationError(f"There is no severity level {unknown[0]}.", code="invalid")
        return levels

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since >= until:
            raise forms.ValidationError({"until": "The period must end after it starts."})
        return data


# ---- Response shape: one serializer per kind of metric ------------------------------------------


class MetricSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    definition = serializers.CharField(help_text="What is measured, exactly.")
    unit = serializers.CharField()
    kind = serializers.CharField(help_text="duration, series, distribution, rate or count: which fields follow.")


class DurationMetricSerializer(MetricSerializer):
    count = serializers.IntegerField(help_text="Incidents that have both timestamps (the ones measured).")
    missing = serializers.IntegerField(help_text="Incidents lacking one of the timestamps: not counted as zero.")
    mean = serializers.FloatField(allow_null=True, help_text="Seconds; null when nothing was measured.")
    median = serializers.FloatField(allow_null=True, help_text="Seconds (continuous percentile, interpolated).")
    p90 = serializers.FloatField(allow_null=True, help_text="90th percentile, seconds (interpolated).")


class SeriesPointSerializer(serializers.Serializer):
    start = serializers.DateField(help_text="First day (UTC) of the calendar week (Monday) or month.")
    count = serializers.IntegerField()
    coverage = serializers.FloatField(help_text="Share (0 to 1) of this week or month inside the period.")


class SeriesMetricSerializer(MetricSerializer):
    series = SeriesPointSerializer(many=True)
    total = serializers.IntegerField()
    mean = serializers.FloatField(
        allow_null=True, help_text="Incidents per full week or month: the total over the buckets the period covers."
    )


class SeverityShareSerializer(serializers.Serializer):
    level = serializers.IntegerField()
    label = serializers.CharField()
    name = serializers.CharField()
    count = serializers.IntegerField()
    share = serializers.FloatField(allow_null=True, help_text="0 to 1; null without incidents.")


class DistributionMetricSerializer(MetricSerializer):
    items = SeverityShareSerializer(many=True)
    total = serializers.IntegerField()


class RateMetricSerializer(MetricSerializer):
    count = serializers.IntegerField(help_text="The numerator.")
    total = serializers.IntegerField(help_text="The denominator.")
    rate = serializers.FloatField(allow_null=True, help_text="count / total, 0 to 1; null when total is 0.")


class CountMetricSerializer(MetricSerializer):
    count = serializers.IntegerField()


class MetricSetSerializer(serializers.Serializer):
    mttd = DurationMetricSerializer()
    mtta = DurationMetricSerializer()
    mtta_alert = DurationMetricSerializer()
    mtta_person = DurationMetricSerializer()
    time_to_mitigate = DurationMetricSerializer()
    mttr = DurationMetricSerializer()
    time_to_final_resolution = DurationMetricSerializer()
    mttr_from_start = DurationMetricSerializer()
    incidents = CountMetricSerializer()
    frequency_week = SeriesMetricSerializer()
    frequency_month = SeriesMetricSerializer()
    severity_distribution = DistributionMetricSerializer()
    reopen_rate = RateMetricSerializer()
    recurrence_rate = RateMetricSerializer()
    customers_affected = CountMetricSerializer()
    customer_reports = CountMetricSerializer()
    # Registered by the post-incident reviews app (absent if it is not installed).
    action_item_completion_rate = RateMetricSerializer(required=False)
    action_items_overdue = CountMetricSerializer(required=False)

    def to_representation(self, instance):
        return super().to_representation({key: value for key, value in instance.items() if key in self.fields})


class MetricsFiltersSerializer(serializers.Serializer):
    since = serializers.DateTimeField(allow_null=True)
    until = serializers.DateTimeField(allow_null=True)
    service = serializers.ListField(child=serializers.CharField())
    severity = serializers.ListField(child=serializers.IntegerField())


class MetricsSerializer(serializers.Serializer):
    filters = MetricsFiltersSerializer(help_text="The filters applied.")
    metrics = MetricSetSerializer()


PARAMETERS = [
    OpenApiParameter("since", str, description="Incidents detected at or after this time (ISO 8601)."),
    OpenApiParameter("until", str, description="Incidents detected before this time (ISO 8601)."),
    OpenApiParameter("service", {"type": "array", "items": {"type": "string"}}, description="Service slugs."),
    OpenApiParameter(
        "severity",
        {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 32767}},
        description="Severity levels, e.g. 1,2.",
    ),
]


class MetricsViewSet(ApiViewMixin, viewsets.ViewSet):
    single_object_list = True  # one document, not an array (incidents.api.schema)
    """Reads only; anyone who may read incidents may read the metrics of the incidents they may see."""

    action_permissions = {"list": {"GET": ["incidents.view_incident"]}}
    queryset = Incident.objects.none()  # for the permission check of methods it does not serve (405)

    @extend_schema(
        summary="Reliability metrics",
        description="MTTD, MTTA (also split by alert- and person-detected incidents), time to mitigate, MTTR to the "
        "first resolution (from detection and from start of impact), time to final resolution, with median and "
        "90th percentile, incidents per week and month, severity mix, reopen and recurrence rates, customer impact and "
        "action items, each with its definition. Dismissed incidents and duplicates are left out; an incident "
        "belongs to the period it was detected in. Durations are in seconds.",
        parameters=PARAMETERS,
        responses={200: MetricsSerializer},
    )
    def list(self, request):
        form = MetricsQueryForm(request.query_params)
        if not form.is_valid():
            raise exceptions.ValidationError({name: list(errors) for name, errors in form.errors.items()})
        params = form.cleaned_data
        try:
            result = rollups.metrics_read(
                user=request.user,
                since=params["since"],
                until=params["until"],
                service=params["service"],
                severity=params["severity"],
            )
        except metrics.MetricsError as exc:
            raise exceptions.ValidationError({"since": [str(exc)]}) from None
        filters = {key: params[key] for key in ("since", "until")}
        filters.update(service=params["service"] or [], severity=params["severity"] or [])
        return Response(MetricsSerializer({"filters": filters, "metrics": result}).data)


ROUTES = [("metrics", MetricsViewSet, "metrics")]
