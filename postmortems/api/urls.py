"""The postmortems app's part of /api/v1/ (see incidents_site.api_urls)."""

from .action_items import ROUTES as ACTION_ITEM_ROUTES
from .reviews import ROUTES as REVIEW_ROUTES

ROUTES = [*REVIEW_ROUTES, *ACTION_ITEM_ROUTES]
