"""/api/v1/integrations/: where monitoring tools post alerts (see incidents.api.integrations)."""

from django.urls import re_path

from . import integrations

app_name = "integrations"

# The trailing slash is optional: senders are configured by hand, and APPEND_SLASH cannot redirect a POST.
urlpatterns = [
    re_path(r"^alertmanager/?$", integrations.alertmanager_webhook, name="alertmanager"),
    re_path(r"^grafana/?$", integrations.grafana_webhook, name="grafana"),
    re_path(r"^pagerduty/v2/enqueue/?$", integrations.pagerduty_enqueue, name="pagerduty"),
]
