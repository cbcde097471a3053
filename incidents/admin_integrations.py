"""Admin for alert ingestion: integrations (with their keys), received posts, alert groups and alerts.

Imported from IncidentsConfig.ready(). Keys are shown once, in a message, when an integration is
created or its key rotated. Received posts are read-only records; they can be replayed.
"""

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Q, Subquery
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from . import ingestion
from .admin_keys import key_shown_once
from .models import Alert, AlertGroup, AlertPayload, Integration, visible_incident_rows

ENDPOINTS = {
    Integration.Kind.ALERTMANAGER: "/api/v1/integrations/alertmanager/",
    Integration.Kind.GRAFANA: "/api/v1/integrations/grafana/",
    Integration.Kind.PAGERDUTY: "/api/v1/integrations/pagerduty/v2/enqueue",
}


def _incident_link(obj):
    """A link to the row's incident (select_related "incident" on lists)."""
    if obj.incident_id is None:
        return "—"
    url = reverse("admin:incidents_incident_change", args=[obj.incident_id])
    return format_html('<a href="{}">{}</a>', url, obj.incident.reference)


class IntegrationForm(forms.ModelForm):
    class Meta:
        model = Integration
        fields = (
            "name",
            "kind",
            "is_active",
            "services",
            "open_mode",
            "resolve_to",
            "severity_overrides",
            "signing_secret",
        )
        widgets = {"signing_secret": forms.PasswordInput(render_value=True)}

    def clean_severity_overrides(self):
        value = self.cleaned_data["severity_overrides"] or {}
        if not isinstance(value, dict):
            raise forms.ValidationError('Give an object of sender value → level, e.g. {"disaster": 1}.')
        cleaned = {}
        for name, level in value.items():
            if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 9:
                raise forms.ValidationError(f"The level for {name!r} must be a whole number from 1 (most severe).")
            cleaned[str(name).strip().lower()] = level
        return cleaned

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind", self.instance.kind)  # read-only once created
        if cleaned.get("signing_secret") and kind != Integration.Kind.GRAFANA:
            self.add_error("signing_secret", "Only Grafana signs its posts; leave this empty for other kinds.")
        return cleaned


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    form = IntegrationForm
    list_display = (
        "name",
        "kind",
        "is_active",
        "key_hint",
        "open_mode",
        "resolve_to",
        "service_list",
        "last_received",
    )
    list_filter = ("kind", "is_active", "open_mode", "resolve_to")
    search_fields = ("name", "key_prefix")
    autocomplete_fields = ("services",)
    readonly_fields = ("key_hint", "endpoint", "created_at")
    actions = ["rotate_key"]
    fieldsets = (
        (None, {"fields": ("name", "kind", "is_active", "key_hint", "endpoint")}),
        ("Incidents", {"fields": ("services", "open_mode", "resolve_to", "severity_overrides")}),
        ("Grafana", {"classes": ("collapse",), "fields": ("signing_secret",)}),
        ("Record", {"classes": ("collapse",), "fields": ("created_at",)}),
    )

    def get_queryset(self, request):
        latest = AlertPayload.objects.filter(integration=OuterRef("pk")).order_by("-received_at").values("received_at")
        return (
            super().get_queryset(request).prefetch_related("services").annotate(last_received_at=Subquery(latest[:1]))
        )

    def get_readonly_fields(self, request, obj=None):
        # The kind decides the endpoint and the key's format: fixed once created.
        return (*self.readonly_fields, "kind") if obj is not None else self.readonly_fields

    @admin.display(description="key")
    def key_hint(self, integration):
        return f"{integration.key_prefix}…" if integration.key_prefix else "(created on save)"

    @admin.display(description="services")
    def service_list(self, integration):
        return ", ".join(s.name for s in integration.services.all()) or "—"

    @admin.display(description="last post", ordering="last_received_at")
    def last_received(self, integration):
        return integration.last_received_at or "never"

    @admin.display(description="where the sender posts")
    def endpoint(self, integration):
        if not integration.kind:
            return "—"
        url = f"{settings.SITE_URL}{ENDPOINTS[integration.kind]}"
        how = {
            Integration.Kind.ALERTMANAGER: "webhook_configs: url, and http_config.authorization.credentials = the key",
            Integration.Kind.GRAFANA: "Webhook contact point: URL, Authorization header scheme Bearer, credentials = the key",
            Integration.Kind.PAGERDUTY: "pagerduty_configs (or any Events API v2 sender): url, routing_key = the key",
        }[integration.kind]
        return format_html("<code>{}</code><br>{}", url, how)

    def save_model(self, request, obj, form, change):
        if change:
            obj.save()
            ingestion.integration_cache_clear()  # other web processes follow within seconds
            return
        obj.new_key = ingestion.integration_key_set(obj)  # shown once by response_add

    def response_add(self, request, obj, post_url_continue=None):
        if getattr(obj, "new_key", None) is None:
            return super().response_add(request, obj, post_url_continue)
        return key_shown_once(
            request,
            title=f"The key of “{obj.name}”",
            what="integration",
            keys=[(obj.name, obj.new_key)],
            back_url=reverse("admin:incidents_integration_change", args=[obj.pk]),
            back_label=obj.name,
            note=self.endpoint(obj),
        )

    @admin.action(description="Rotate the key of the selected integrations", permissions=["change"])
    def rotate_key(self, request, queryset):
        keys = [(i.name, ingestion.integration_key_rotate(integration=i)) for i in queryset.order_by("name")]
        return key_shown_once(
            request,
            title="New integration keys",
            what="integration",
            keys=keys,
            back_url=reverse("admin:incidents_integration_changelist"),
            back_label="Integrations",
            note="The old keys no longer work: update the senders.",
        )


