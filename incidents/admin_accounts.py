"""Admin for customer accounts: tiers, accounts with their contacts and services, and the CSV import
(upload, preview, then apply all or nothing). Imported from IncidentsConfig.ready()."""

from django import forms
from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from .accounts import CSV_COLUMNS, AccountError, accounts_csv_plan, accounts_import
from .models import Account, AccountContact, AccountTier, Incident
from .selectors import incident_accounts_affected

CSV_MAX_BYTES = 5 * 1024 * 1024

# Other apps show what they hold about an account (what it was told, say) on its page without
# incidents importing them: panel(request, account) returns [(label, html)].
_account_panels = []


def account_panel_register(panel):
    if panel not in _account_panels:
        _account_panels.append(panel)


@admin.register(AccountTier)
class AccountTierAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "rank")
    list_editable = ("rank",)
    prepopulated_fields = {"slug": ("name",)}


class AccountContactInline(admin.TabularInline):
    model = AccountContact
    extra = 1
    fields = ("name", "email", "role", "incident_emails")


class AffectedByIncidentFilter(admin.SimpleListFilter):
    """?incident=<id>: the accounts an incident affects (linked from the incident page's impact row)."""

    title = "affected by incident"
    parameter_name = "incident"

    def lookups(self, request, model_admin):
        return []  # reached by link only: there are far too many incidents to list

    def has_output(self):
        return self.value() is not None

    def choices(self, changelist):
        yield {
            "selected": True,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": f"Incident {self.value()} (clear)",
        }

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        incident = (
            Incident.objects.visible_to(request.user).filter(pk=self.value()).first()
            if (self.value().isdigit() and len(self.value()) < 19)
            else None
        )
        if incident is None:
            return queryset.none()  # unknown or not visible: tells nothing
        return queryset.filter(pk__in=incident_accounts_affected(incident).values("pk"))


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("name", "external_id", "tier", "contract_value", "service_list")
    list_filter = (AffectedByIncidentFilter, "tier", "services")
    list_select_related = ("tier",)
    search_fields = ("name", "external_id", "contacts__email")
    autocomplete_fields = ("services",)
    inlines = [AccountContactInline]
    readonly_fields = ("created_at", "updated_at")
    fields = (
        "external_id",
        "name",
        "tier",
        ("annual_contract_value", "currency"),
        "services",
        ("created_at", "updated_at"),
    )
    show_full_result_count = False
    change_list_template = "admin/incidents/account/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("services")

    @admin.display(description="annual contract value", ordering="annual_contract_value")
    def contract_value(self, account):
        return f"{account.annual_contract_value:,.2f} {account.currency}"

    @admin.display(description="services")
    def service_list(self, account):
        return ", ".join(s.name for s in account.services.all()) or "—"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["account_panels"] = [row for panel in _account_panels for row in panel(request, obj)]
        if obj is not None:  # the incidents that touched this account, as far as the reader may see
            context["recent_incidents"] = (
                Incident.objects.visible_to(request.user)
                .filter(Q(services__in=obj.services.all()) | Q(customer_reports__account=obj))
                .distinct()
                .select_related("severity")
                .order_by("-detected_at")[:20]
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="incidents_account_import"),
            *super().get_urls(),
        ]

    def import_view(self, request):
        """Upload a CSV, see what it would do, then apply it (the same text, checked again)."""
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            return HttpResponseRedirect(reverse("admin:incidents_account_changelist"))
        form, plan, text = CsvUploadForm(), None, ""
        if request.method == "POST" and "apply" in request.POST:
            text = request.POST.get("csv_text", "")
            plan = accounts_csv_plan(text)
            try:
                created, updated = accounts_import(plan=plan)
            except AccountError as error:
                messages.error(request, str(error))
            else:
                messages.success(request, f"Imported {created + updated} accounts: {created} new, {updated} updated.")
                return HttpResponseRedirect(reverse("admin:incidents_account_changelist"))
        elif request.method == "POST":
            form = CsvUploadForm(request.POST, request.FILES)
            if form.is_valid():
                text = form.cleaned_data["text"]
                plan = accounts_csv_plan(text)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import accounts from CSV",
            "form": form,
            "plan": plan,
            "preview": plan.accounts[:50] if plan else [],
            "csv_text": text,
            "columns": CSV_COLUMNS,
        }
        return TemplateResponse(request, "admin/incidents/account/import.html", context)


class CsvUploadForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV with a header row; at most 5 MB.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > CSV_MAX_BYTES:
            raise forms.ValidationError("The file is larger than 5 MB: split it.")
        raw = upload.read()
        try:
            self.cleaned_data["text"] = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text: export it from your CRM as UTF-8 CSV.") from None
        if "\x00" in self.cleaned_data["text"]:
            raise forms.ValidationError("The file contains NUL bytes: it is not a CSV export.")
        return upload
