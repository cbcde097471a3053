"""Admin for the public status page's scheduled maintenance: windows, their public updates, notices."""

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from . import services
from .models import MaintenanceNotice, MaintenanceUpdate, ScheduledMaintenance
from .status import public_ids

Status = ScheduledMaintenance.Status
NoticeStatus = MaintenanceNotice.Status


class ScheduledMaintenanceForm(forms.ModelForm):
    class Meta:
        model = ScheduledMaintenance
        fields = ["name", "body", "services", "scheduled_for", "scheduled_until", "impact", "auto_transition"]
        widgets = {"body": forms.Textarea(attrs={"rows": 6})}


class MaintenanceUpdateInline(admin.TabularInline):
    model = MaintenanceUpdate
    verbose_name_plural = "Public updates (newest first; written by each status change)"
    fields = ("created_at", "status", "body", "created_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _apply(modeladmin, request, queryset, change, done):
    ok = 0
    for maintenance in queryset:
        try:
            change(maintenance)
            ok += 1
        except services.MaintenanceError as error:
            modeladmin.message_user(request, f"{maintenance}: {error}", messages.WARNING)
    if ok:
        modeladmin.message_user(request, f"{ok} maintenance{'s' if ok != 1 else ''} {done}.", messages.SUCCESS)


def _transition_action(to, description):
    @admin.action(description=description, permissions=["change"])
    def action(modeladmin, request, queryset):
        _apply(
            modeladmin,
            request,
            queryset,
            lambda m: services.maintenance_transition(maintenance=m, to=to, actor=request.user),
            f"now {Status(to).label.lower()}",
        )

    action.__name__ = f"mark_{to}"
    return action


@admin.action(description="Notify subscribers now (each subscriber hears of it once)", permissions=["change"])
def notify_subscribers(modeladmin, request, queryset):
    for maintenance in queryset:
        try:
            created = services.maintenance_notices_create(maintenance=maintenance)
        except services.MaintenanceError as error:
            modeladmin.message_user(request, f"{maintenance}: {error}", messages.WARNING)
            continue
        modeladmin.message_user(
            request,
            f"{maintenance}: {created} subscriber{'s' if created != 1 else ''} will be told "
            "(those told before are not told again).",
            messages.SUCCESS,
        )


@admin.register(ScheduledMaintenance)
class ScheduledMaintenanceAdmin(admin.ModelAdmin):
    form = ScheduledMaintenanceForm
    list_display = ("name", "status", "scheduled_for", "scheduled_until", "services_list", "announced_at", "notices")
    list_filter = ("status", "impact", "services")
    search_fields = ("name", "body")
    date_hierarchy = "scheduled_for"
    autocomplete_fields = ("services",)
    readonly_fields = ("status", "started_at", "completed_at", "announced_at", "notices", "public_page")
    inlines = (MaintenanceUpdateInline,)
    actions = (
        _transition_action(Status.IN_PROGRESS, "Start (in progress)"),
        _transition_action(Status.VERIFYING, "Verifying"),
        _transition_action(Status.COMPLETED, "Complete"),
        notify_subscribers,
    )
    fieldsets = (
        (None, {"fields": ("name", "body", "services", "impact")}),
        ("Window", {"fields": ("scheduled_for", "scheduled_until", "auto_transition")}),
        (
            "Progress",
            {"fields": ("status", "started_at", "completed_at", "announced_at", "notices", "public_page")},
        ),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related("services")
            .annotate(
                notices_sent=Count("notices", filter=Q(notices__status=NoticeStatus.SENT)),
                notices_waiting=Count(
                    "notices", filter=Q(notices__status__in=[NoticeStatus.PENDING, NoticeStatus.SENDING])
                ),
                notices_failed=Count("notices", filter=Q(notices__status=NoticeStatus.FAILED)),
            )
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status == Status.COMPLETED:
            return (*ScheduledMaintenanceForm.Meta.fields, *self.readonly_fields)
        return self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        # Once it is under way or subscribers were told, it is history: complete it instead.
        if obj is not None and (obj.status != Status.SCHEDULED or obj.announced_at is not None):
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="Services")
    def services_list(self, obj):
        return ", ".join(s.name + ("" if s.is_public else " (internal)") for s in obj.services.all())

    @admin.display(description="Notices")
    def notices(self, obj):
        if obj.pk is None:
            return "—"
        sent = getattr(obj, "notices_sent", None)
        if sent is None:  # a page without the list's annotation
            counts = dict(obj.notices.values_list("status").annotate(n=Count("id")).order_by())
            sent = counts.get(NoticeStatus.SENT, 0)
            waiting = counts.get(NoticeStatus.PENDING, 0) + counts.get(NoticeStatus.SENDING, 0)
            failed = counts.get(NoticeStatus.FAILED, 0)
        else:
            waiting, failed = obj.notices_waiting, obj.notices_failed
        if not (sent or waiting or failed):
            return "none yet"
        return f"{sent} sent, {waiting} waiting, {failed} failed"

    @admin.display(description="On the status page")
    def public_page(self, obj):
        if obj.pk is None:
            return "—"
        if not any(s.is_public for s in obj.services.all()):
            return "Not shown: it affects no public service."
        url = reverse("status:maintenance", args=[public_ids.encode("maintenance", obj.pk)])
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, url)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = services.maintenance_schedule(
                name=data["name"],
                body=data["body"],
                services=data["services"],
                scheduled_for=data["scheduled_for"],
                scheduled_until=data["scheduled_until"],
                impact=data["impact"],
                auto_transition=data["auto_transition"],
                actor=request.user,
            )
            obj.pk = created.pk
            obj._state.adding = False
            return
        if "services" not in data:  # a completed maintenance: every field is read-only
            return
        fields = {name: data[name] for name in form.changed_data if name in services.MAINTENANCE_EDITABLE_FIELDS}
        services.maintenance_edit(maintenance=obj, actor=request.user, services=data["services"], **fields)

    def save_related(self, request, form, formsets, change):
        # Services were set by the service function; only the (read-only) inlines are left.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)


@admin.register(MaintenanceNotice)
class MaintenanceNoticeAdmin(admin.ModelAdmin):
    """Who was told of which maintenance, and how it went (read-only history)."""

    list_display = ("maintenance", "subscriber", "kind", "status", "sent_at", "error")
    list_filter = ("status", "kind")
    list_select_related = ("maintenance", "subscriber")
    search_fields = ("subscriber__email", "maintenance__name")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
