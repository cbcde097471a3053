"""The comms app's part of /api/v1/ (see incidents_site.api_urls)."""

from .subscribers import ROUTES as SUBSCRIBER_ROUTES
from .updates import ROUTES as UPDATE_ROUTES
from .webhooks import ROUTES as WEBHOOK_ROUTES

ROUTES = [*UPDATE_ROUTES, *SUBSCRIBER_ROUTES, *WEBHOOK_ROUTES]
