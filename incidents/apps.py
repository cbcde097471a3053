from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    verbose_name = "Incidents"

    def ready(self):
        from . import admin_integrations  # noqa: F401  registers IntegrationAdmin and the alert records
        from .api import admin  # noqa: F401  registers ApiKeyAdmin
