from django.apps import AppConfig


class PostmortemsConfig(AppConfig):
    name = "postmortems"
    verbose_name = "Post-incident reviews"

    def ready(self):
        from incidents.demo import demo_step_register
        from incidents.services import member_removal_notice_register, transition_guard_register

        from . import (
            admin_home,  # noqa: F401  the admin home's "my overdue action items"
            metrics,  # noqa: F401  registers the action-item metrics with incidents.metrics
        )
        from .demo import demo_action_items, demo_review_publish
        from .services import action_items_left_notice, review_close_guard

        # An incident whose severity requires a review closes only once its review is published.
        transition_guard_register(review_close_guard)
        # Taking someone off a restricted incident says which of its open action items they still own.
        member_removal_notice_register(action_items_left_notice)
        demo_step_register("before_close", demo_review_publish)
        demo_step_register("after_incidents", demo_action_items)
