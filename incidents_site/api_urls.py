"""/api/v1/: one router over every app's routes, so the API root and the schema list them all."""

from rest_framework.routers import DefaultRouter

from comms.api.urls import ROUTES as COMMS_ROUTES
from incidents.api.urls import ROUTES as INCIDENT_ROUTES
from incidents.api.views import ApiRootView
from postmortems.api.urls import ROUTES as POSTMORTEM_ROUTES

app_name = "api"


class Router(DefaultRouter):
    APIRootView = ApiRootView
    include_format_suffixes = False


router = Router()
for prefix, viewset, basename in (*INCIDENT_ROUTES, *POSTMORTEM_ROUTES, *COMMS_ROUTES):
    router.register(prefix, viewset, basename=basename)

urlpatterns = router.urls
