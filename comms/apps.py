from django.apps import AppConfig


class CommsConfig(AppConfig):
    name = "comms"
    verbose_name = "Communications"

    def ready(self):
        from incidents.demo import demo_step_register

        from . import admin_panels, admin_status, admin_webhooks, webhooks  # noqa: F401  admins and signal receivers
        from .demo import demo_comms

        demo_step_register("after_incidents", demo_comms)
