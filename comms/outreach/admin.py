"""Admin for direct outreach: draft from the incident, see who it reaches and how it reads, review,
approve, send (after a confirmation); and every message each account was sent, one page per account."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from incidents.admin import incident_panel_register
from incidents.admin_accounts import account_panel_register
from incidents.models import AccountTier, Incident, visible_incident_rows
from incidents.selectors import incident_accounts_affected

from . import services
from .models import Outreach, OutreachDelivery

STEPS = {  # button name → (service, done message)
    "submit": (services.outreach_submit, "Submitted for review."),
    "return": (services.outreach_return, "Sent back to draft."),
    "approve": (services.outreach_approve, "Approved: it can be sent."),
}


class OutreachForm(forms.ModelForm):
    class Meta:
        model = Outreach
        fields = ("incident", "subject", "body", "tiers", "accounts")
        widgets = {
            "tiers": forms.CheckboxSelectMultiple,
            "subject": forms.TextInput(attrs={"class": "vLargeTextField"}),
            "body": forms.Textarea(attrs={"rows": 12, "class": "vLargeTextField"}),
        }

    def clean(self):
        data = super().clean()
        incident = data.get("incident") or getattr(self.instance, "incident", None)
        if incident is not None and incident.is_restricted:
            raise forms.ValidationError("A restricted incident is not told to customers.")
        try:
            services.outreach_text_check(subject=data.get("subject", ""), body=data.get("body", ""))
        except services.OutreachError as error:
            raise forms.ValidationError(str(error)) from None
        return data


@admin.register(Outreach)
class OutreachAdmin(admin.ModelAdmin):
    form = OutreachForm
    list_display = ("incident_reference", "subject", "status", "delivered", "sent_at")
    list_filter = ("status",)
    list_select_related = ("incident",)
    search_fields = ("subject", "incident__title")
    autocomplete_fields = ("incident", "accounts")
    change_form_template = "admin/comms/outreach/change_form.html"

    def get_queryset(self, request):
        rows = super().get_queryset(request).annotate(
            n_sent=Count("deliveries", filter=Q(deliveries__state="sent"))
        )
        return visible_incident_rows(rows, request.user)

    @admin.display(description="incident", ordering="incident__number")
    def incident_reference(self, outreach):
        return outreach.incident.reference

    @admin.display(description="delivered")
    def delivered(self, outreach):
        return outreach.n_sent if outreach.status == Outreach.Status.SENT else "—"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "incident":
            kwargs["queryset"] = Incident.objects.visible_to(request.user).filter(is_restricted=False)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        incident = Incident.objects.visible_to(request.user).filter(pk=initial.get("incident") or 0).first()
        if incident is not None:  # opened from the incident page: the severity's suggested tiers
            initial["tiers"] = [t.pk for t in services.outreach_suggested_tiers(incident)] or list(
                AccountTier.objects.values_list("pk", flat=True)
            )
            initial.setdefault("subject", f"{incident.severity.label} incident affecting {{{{ account.services }}}}")
            initial.setdefault(
                "body",
                "Dear {{ account.name }} team,\n\nWe are working on an incident that affects "
                "**{{ account.services }}**, which you use. Current status: {{ status }}.\n\n"
                "We will write again by {{ next_update_at }}; the status page has the latest.",
            )
        return initial

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status != Outreach.Status.DRAFT:
            return ("incident", "subject", "body", "tiers", "accounts")
        return ("incident",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        return obj is None or obj.status == Outreach.Status.DRAFT

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status == Outreach.Status.SENT:
            return False  # sent: a record, read only
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            services.outreach_edit(outreach=obj, actor=request.user, subject=data["subject"], body=data["body"])
        else:
            created = services.outreach_draft(
                incident=data["incident"], actor=request.user, subject=data["subject"], body=data["body"]
            )
            obj.pk = created.pk
            obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        outreach = form.instance
        if outreach.status == Outreach.Status.DRAFT:
            services.outreach_edit(
                outreach=outreach,
                actor=request.user,
                tiers=form.cleaned_data["tiers"],
                accounts=form.cleaned_data["accounts"],
            )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            recipients = list(services.outreach_recipients(obj))
            accounts = {c.account for c in recipients}
            context["recipients"] = recipients
            context["recipient_accounts"] = sorted(accounts, key=lambda a: a.name)
            context["preview"] = services.outreach_render(obj, min(accounts, key=lambda a: a.name)) if accounts else None
            context["steps"] = self._steps(request, obj)
            context["affected"] = incident_accounts_affected(obj.incident).count()
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _steps(self, request, outreach):
        if not self.has_change_permission(request, outreach):
            return []
        Status = Outreach.Status
        steps = {
            Status.DRAFT: ["submit", "send"],
            Status.IN_REVIEW: ["approve", "return"],
            Status.APPROVED: ["send", "return"],
        }.get(outreach.status, [])
        if outreach.incident.severity.update_approval_required:
            steps = [s for s in steps if s != "send" or outreach.status == Status.APPROVED]
        return steps

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/step/<str:step>/", view(require_POST(self.step_view)), name="comms_outreach_step"),
            path("<int:pk>/send/", view(self.send_view), name="comms_outreach_send"),
            *super().get_urls(),
        ]

    def _outreach(self, request, pk):
        outreach = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, outreach):
            raise PermissionDenied
        return outreach

    def _back(self, outreach):
        return HttpResponseRedirect(reverse("admin:comms_outreach_change", args=[outreach.pk]))

    def step_view(self, request, pk, step):
        outreach = self._outreach(request, pk)
        if step not in STEPS:
            raise PermissionDenied
        service, done = STEPS[step]
        try:
            service(outreach=outreach, actor=request.user)
        except services.OutreachError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, done)
        return self._back(outreach)

    def send_view(self, request, pk):
        """GET: who it goes to, and a button; POST: send."""
        outreach = self._outreach(request, pk)
        if request.method == "POST":
            try:
                services.outreach_send(outreach=outreach, actor=request.user)
            except services.OutreachError as error:
                messages.error(request, str(error))
            else:
                n = outreach.deliveries.count()
                messages.success(request, f"Sending to {n} contact{'s' * (n != 1)}; deliveries show the progress.")
            return self._back(outreach)
        recipients = list(services.outreach_recipients(outreach))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Send direct outreach?",
            "outreach": outreach,
            "recipients": recipients,
            "accounts": len({c.account_id for c in recipients}),
        }
        return TemplateResponse(request, "admin/comms/outreach/send.html", context)


@admin.register(OutreachDelivery)
class OutreachDeliveryAdmin(admin.ModelAdmin):
    """What each account was told, and when: filter by account (linked from the account's page)."""

    list_display = ("sent_or_created", "account", "address", "subject", "incident_reference", "state")
    list_filter = ("state", "account__tier")
    list_select_related = ("account", "outreach__incident")
    search_fields = ("address", "account__name", "account__external_id")
    readonly_fields = [f.name for f in OutreachDelivery._meta.fields]

    def get_queryset(self, request):
        return visible_incident_rows(super().get_queryset(request), request.user, field="outreach__incident")

    @admin.display(description="when", ordering="sent_at")
    def sent_or_created(self, delivery):
        return delivery.sent_at or delivery.created_at

    @admin.display(description="subject")
    def subject(self, delivery):
        return delivery.outreach.subject

    @admin.display(description="incident")
    def incident_reference(self, delivery):
        return delivery.outreach.incident.reference

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def incident_outreach(request, incident):
    """The incident page's row: outreach sent or drafted, and a link to draft one (suggested by severity)."""
    if not request.user.has_perm("comms.view_outreach") or incident.is_restricted:
        return []
    sent = incident.outreaches.filter(status=Outreach.Status.SENT).count()
    pending = incident.outreaches.exclude(status=Outreach.Status.SENT).count()
    listing = reverse("admin:comms_outreach_changelist") + f"?incident__id__exact={incident.pk}"
    html = format_html('<a href="{}">{} sent, {} not yet</a>', listing, sent, pending)
    tiers = services.outreach_suggested_tiers(incident)
    if tiers:
        html = format_html("{} · suggested for {}: {}", html, incident.severity.label, ", ".join(t.name for t in tiers))
    if request.user.has_perm("comms.add_outreach"):
        add = reverse("admin:comms_outreach_add") + f"?incident={incident.pk}"
        html = format_html('{} · <a href="{}">Draft outreach to affected accounts</a>', html, add)
    return [("Direct outreach", html)]


def account_outreach(request, account):
    """The account page's row: what it was told, and when."""
    if not request.user.has_perm("comms.view_outreachdelivery"):
        return []
    deliveries = visible_incident_rows(
        OutreachDelivery.objects.filter(account=account), request.user, field="outreach__incident"
    )
    last = deliveries.filter(state=OutreachDelivery.State.SENT).order_by("-sent_at").first()
    listing = reverse("admin:comms_outreachdelivery_changelist") + f"?account__id__exact={account.pk}"
    summary = f"last on {last.sent_at:%Y-%m-%d %H:%M} UTC" if last else "nothing sent yet"
    return [("What we told this account", format_html('<a href="{}">Every message</a> ({})', listing, summary))]


incident_panel_register(incident_outreach)
account_panel_register(account_outreach)