class ReadOnlyMixin:
    """Records of what senders posted: read-only, and hidden with the restricted incident they belong to."""

    def get_queryset(self, request):
        return visible_incident_rows(super().get_queryset(request), request.user)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # Rows are records: no edit form. Without an object this is the permission actions check.
        return obj is None and super().has_change_permission(request)


@admin.register(AlertPayload)
class AlertPayloadAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "received_at", "kind", "integration", "status", "short_error", "incident_link")
    list_filter = ("status", "kind", "integration", "received_at")
    list_select_related = ("integration", "incident")
    list_per_page = 50
    show_full_result_count = False
    search_help_text = "The post's number."
    search_fields = ("=id",)
    actions = ["replay"]
    fields = (
        "received_at",
        "kind",
        "integration",
        "status",
        "error",
        "remote_addr",
        "headers_pretty",
        "body_pretty",
        "group",
        "incident_link",
    )
    readonly_fields = fields

    def changelist_view(self, request, extra_context=None):
        rows, size = ingestion.payload_storage()
        stored = f"about {rows:,} posts" + (f", {filesizeformat(size)} on disk" if size is not None else "")
        subtitle = f"Stored: {stored}; kept {settings.INGEST_PAYLOAD_RETENTION_DAYS} days."
        return super().changelist_view(request, {"subtitle": subtitle, **(extra_context or {})})

    @admin.display(description="error")
    def short_error(self, payload):
        return (payload.error[:100] + "…") if len(payload.error) > 100 else payload.error

    @admin.display(description="incident")
    def incident_link(self, payload):
        return _incident_link(payload)

    @admin.display(description="headers")
    def headers_pretty(self, payload):
        return format_html("<pre>{}</pre>", json.dumps(payload.headers, indent=2, sort_keys=True))

    @admin.display(description="body, as received")
    def body_pretty(self, payload):
        body = payload.body
        if payload.kind == Integration.Kind.PAGERDUTY:
            body = ingestion.routing_key_redacted(body)  # posts stored before keys were redacted on receipt
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', body)

    @admin.action(description="Apply the selected posts again", permissions=["change"])
    def replay(self, request, queryset):
        done, refused = 0, []
        for payload in queryset.select_related("integration").order_by("received_at", "id"):
            try:
                ingestion.payload_replay(payload=payload)
                done += 1
            except ingestion.IngestionError as exc:
                refused.append(f"#{payload.pk}: {exc}")
        if done:
            self.message_user(request, f"{done} post(s) applied again (a repeat changes nothing).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)


class AlertInline(admin.TabularInline):
    model = Alert
    fields = (
        "summary",
        "status",
        "severity_level",
        "fingerprint",
        "starts_at",
        "ends_at",
        "incident_link",
        "last_seen_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-starts_at",)

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # A group's earlier alerts may belong to a restricted incident the reader may not see.
        return visible_incident_rows(super().get_queryset(request), request.user).select_related("incident")

    @admin.display(description="incident")
    def incident_link(self, alert):
        return _incident_link(alert)


@admin.register(AlertGroup)
class AlertGroupAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("short_key", "integration", "firing", "incident_link", "created_at")
    list_filter = ("integration",)
    list_select_related = ("integration", "incident")
    search_fields = ("group_key",)
    show_full_result_count = False
    fields = ("integration", "group_key", "labels", "incident_link", "created_at")
    readonly_fields = fields
    inlines = [AlertInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(firing_count=Count("alerts", filter=Q(alerts__status=Alert.Status.FIRING)))
        )

    @admin.display(description="group key")
    def short_key(self, group):
        return group.group_key if len(group.group_key) <= 80 else group.group_key[:80] + "…"

    @admin.display(description="firing", ordering="firing_count")
    def firing(self, group):
        return group.firing_count

    @admin.display(description="incident")
    def incident_link(self, group):
        return _incident_link(group)


@admin.register(Alert)
class AlertAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("__str__", "status", "severity_level", "integration", "starts_at", "ends_at", "incident_link")
    list_filter = ("status", "severity_level", "group__integration")
    list_select_related = ("group__integration", "incident")
    search_fields = ("=fingerprint", "summary")
    show_full_result_count = False
    fields = (
        "summary",
        "status",
        "severity_level",
        "fingerprint",
        "group",
        "incident_link",
        "starts_at",
        "ends_at",
        "acknowledged_at",
        "labels_pretty",
        "annotations_pretty",
        "details_pretty",
        "last_payload",
        "last_seen_at",
    )
    readonly_fields = fields

    @admin.display(description="integration", ordering="group__integration__name")
    def integration(self, alert):
        return alert.group.integration

    @admin.display(description="incident")
    def incident_link(self, alert):
        return _incident_link(alert)

    @admin.display(description="labels")
    def labels_pretty(self, alert):
        return format_html_join("", "<div><code>{}</code> = {}</div>", sorted(alert.labels.items()))

    @admin.display(description="annotations")
    def annotations_pretty(self, alert):
        return format_html_join("", "<div><code>{}</code>: {}</div>", sorted(alert.annotations.items()))

    @admin.display(description="details")
    def details_pretty(self, alert):
        return format_html("<pre>{}</pre>", json.dumps(alert.details, indent=2, sort_keys=True))
