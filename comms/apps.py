from django.apps import AppConfig


class CommsConfig(AppConfig):
    name = "comms"
    verbose_name = "Communications"

    def ready(self):
        from . import admin_panels, admin_status, admin_webhooks, webhooks  # noqa: F401  admins and signal receivers
