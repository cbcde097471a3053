"""Admin: the Slack connection (auth.test), calls waiting or failed (send again), events and channels.

No permission group gets these models: superusers see them, or give the view permissions to named people.
"""

from django.conf import settings
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from incidents.admin import incident_panel_register
from incidents.models import visible_incident_rows

from .conf import slack_enabled
from .health import slack_connection_check
from .models import SlackCall, SlackChannel, SlackEvent
from .outbox import slack_call_retry

State = SlackCall.State
RECENT_ERRORS = 10


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return visible_incident_rows(super().get_queryset(request), request.user)


@admin.register(SlackCall)
class SlackCallAdmin(ReadOnlyAdmin):
    change_list_template = "admin/comms/slackcall/change_list.html"
    # The errors are in the panel above the list (and on each call's page): the list stays narrow.
    list_display = ("created_at", "kind", "reference", "state", "attempts", "next_attempt_at")
    list_filter = ("state", "kind")
    list_select_related = ("incident",)
    readonly_fields = [f.name for f in SlackCall._meta.fields]
    actions = ["send_again"]
    show_full_result_count = False

    @admin.display(description="incident", ordering="incident__number")
    def reference(self, call):
        return (
            format_html('<span style="white-space:nowrap">{}</span>', call.incident.reference) if call.incident else "—"
        )

    def has_retry_permission(self, request):
        return request.user.has_perm("comms.change_slackcall")

    @admin.action(description="Send again (failed calls)", permissions=["retry"])
    def send_again(self, request, queryset):
        sent = sum(slack_call_retry(call=call) for call in queryset.filter(state=State.FAILED))
        skipped = queryset.count() - sent
        self.message_user(request, f"{sent} call(s) will be sent again.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} call(s) had not failed and were left as they are.", messages.WARNING)

    def changelist_view(self, request, extra_context=None):
        calls = self.get_queryset(request)
        extra_context = {
            **(extra_context or {}),
            "slack": slack_connection_check(),
            "slack_api_url": settings.SLACK_API_URL,
            "slack_announce_channel": settings.SLACK_ANNOUNCE_CHANNEL,
            "slack_waiting": calls.filter(state__in=(State.PENDING, State.SENDING)).count(),
            "slack_failed": calls.filter(state=State.FAILED).count(),
            "slack_errors": list(
                calls.exclude(last_error="").select_related("incident").order_by("-last_attempt_at")[:RECENT_ERRORS]
            ),
        }
        return super().changelist_view(request, extra_context)


@admin.register(SlackEvent)
class SlackEventAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "kind", "event_id", "incident", "state", "result")
    list_filter = ("state", "kind")
    list_select_related = ("incident",)
    readonly_fields = [f.name for f in SlackEvent._meta.fields]
    show_full_result_count = False


@admin.register(SlackChannel)
class SlackChannelAdmin(ReadOnlyAdmin):
    list_display = ("name", "incident", "channel_id", "is_private", "created_at")
    list_select_related = ("incident",)
    search_fields = ("name", "channel_id")
    readonly_fields = [f.name for f in SlackChannel._meta.fields]


def incident_slack(request, incident):
    """The incident page's Slack row: its channel (a link into Slack), and calls for it that wait or failed."""
    channel = SlackChannel.objects.filter(incident=incident).first()
    if channel is None:
        if not slack_enabled():
            return []
        why = "no channel yet" if incident.severity.slack_channel else "this severity opens no channel"
        return [("Slack", why)]
    if channel.channel_id:
        text = format_html(
            '<a href="https://slack.com/app_redirect?channel={}">#{}</a>{}',
            channel.channel_id,
            channel.name,
            " (private)" if channel.is_private else "",
        )
    else:
        text = format_html("#{} (being opened)", channel.name)
    if request.user.has_perm("comms.view_slackcall"):
        calls = SlackCall.objects.filter(incident=incident)
        waiting = calls.filter(state__in=(State.PENDING, State.SENDING)).count()
        failed = calls.filter(state=State.FAILED).count()
        if waiting or failed:
            listing = reverse("admin:comms_slackcall_changelist") + f"?incident__id__exact={incident.pk}"
            text = format_html('{} · <a href="{}">{} waiting, {} failed</a>', text, listing, waiting, failed)
    return [("Slack", text)]


incident_panel_register(incident_slack)
