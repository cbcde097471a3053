from django.apps import AppConfig


class PostmortemsConfig(AppConfig):
    name = "postmortems"
    verbose_name = "Post-incident reviews"

    def ready(self):
        from . import metrics  # noqa: F401  registers the action-item metrics with incidents.metrics
