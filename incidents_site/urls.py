from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from incidents.views import healthz

admin.site.site_header = "Incident management"
admin.site.site_title = "Incidents"
admin.site.index_title = "Run incidents"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/integrations/", include("incidents.api.integration_urls")),
    path("api/v1/", include("incidents_site.api_urls")),
    path("status/", include("comms.status.urls")),
    path("subscribe/", include("comms.subscription_urls")),
    path("integrations/slack/", include("comms.slack.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

handler404 = "incidents.api.errors.not_found"  # JSON errors under /api/, Django's page elsewhere
