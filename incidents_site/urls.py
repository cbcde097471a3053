from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from incidents.views import healthz

admin.site.site_header = "Incident management"
admin.site.site_title = "Incidents"
admin.site.index_title = "Run incidents"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
