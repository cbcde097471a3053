from django.apps import AppConfig


class CommsConfig(AppConfig):
    name = "comms"
    verbose_name = "Communications"

    def ready(self):
        from incidents.demo import demo_step_register

        # admins, signal receivers, and the tasks (services enqueue them by name from the registry)
        from . import admin_panels, admin_status, admin_webhooks, tasks, webhooks  # noqa: F401
        from .demo import demo_comms
        from .outreach import admin as outreach_admin  # noqa: F401  direct outreach to affected accounts
        from .slack import admin as slack_admin  # noqa: F401  the Slack app (issue 13)
        from .slack import receivers as slack_receivers  # noqa: F401  its signal receivers
        from .status import invalidation  # noqa: F401  the status page's cache follows public changes

        demo_step_register("after_incidents", demo_comms)
