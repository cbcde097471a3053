from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    verbose_name = "Incidents"

    def ready(self):
        from incidents_site import checks  # noqa: F401  registers the deployment checks (check --deploy)

        from . import (
            admin_accounts,  # noqa: F401  registers AccountAdmin, AccountTierAdmin and the CSV import
            admin_autocomplete,
            admin_customer_cost,  # noqa: F401  the dashboard's customer-cost page
            admin_customer_reports,  # noqa: F401  registers CustomerReportAdmin
            admin_dashboard,  # noqa: F401  the reliability dashboard page, linked from the admin index
            admin_integrations,  # noqa: F401  registers IntegrationAdmin and the alert records
            admin_log,
        )
        from .api import admin  # noqa: F401  registers ApiKeyAdmin

        admin_autocomplete.install()  # people pickers for those who assign people, NUL-safe terms
        admin_log.install()  # "Recent actions" leaves out incidents the reader may not see
        from . import admin_home

        admin_home.install()  # the home page leads with what is open; the sidebar links the dashboard
