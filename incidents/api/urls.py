"""The incidents app's part of /api/v1/; incidents_site.api_urls puts every app's routes in one router."""

from .views import IncidentViewSet, ServiceViewSet, SeverityViewSet

ROUTES = [
    ("incidents", IncidentViewSet, "incident"),
    ("services", ServiceViewSet, "service"),
    ("severities", SeverityViewSet, "severity"),
]
