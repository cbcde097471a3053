"""Public subscription pages; the site's urls.py mounts them at /subscribe/."""

from django.urls import path

from . import subscriptions
from .outreach import views as outreach_views

app_name = "comms_subscriptions"

urlpatterns = [
    path("", subscriptions.subscribe, name="subscribe"),
    path("confirm/<str:token>/", subscriptions.confirm, name="confirm"),
    path("unsubscribe/<str:token>/", subscriptions.unsubscribe, name="unsubscribe"),
    path("outreach/unsubscribe/<str:token>/", outreach_views.unsubscribe, name="outreach_unsubscribe"),
]
