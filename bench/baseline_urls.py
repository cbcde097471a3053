"""The product's URLs plus the two bare baselines of ../shared/reference/BENCHMARKS.md.

/bench/baseline/ is the least a list page needs (`.values()` as JSON); /bench/baseline-drf/ is a bare
DRF list: ListAPIView + ModelSerializer of 13 fields + CursorPagination, no authentication.
"""

from django.http import JsonResponse
from django.urls import path
from rest_framework import generics, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny

from incidents.models import Incident
from incidents_site.urls import urlpatterns as product_urlpatterns

FIELDS = ("id", "number", "title", "status", "severity_id", "detected_at", "commander_id")


def baseline(request):
    """50 incidents, newest first, as JSON: one query, no authentication, no templates."""
    rows = list(Incident.objects.order_by("-detected_at", "-id").values(*FIELDS)[:50])
    return JsonResponse({"results": rows})


class BareIncidentSerializer(serializers.ModelSerializer):
    severity = serializers.CharField(source="severity.name")

    class Meta:
        model = Incident
        fields = (
            "id",
            "number",
            "title",
            "summary",
            "status",
            "severity",
            "started_at",
            "detected_at",
            "acknowledged_at",
            "mitigated_at",
            "resolved_at",
            "closed_at",
            "commander_id",
        )


class BarePagination(CursorPagination):
    ordering = ("-detected_at", "-id")
    page_size = 50


class BareIncidentList(generics.ListAPIView):
    """The bare DRF baseline: no authentication, no permissions, no filters, no throttling."""

    queryset = Incident.objects.select_related("severity")
    serializer_class = BareIncidentSerializer
    pagination_class = BarePagination
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []


urlpatterns = [
    path("bench/baseline/", baseline, name="bench-baseline"),
    path("bench/baseline-drf/", BareIncidentList.as_view(), name="bench-baseline-drf"),
    *product_urlpatterns,
]
