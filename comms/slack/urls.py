"""Included under /integrations/slack/ (see docs/slack/manifest.yml)."""

from django.urls import path

from . import views

app_name = "slack"

urlpatterns = [
    path("commands", views.commands, name="commands"),
    path("interactions", views.interactions, name="interactions"),
    path("events", views.events, name="events"),
]
