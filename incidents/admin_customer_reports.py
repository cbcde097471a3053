"""Admin for customer reports: enter them, find the unlinked ones, attach them to an incident.

Imported from IncidentsConfig.ready(). Reports are evidence: once entered they are read-only, and an
unlinked one is linked with the "Attach to incident…" action (which writes the incident's timeline).
Every list and choice starts from the incidents the person may see.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from . import services
from .admin import incident_panel_register
from .models import CustomerReport, Incident, visible_incident_rows
from .selectors import incident_impact_text

REFERENCE_HELP = "Reference of the incident, e.g. INC-1042."


def _incident_link(report):
    if report.incident_id is None:
        return "— (unlinked)"
    url = reverse("admin:incidents_incident_change", args=[report.incident_id])
    return format_html('<a href="{}">{}</a>', url, report.incident.reference)


def _revenue(report):
    return "—" if report.revenue_at_risk is None else f"{report.revenue_at_risk:,.2f} {report.currency}"


class LinkedFilter(admin.SimpleListFilter):
    title = "linked to an incident"
    parameter_name = "linked"

    def lookups(self, request, model_admin):
        return [("no", "Unlinked (to attach)"), ("yes", "Linked")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(incident__isnull=self.value() == "no")
        return queryset


class CustomerReportForm(forms.ModelForm):
    class Meta:
        model = CustomerReport
        fields = (
            "incident",
            "customer_id",
            "channel",
            "sentiment",
            "text",
            "revenue_at_risk",
            "currency",
            "received_at",
            "source_reference",
        )

    def clean_currency(self):
        value = (self.cleaned_data.get("currency") or "").strip().upper()
        if len(value) != 3 or not value.isalpha():
            raise ValidationError("A currency is a three-letter ISO 4217 code, e.g. EUR.")
        return value

    def clean_received_at(self):
        value = self.cleaned_data.get("received_at")
        if value is not None and value > timezone.now() + services.CLOCK_SKEW:
            raise ValidationError("A report cannot be received in the future.")
        return value


class AttachForm(forms.Form):
    incident = forms.CharField(label="Incident", help_text=REFERENCE_HELP)

    def __init__(self, *args, user, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_incident(self):
        value = self.cleaned_data["incident"].strip().upper().removeprefix("INC-")
        # Only incidents this person may see: a restricted one is "no incident", as everywhere else.
        incident = (
            Incident.objects.visible_to(self.user).filter(number=int(value)).first()
            if value.isdigit() and len(value) < 10
            else None
        )
        if incident is None:
            raise ValidationError("No incident has this reference.")
        return incident


@admin.action(description="Attach to incident…", permissions=["change"])
def attach_to_incident(modeladmin, request, queryset):
    form = AttachForm(request.POST if "apply" in request.POST else None, user=request.user)
    if "apply" in request.POST and form.is_valid():
        incident = form.cleaned_data["incident"]
        attached = 0
        for report in queryset:
            try:
                services.customer_report_attach(report=report, incident=incident, actor=request.user)
            except services.IncidentError as exc:
                modeladmin.message_user(request, f"Report {report.pk} ({report.customer_id}): {exc}", messages.WARNING)
            else:
                attached += 1
        if attached:
            modeladmin.message_user(
                request, f"{attached} report(s) attached to {incident.reference}.", messages.SUCCESS
            )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Attach customer reports to an incident",
        "opts": modeladmin.model._meta,
        "reports": queryset,
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/incidents/customerreport/attach.html", context)


@admin.register(CustomerReport)
class CustomerReportAdmin(admin.ModelAdmin):
    form = CustomerReportForm
    list_display = ("received_at", "customer_id", "channel", "sentiment", "revenue", "incident_link", "excerpt")
    list_filter = (LinkedFilter, "channel", "sentiment", "received_at")
    list_select_related = ("incident", "created_by")
    search_fields = ("customer_id", "text", "source_reference")
    date_hierarchy = None
    autocomplete_fields = ("incident",)
    actions = [attach_to_incident]
    show_full_result_count = False
    readonly_after_entry = (
        "incident_link",
        "customer_id",
        "channel",
        "sentiment",
        "text",
        "revenue",
        "received_at",
        "source_reference",
        "created_by",
        "created_at",
        "attached_at",
    )

    def get_queryset(self, request):
        return visible_incident_rows(super().get_queryset(request), request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "incident":
            kwargs["queryset"] = Incident.objects.visible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_fields(self, request, obj=None):
        return self.readonly_after_entry if obj is not None else super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_after_entry if obj is not None else ()

    @admin.display(description="incident")
    def incident_link(self, report):
        return _incident_link(report)

    @admin.display(description="revenue at risk")
    def revenue(self, report):
        return _revenue(report)

    @admin.display(description="what they said")
    def excerpt(self, report):
        return Truncator(report.text).chars(80)

    def save_model(self, request, obj, form, change):
        if change:
            return  # entered reports are read-only; attaching goes through the action
        data = {name: form.cleaned_data.get(name) for name in CustomerReportForm.Meta.fields}
        try:
            report = services.customer_report_create(actor=request.user, **data)
        except services.IncidentError as exc:
            raise ValidationError(str(exc)) from exc
        obj.pk = report.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        pass  # no m2m or inlines on a report

    def has_delete_permission(self, request, obj=None):
        return False  # evidence: kept, like the timeline


def incident_customer_impact(request, incident):
    """The incident page's customer-impact row (see incident_panel_register)."""
    if not request.user.has_perm("incidents.view_customerreport"):
        return []
    listing = reverse("admin:incidents_customerreport_changelist") + f"?incident__id__exact={incident.pk}"
    text = incident_impact_text(incident) or "No customer reports and no accounts affected yet."
    html = format_html('{} <a href="{}">See the reports</a>', text, listing)
    if request.user.has_perm("incidents.add_customerreport"):
        add = reverse("admin:incidents_customerreport_add") + f"?incident={incident.pk}"
        html = format_html('{} · <a href="{}">Add one</a>', html, add)
    if request.user.has_perm("incidents.view_account"):
        accounts = reverse("admin:incidents_account_changelist") + f"?incident={incident.pk}"
        html = format_html('{} · <a href="{}">Accounts affected</a>', html, accounts)
    return [("Customer impact", html)]


incident_panel_register(incident_customer_impact)
