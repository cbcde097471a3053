from rest_framework.routers import DefaultRouter

from .views import ApiRootView, IncidentViewSet, ServiceViewSet, SeverityViewSet

app_name = "api"


class Router(DefaultRouter):
    APIRootView = ApiRootView
    include_format_suffixes = False


router = Router()
router.register("incidents", IncidentViewSet, basename="incident")
router.register("services", ServiceViewSet, basename="service")
router.register("severities", SeverityViewSet, basename="severity")

urlpatterns = router.urls
