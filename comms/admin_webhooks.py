"""Admin for outbound webhooks: endpoints (with their recent deliveries) and the delivery log."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from incidents.models import visible_incident_rows

from . import webhooks
from .models import WebhookDelivery, WebhookEndpoint

Event = WebhookEndpoint.Event
State = WebhookDelivery.State
RECENT_DELIVERIES = 20


def _formfield(field, **kwargs):
    if field.name == "url":
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


class WebhookEndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=Event.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=Event.values,
        help_text="The event types this endpoint receives.",
    )
    actor = None  # set per request by WebhookEndpointAdmin.get_form

    class Meta:
        model = WebhookEndpoint
        fields = webhooks.ENDPOINT_FIELDS
        formfield_callback = _formfield

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        saved = self.instance if self.instance.pk else None
        endpoint = WebhookEndpoint(
            **{
                name: cleaned[name] if name in cleaned else getattr(self.instance, name)
                for name in webhooks.ENDPOINT_FIELDS
            }
        )
        original = None
        if saved is not None:
            original = WebhookEndpoint(**{name: getattr(saved, name) for name in webhooks.ENDPOINT_FIELDS})
        try:
            webhooks.webhook_endpoint_clean(endpoint=endpoint, actor=self.actor, original=original)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        else:
            cleaned["events"] = endpoint.events
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = [
        "url",
        "description",
        "is_active",
        "event_list",
        "allow_private_destination",
        "include_restricted",
        "delivered_count",
        "failed_count",
        "created_at",
    ]
    list_filter = ["is_active", "allow_private_destination", "include_restricted"]
    search_fields = ["url", "description"]
    readonly_fields = ["secret", "created_at", "recent_deliveries"]
    actions = ["send_test_event", "rotate_secret"]

    def get_fieldsets(self, request, obj=None):
        fields = [
            *webhooks.ENDPOINT_FIELDS,
            *(("secret", "created_at") if obj is not None else ()),
        ]
        fieldsets = [(None, {"fields": fields})]
        if obj is not None:
            fieldsets.append(("Recent deliveries", {"fields": ["recent_deliveries"]}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        readonly = list(self.readonly_fields)
        # Flags only some people may turn on: read-only for the others (they can still see them).
        if not webhooks.can_allow_private_destination(request.user):
            readonly.append("allow_private_destination")
        if not webhooks.can_include_restricted(request.user):
            readonly.append("include_restricted")
        return readonly

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "url":
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    def get_queryset(self, request):
        delivered = Count("deliveries", filter=Q(deliveries__state=State.DELIVERED))
        failed = Count("deliveries", filter=Q(deliveries__state=State.FAILED))
        return super().get_queryset(request).annotate(delivered_count=delivered, failed_count=failed)

    def save_model(self, request, obj, form, change):
        values = {name: getattr(obj, name) for name in webhooks.ENDPOINT_FIELDS}
        if change:
            changed = {name: values[name] for name in form.changed_data if name in values}
            updated = webhooks.webhook_endpoint_update(endpoint=obj, actor=request.user, **changed)
        else:
            updated = webhooks.webhook_endpoint_create(actor=request.user, **values)
        obj.pk, obj.secret, obj.created_at = updated.pk, updated.secret, updated.created_at

    def delete_model(self, request, obj):
        webhooks.webhook_endpoint_delete(endpoint=obj)

    @admin.display(description="events")
    def event_list(self, obj):
        return ", ".join(obj.events)

    @admin.display(description="delivered", ordering="delivered_count")
    def delivered_count(self, obj):
        return obj.delivered_count

    @admin.display(description="failed", ordering="failed_count")
    def failed_count(self, obj):
        return obj.failed_count

    @admin.display(description="")
    def recent_deliveries(self, obj):
        """The last deliveries (no incident details here: the log's own pages apply the visibility rule)."""
        if obj is None or obj.pk is None:
            return "—"
        rows = WebhookDelivery.objects.filter(endpoint=obj).order_by("-created_at", "-id")[:RECENT_DELIVERIES]
        log = reverse("admin:comms_webhookdelivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        if not rows:
            return "No deliveries yet."
        table = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f"{d.created_at:%Y-%m-%d %H:%M:%S}",
                    d.event_type,
                    d.get_state_display(),
                    d.attempts,
                    d.response_status_code or "—",
                    Truncator(d.error).chars(120) or "—",
                )
                for d in rows
            ),
        )
        return format_html(
            "<table><thead><tr><th>created</th><th>event</th><th>state</th><th>attempts</th>"
            "<th>response</th><th>error</th></tr></thead><tbody>{}</tbody></table>"
            '<p><a href="{}">All deliveries to this endpoint</a></p>',
            table,
            log,
        )

    @admin.action(description="Send a test event to the selected endpoints", permissions=["change"])
    def send_test_event(self, request, queryset):
        count = 0
        for endpoint in queryset:
            webhooks.webhook_test_send(endpoint=endpoint)
            count += 1
        self.message_user(
            request,
            f"A webhook.test event is on its way to {count} endpoint(s): see their deliveries for the answer.",
            messages.SUCCESS,
        )

    @admin.action(description="Rotate the signing secret of the selected endpoints", permissions=["change"])
    def rotate_secret(self, request, queryset):
        for endpoint in queryset:
            webhooks.webhook_endpoint_secret_rotate(endpoint=endpoint)
        self.message_user(
            request, "New secrets are in effect for the next attempt: update the receivers.", messages.WARNING
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "endpoint",
        "event_type",
        "incident",
        "state",
        "attempts",
        "response_status_code",
        "short_error",
        "next_attempt_at",
    ]
    list_filter = ["state", "event_type", "endpoint"]
    list_select_related = ["endpoint", "incident"]
    search_fields = ["event_id", "endpoint__url"]
    show_full_result_count = False
    actions = ["retry"]
    fields = [
        "endpoint",
        "incident",
        "event_id",
        "event_type",
        "state",
        "attempts",
        "response_status_code",
        "response_body",
        "error",
        "next_attempt_at",
        "created_at",
        "last_attempt_at",
        "delivered_at",
        "pretty_body",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        # Deliveries about restricted incidents show only to those who may see the incident.
        return visible_incident_rows(super().get_queryset(request), request.user, "incident")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # a log: nothing to edit (retrying is an action)

    def has_retry_permission(self, request):
        return request.user.has_perm("comms.change_webhookdelivery")

    @admin.display(description="error")
    def short_error(self, obj):
        return Truncator(obj.error).chars(80)

    @admin.display(description="body sent")
    def pretty_body(self, obj):
        try:
            text = json.dumps(json.loads(obj.body), indent=2, ensure_ascii=False)
        except ValueError:
            text = obj.body
        return format_html("<pre>{}</pre>", text)

    @admin.action(description="Send the selected failed deliveries again", permissions=["retry"])
    def retry(self, request, queryset):
        retried = sum(webhooks.webhook_delivery_retry(delivery=d) for d in queryset.filter(state=State.FAILED))
        self.message_user(request, f"{retried} failed deliveries will be sent again.", messages.SUCCESS)
