"""The incidents app's part of /api/v1/; incidents_site.api_urls puts every app's routes in one router."""

from .accounts import ROUTES as ACCOUNT_ROUTES
from .customer_reports import ROUTES as CUSTOMER_REPORT_ROUTES
from .metrics import ROUTES as METRICS_ROUTES
from .views import IncidentViewSet, ServiceViewSet, SeverityViewSet

ROUTES = [
    ("incidents", IncidentViewSet, "incident"),
    ("services", ServiceViewSet, "service"),
    ("severities", SeverityViewSet, "severity"),
    *CUSTOMER_REPORT_ROUTES,
    *METRICS_ROUTES,
    *ACCOUNT_ROUTES,
]
