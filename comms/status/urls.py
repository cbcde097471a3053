"""The public status page under /status/: HTML, Atom, Statuspage v2 JSON, and the in-app widget."""

from django.urls import path

from . import views

app_name = "status"

# Statuspage v2 document paths (under /status/api/v2/) and the view's name for each.
DOCUMENT_PATHS = {
    "summary.json": "summary",
    "status.json": "status",
    "components.json": "components",
    "incidents.json": "incidents",
    "incidents/unresolved.json": "incidents-unresolved",
    "scheduled-maintenances.json": "scheduled-maintenances",
    "scheduled-maintenances/upcoming.json": "scheduled-maintenances-upcoming",
    "scheduled-maintenances/active.json": "scheduled-maintenances-active",
}

urlpatterns = [
    path("", views.index, name="index"),
    path("incidents/<str:public_id>/", views.incident, name="incident"),
    path("maintenances/<str:public_id>/", views.maintenance, name="maintenance"),
    path("feed.atom", views.feed, name="feed"),
    path("embed.js", views.embed_script, name="embed-script"),
    path("api/embed.json", views.embed_document, name="api-embed"),
    *(
        path(f"api/v2/{route}", views.document, {"name": name}, name=f"api-{name}")
        for route, name in DOCUMENT_PATHS.items()
    ),
]
