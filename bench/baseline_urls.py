"""The product's URLs plus /bench/baseline/: the least a list page needs, to compare the admin against."""

from django.http import JsonResponse
from django.urls import path

from incidents.models import Incident
from incidents_site.urls import urlpatterns as product_urlpatterns

FIELDS = ("id", "number", "title", "status", "severity_id", "detected_at", "commander_id")


def baseline(request):
    """50 incidents, newest first, as JSON: one query, no authentication, no templates."""
    rows = list(Incident.objects.order_by("-detected_at", "-id").values(*FIELDS)[:50])
    return JsonResponse({"results": rows})


urlpatterns = [path("bench/baseline/", baseline, name="bench-baseline"), *product_urlpatterns]
