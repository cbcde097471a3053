"""The comms admin; the webhook and status-page admins live in admin_webhooks.py and admin_status.py."""

import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince, timeuntil

from incidents.models import Incident, Service, visible_incident_rows

from . import rendering
from . import services as comms_services
from .models import (
    Delivery,
    IncidentNudge,
    OutreachContact,
    StakeholderList,
    Subscriber,
    Update,
    UpdateComponent,
    UpdateTemplate,
)
from .public_name import incident_public_name

# ---- Updates and templates ----


UPDATE_REFERENCE_RE = re.compile(r"^(?:INC-?)?(\d+)$", re.IGNORECASE)


def next_update_text(incident, now=None):
    """"Next update due in …" / "Overdue by …" for an incident (its severity's cadence)."""
    due = comms_services.incident_next_update_due(incident)
    if due is None:
        return "No update due: the incident is not open."
    now = now or timezone.now()
    when = timezone.localtime(due).strftime("%H:%M %Z")
    if due >= now:
        return f"Next update due in {timeuntil(due, now)} (by {when})."
    return f"Overdue by {timesince(due, now)} (was due at {when})."


def _placeholder_errors(form, *fields):
    for field in fields:
        unknown = rendering.unknown_placeholders(form.cleaned_data.get(field) or "")
        if unknown:
            form.add_error(field, rendering.unknown_placeholders_message(unknown))


class UpdateTemplateForm(forms.ModelForm):
    class Meta:
        model = UpdateTemplate
        fields = ("name", "audience", "public_status", "severity", "title", "body", "is_active")
        help_texts = {"body": "Markdown. " + rendering.placeholder_help()}

    def clean(self):
        cleaned = super().clean()
        _placeholder_errors(self, "title", "body")
        if cleaned.get("audience") == Update.Audience.INTERNAL and cleaned.get("public_status"):
            self.add_error("public_status", "Internal updates carry no public status.")
        return cleaned


@admin.register(UpdateTemplate)
class UpdateTemplateAdmin(admin.ModelAdmin):
    form = UpdateTemplateForm
    list_display = ("name", "audience", "public_status", "severity", "is_active", "draft_link")
    list_filter = ("audience", "public_status", "severity", "is_active")
    list_select_related = ("severity",)
    search_fields = ("name", "title", "body")

    @admin.display(description="draft")
    def draft_link(self, template):
        url = reverse("admin:comms_update_add") + f"?template={template.pk}"
        return format_html('<a href="{}">Draft an update from it</a>', url)


class UpdateForm(forms.ModelForm):
    class Meta:
        model = Update
        fields = ("incident", "audience", "template", "public_status", "title", "body")
        help_texts = {
            "body": "Markdown. Leave empty to start from the template. " + rendering.placeholder_help(),
            "template": "Its title and body fill the empty ones when you preview or save.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("audience", "body"):
            if name in self.fields:
                self.fields[name].required = False

    def clean(self):
        cleaned = super().clean()
        instance = self.instance
        template = cleaned.get("template") if "template" in self.fields else instance.template
        audience = cleaned.get("audience") if "audience" in self.fields else instance.audience
        if template is not None and not instance.pk:
            audience = audience or template.audience
            cleaned["audience"] = audience
            if template.audience != audience:
                self.add_error("template", f"This template is for {template.get_audience_display().lower()} updates.")
            incident = cleaned.get("incident")
            if template.severity_id is not None and incident is not None and incident.severity_id != template.severity_id:
                self.add_error("template", f"This template is for {template.severity.label} incidents.")
            if not cleaned.get("body"):
                cleaned["body"] = template.body
            if not cleaned.get("title"):
                cleaned["title"] = template.title
            if audience == Update.Audience.EXTERNAL and not cleaned.get("public_status"):
                cleaned["public_status"] = template.public_status or Update.PublicStatus.INVESTIGATING
        if not audience:
            self.add_error("audience", "Choose the audience, or a template.")
        elif not self.errors:
            try:
                comms_services.update_content_check(
                    audience=audience, public_status=cleaned.get("public_status", ""), body=cleaned.get("body", ""),
                    components=None,
                )
            except comms_services.UpdateError as exc:
                field = "public_status" if "public status" in str(exc) else "body"
                self.add_error(field, str(exc))
        _placeholder_errors(self, "title", "body")
        return cleaned

    def _post_clean(self):
        # The services validate and save; the model's own checks would run on a half-filled instance.
        pass


class UpdateComponentInline(admin.TabularInline):
    """Status-page components (public services) an external update names, with their status."""

    model = UpdateComponent
    fields = ("service", "status")
    extra = 1
    verbose_name = "component"
    verbose_name_plural = "components on the status page (external updates)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("service")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "service":
            kwargs["queryset"] = Service.objects.filter(is_public=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def _draft(self, obj):
        return obj is None or obj.status == Update.Status.DRAFT

    def has_add_permission(self, request, obj=None):
        return self._draft(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._draft(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._draft(obj) and super().has_delete_permission(request, obj)


CHANNEL_LABELS = {
    comms_services.CHANNEL_STATUS_PAGE: "the public status page, its JSON and feed",
    comms_services.CHANNEL_EMAIL_SUBSCRIBERS: "e-mail subscribers",
    comms_services.CHANNEL_DIRECT_OUTREACH: "direct outreach to affected customers",
    comms_services.CHANNEL_STAKEHOLDERS: "internal stakeholders (role holders and stakeholder lists)",
}


def _publish_reach(update):
    """What the publish confirmation says: the channels, and how many recipients on each."""
    counts = comms_services.update_recipient_summary(update)
    return {
        "channels": [CHANNEL_LABELS[c] for c in comms_services.update_channels(update)],
        "counts": [(Subscriber.Channel(channel).label, n) for channel, n in counts.items() if n],
        "total": sum(counts.values()),
    }


def preview_panes(incident, audience, public_status, title):
    """What the preview shows besides the text: the status-page entry's name and status, and the e-mail's subject."""
    if audience == Update.Audience.EXTERNAL:
        name = incident_public_name(incident)
        label = Update.PublicStatus(public_status).label if public_status else ""
        headline = title or name
        subject = comms_services.subject_status_tag(label, headline) + headline
        return {"external": True, "public_name": name, "status_label": label, "headline": headline, "subject": subject}
    headline = title or incident.title
    return {"external": False, "headline": headline, "subject": f"[{incident.reference}] Internal update: {headline}"}


class PublicIdentityForm(forms.Form):
    public_title = forms.CharField(
        max_length=200, required=False, help_text="Empty: a neutral name from the public services it affects."
    )
    public_impact = forms.CharField(
        label="Impact statement", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What customers notice, in their words (shown on the status page and in e-mails).",
    )  # fmt: skip


class ReviewQueueFilter(admin.SimpleListFilter):
    """"Waiting for my review": updates in review that this person may approve (not written or submitted by them)."""

    title = "review"
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return [("mine", "Waiting for my review")] if request.user.has_perm("comms.approve_update") else []

    def queryset(self, request, queryset):
        if self.value() != "mine":
            return queryset
        if not request.user.has_perm("comms.approve_update"):
            return queryset.none()
        me = request.user.pk
        return queryset.filter(status=Update.Status.IN_REVIEW).exclude(author_id=me).exclude(submitted_by_id=me)


# Each step: (service, permission the person needs, message when done).
WORKFLOW_STEPS = {
    "submit": (comms_services.update_submit, "comms.change_update", "submitted for review", "Submit for review"),
    "return": (comms_services.update_return, "comms.change_update", "sent back to draft", "Send back to draft"),
    "approve": (comms_services.update_approve, "comms.approve_update", "approved", "Approve"),
    "publish": (comms_services.update_publish, "comms.change_update", "published", "Publish"),
    "correct": (comms_services.update_correct, "comms.add_update", "a correction drafted", "Draft a correction"),
}


@admin.register(Update)
class UpdateAdmin(admin.ModelAdmin):
    """The customer-success screen: draft from a template, preview, submit, approve, publish, correct."""

    form = UpdateForm
    inlines = [UpdateComponentInline]

    def get_inlines(self, request, obj):
        # Failed deliveries (defined with the deliveries admin below) exist only once it is published.
        published = obj is not None and obj.status == Update.Status.PUBLISHED
        return [*self.inlines, DeliveryInline] if published else self.inlines
    list_display = (
        "__str__",
        "headline",
        "audience",
        "public_status",
        "status",
        "severity_label",
        "author",
        "created_at",
        "published_at",
    )
    list_filter = (ReviewQueueFilter, "audience", "status", "public_status", "incident__severity")
    list_select_related = ("incident", "incident__severity", "author")
    search_fields = ("title", "body", "incident__title")
    autocomplete_fields = ("incident",)
    show_full_result_count = False
    date_hierarchy = None
    change_form_template = "admin/comms/update/change_form.html"
    readonly_on_change = ("incident", "audience", "template")
    workflow_fields = (
        "status",
        "approval",
        "author",
        "submitted_by",
        "submitted_at",
        "approved_by",
        "approved_at",
        "published_by",
        "published_at",
        "corrects_link",
        "corrections_list",
    )

    def get_queryset(self, request):
        updates = super().get_queryset(request).select_related("incident__severity")
        return visible_incident_rows(updates, request.user, "incident")

    def get_search_results(self, request, queryset, search_term):
        match = UPDATE_REFERENCE_RE.match(search_term.strip())
        if match:
            return queryset.filter(incident__number=int(match.group(1))), False
        return super().get_search_results(request, queryset, search_term)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "incident":
            kwargs["queryset"] = Incident.objects.visible_to(request.user)  # the picker offers only these
        elif db_field.name == "template":
            kwargs["queryset"] = UpdateTemplate.objects.filter(is_active=True).select_related("severity")
            field = super().formfield_for_foreignkey(db_field, request, **kwargs)
            field.label_from_instance = lambda t: (
                f"{t.name} ({t.audience}, {t.get_public_status_display() or 'any status'}, "
                f"{t.severity.label if t.severity else 'any severity'})"
            )
            return field
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        template_id = request.GET.get("template", "")
        template = UpdateTemplate.objects.filter(pk=template_id).first() if template_id.isdigit() else None
        if template is not None:
            initial.update(
                template=template.pk,
                audience=template.audience,
                public_status=template.public_status,
                title=template.title,
                body=template.body,
            )
        return initial

    def get_fieldsets(self, request, obj=None):
        content = (None, {"fields": ("incident", "audience", "template", "public_status", "title", "body")})
        if obj is None:
            return [content]
        return [
            content,
            ("Preview (as it reads now)", {"fields": ("preview", "public_identity", "next_update")}),
            ("Workflow", {"fields": self.workflow_fields}),
            ("Delivery", {"fields": ("delivery_progress",)}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            *self.readonly_on_change, "preview", "public_identity", "next_update", "delivery_progress",
            *self.workflow_fields,
        )  # fmt: skip

    def has_change_permission(self, request, obj=None):
        # Only drafts are edited; the others show read-only, with their workflow buttons.
        if obj is not None and obj.status != Update.Status.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False  # what was said (or drafted) stays on record

    # -- read-only displays

    @admin.display(description="title")
    def headline(self, update):
        """As it reads (placeholders filled): drafts keep theirs until publishing."""
        if update.status == Update.Status.PUBLISHED or "{{" not in update.title + update.body[:80]:
            return update.title or update.body[:80]
        try:
            title, body, _html = comms_services.update_preview(
                incident=update.incident, audience=update.audience, public_status=update.public_status,
                title=update.title, body=update.body[:80],
            )  # fmt: skip
        except comms_services.UpdateError:
            return update.title or update.body[:80]
        return title or body

    @admin.display(description="severity", ordering="incident__severity__level")
    def severity_label(self, update):
        return update.incident.severity.label

    @admin.display(description="rendered")
    def preview(self, update):
        title, html = self._preview_of(update)
        return format_html('<div class="update-preview"><h3>{}</h3>{}</div>', title, html)

    @admin.display(description="public name")
    def public_identity(self, update):
        url = reverse("admin:comms_update_public_identity", args=[update.incident_id])
        url += "?next=" + reverse("admin:comms_update_change", args=[update.pk])
        return format_html('{} · <a href="{}">Change what the public is told</a>', incident_public_name(update.incident), url)

    @admin.display(description="incident's cadence")
    def next_update(self, update):
        return next_update_text(update.incident)

    @admin.display(description="approval")
    def approval(self, update):
        if update.audience != Update.Audience.EXTERNAL:
            return "Not needed (internal update)."
        if comms_services.approval_required(update):
            return f"Required by {update.incident.severity.label}: another person must approve before publishing."
        return f"Optional for {update.incident.severity.label}."

    @admin.display(description="corrects")
    def corrects_link(self, update):
        if update.corrects_id is None:
            return "-"
        url = reverse("admin:comms_update_change", args=[update.corrects_id])
        return format_html('<a href="{}">the update of {}</a>', url, update.corrects.created_at.strftime("%Y-%m-%d %H:%M"))

    @admin.display(description="corrections")
    def corrections_list(self, update):
        corrections = list(update.corrections.order_by("created_at", "id"))
        if not corrections:
            return "-"
        return format_html(
            ", ".join('<a href="{}">{}</a>' for _c in corrections),
            *(
                value
                for c in corrections
                for value in (reverse("admin:comms_update_change", args=[c.pk]), c.get_status_display())
            ),
        )

    @admin.display(description="delivery progress")
    def delivery_progress(self, update):
        # Hook for the deliveries work: comms.services.update_delivery_progress(update) → text or safe HTML.
        progress = getattr(comms_services, "update_delivery_progress", None)
        if progress is None or update.status != Update.Status.PUBLISHED:
            return "-"
        return progress(update)

    # -- saving through the services

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except comms_services.UpdateError as exc:  # e.g. someone submitted it while you were editing
            self.message_user(request, str(exc), messages.WARNING)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {name: data.get(name, "") for name in ("title", "body", "public_status")}
        if change:
            comms_services.update_edit(update=obj, actor=request.user, **fields)
        else:
            created = comms_services.update_draft_create(
                incident=data["incident"],
                actor=request.user,
                audience=data["audience"],
                template=data.get("template"),
                **fields,
            )
            obj.pk = created.pk
            obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        for formset in formsets:
            self.save_formset(request, form, formset, change)

    def save_formset(self, request, form, formset, change):
        if formset.model is UpdateComponent and formset.has_changed():
            components = []
            for inline_form in formset.forms:
                data = getattr(inline_form, "cleaned_data", None) or {}
                if data and not data.get("DELETE") and data.get("service") and data.get("status"):
                    components.append((data["service"], data["status"]))
            comms_services.update_edit(update=form.instance, actor=request.user, components=components)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def construct_change_message(self, request, form, formsets, add=False):
        return "Saved through the update services."

    # -- preview and workflow buttons

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        urls = [
            path("preview/", self.admin_site.admin_view(self.preview_view), name=f"{prefix}_preview"),
            path(
                "<path:object_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name=f"{prefix}_preview_existing",
            ),
        ]
        urls.append(
            path(
                "public-identity/<int:incident_id>/",
                self.admin_site.admin_view(self.public_identity_view),
                name=f"{prefix}_public_identity",
            )
        )
        for step in WORKFLOW_STEPS:
            urls.append(
                path(
                    f"<path:object_id>/{step}/",
                    self.admin_site.admin_view(self.workflow_view),
                    {"step": step},
                    name=f"{prefix}_{step}",
                )
            )
        return [*urls, *super().get_urls()]

    def _visible_update(self, request, object_id):
        update = self.get_object(request, unquote(object_id))
        if update is None:
            raise Http404("No such update.")
        return update

    def _preview_of(self, update):
        if update.status == Update.Status.PUBLISHED:
            return update.title, mark_safe(update.body_html)  # sanitised by nh3 when it was published
        title, _body, html = comms_services.update_preview(
            incident=update.incident,
            audience=update.audience,
            public_status=update.public_status,
            title=update.title,
            body=update.body,
        )
        return title, mark_safe(html)  # sanitised by nh3

    def workflow_view(self, request, object_id, step):
        update = self._visible_update(request, object_id)
        service, permission, done, label = WORKFLOW_STEPS[step]
        if not request.user.has_perm(permission):
            raise PermissionDenied
        if request.method != "POST":
            # A confirmation page: following a link never changes anything; its button posts here.
            title, html = self._preview_of(update)
            context = {
                **self.admin_site.each_context(request),
                "title": f"{label}: {update}",
                "opts": self.opts,
                "original": update,
                "step_label": label,
                "preview_title": title,
                "preview_html": html,
                "panes": preview_panes(update.incident, update.audience, update.public_status, title),
            }
            if step == "publish":
                context["reach"] = _publish_reach(update)
            return TemplateResponse(request, "admin/comms/update/confirm_step.html", context)
        try:
            result = service(update=update, actor=request.user)
        except comms_services.UpdatePermissionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            result = update
        except comms_services.UpdateError as exc:
            self.message_user(request, str(exc), messages.WARNING)
            result = update
        else:
            self.message_user(request, f"{result}: {done}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:comms_update_change", args=[result.pk]))

    def public_identity_view(self, request, incident_id):
        """The incident's public title and impact statement: what everything public calls it."""
        incident = Incident.objects.visible_to(request.user).filter(pk=incident_id).first()
        if incident is None:
            raise Http404("No such incident.")
        if not request.user.has_perm(comms_services.PUBLISH_EXTERNAL_PERMISSION):
            raise PermissionDenied
        form = PublicIdentityForm(
            request.POST or None, initial={"public_title": incident.public_title, "public_impact": incident.public_impact}
        )
        if request.method == "POST" and form.is_valid():
            try:
                comms_services.incident_public_identity_set(incident=incident, actor=request.user, **form.cleaned_data)
            except comms_services.UpdateError as exc:
                form.add_error(getattr(exc, "field", None), str(exc))
            else:
                self.message_user(request, f"{incident.reference}: what the public is told was saved.", messages.SUCCESS)
                return HttpResponseRedirect(request.GET.get("next") or reverse("admin:comms_update_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Public identity of {incident.reference}",
            "opts": self.opts,
            "incident": incident,
            "form": form,
            "public_name": incident_public_name(incident),
        }
        return TemplateResponse(request, "admin/comms/update/public_identity.html", context)

    def preview_view(self, request, object_id=None):
        """The draft form posted here (the Preview button): the update as it would read, nothing saved."""
        obj = self._visible_update(request, object_id) if object_id is not None else None
        if request.method != "POST":
            if obj is None:
                return HttpResponseNotAllowed(["POST"])  # the add form posts its fields here
            if not self.has_view_permission(request, obj):
                raise PermissionDenied
            title, html = self._preview_of(obj)
            context = {
                **self.admin_site.each_context(request),
                "title": "Preview",
                "opts": self.opts,
                "form": None,
                "preview_title": title,
                "preview_html": html,
                "panes": preview_panes(obj.incident, obj.audience, obj.public_status, title),
            }
            return TemplateResponse(request, "admin/comms/update/preview.html", context)
        if not (self.has_add_permission(request) or self.has_change_permission(request, obj)):
            raise PermissionDenied
        form_class = self.get_form(request, obj, change=obj is not None)
        form = form_class(request.POST, instance=obj)
        title = html = panes = None
        if form.is_valid():
            data = form.cleaned_data
            incident = obj.incident if obj else data["incident"]
            audience = obj.audience if obj else data["audience"]
            try:
                title, _body, html = comms_services.update_preview(
                    incident=incident,
                    audience=audience,
                    public_status=data.get("public_status", ""),
                    title=data.get("title", ""),
                    body=data.get("body", ""),
                )
            except comms_services.UpdateError as exc:  # an internal-only placeholder in an external text
                form.add_error(getattr(exc, "field", None), str(exc))
            else:
                html = mark_safe(html)  # sanitised by nh3
                panes = preview_panes(incident, audience, data.get("public_status", ""), title)
        context = {
            **self.admin_site.each_context(request),
            "title": "Preview",
            "opts": self.opts,
            "form": form,
            "preview_title": title,
            "preview_html": html,
            "panes": panes,
        }
        return TemplateResponse(request, "admin/comms/update/preview.html", context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        user = request.user
        if obj is not None:
            status = obj.status
            S = Update.Status
            context["workflow_buttons"] = [
                (step, label)
                for step, label, allowed in (
                    ("submit", "Submit for review", status == S.DRAFT and user.has_perm("comms.change_update")),
                    (
                        "approve",
                        "Approve",
                        status == S.IN_REVIEW
                        and user.has_perm("comms.approve_update")
                        and user.pk not in (obj.author_id, obj.submitted_by_id),
                    ),
                    (
                        "publish",
                        "Publish",
                        status != S.PUBLISHED
                        and user.has_perm("comms.change_update")
                        and (obj.audience == Update.Audience.INTERNAL or user.has_perm("comms.publish_external_update"))
                        and (status == S.APPROVED or not comms_services.approval_required(obj)),
                    ),
                    (
                        "return",
                        "Send back to draft",
                        status in (S.IN_REVIEW, S.APPROVED) and user.has_perm("comms.change_update"),
                    ),
                    ("correct", "Correct…", status == S.PUBLISHED and user.has_perm("comms.add_update")),
                )
                if allowed
            ]
            context["preview_url"] = reverse("admin:comms_update_preview_existing", args=[obj.pk])
        else:
            context["preview_url"] = reverse("admin:comms_update_preview")
            # For the template picker's script (comms/static/comms/admin/update_template.js).
            context["update_templates"] = {
                str(t.pk): {"audience": t.audience, "public_status": t.public_status, "title": t.title, "body": t.body}
                for t in UpdateTemplate.objects.filter(is_active=True)
            }
        return super().render_change_form(request, context, add, change, form_url, obj)


# ---- Subscribers and deliveries ----


class SubscriberConfirmedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("active", "Confirmed, subscribed"),
            ("unconfirmed", "Waiting for confirmation"),
            ("unsubscribed", "Unsubscribed"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "active":
            return queryset.filter(confirmed_at__isnull=False, unsubscribed_at__isnull=True)
        if value == "unconfirmed":
            return queryset.filter(confirmed_at__isnull=True, unsubscribed_at__isnull=True)
        if value == "unsubscribed":
            return queryset.filter(unsubscribed_at__isnull=False)
        return queryset


class SubscriberForm(forms.ModelForm):
    active = forms.BooleanField(
        required=False,
        initial=True,
        help_text="Staff-added subscribers are confirmed by you. Untick to unsubscribe.",
    )

    class Meta:
        model = Subscriber
        fields = ("channel", "email", "url", "services", "min_severity")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["active"].initial = self.instance.is_active

    def clean(self):
        cleaned = super().clean()
        channel = cleaned.get("channel")
        if channel == Subscriber.Channel.EMAIL and not cleaned.get("email"):
            self.add_error("email", "An e-mail subscriber needs an address.")
        elif channel and channel != Subscriber.Channel.EMAIL and not cleaned.get("url"):
            self.add_error("url", "A webhook subscriber needs a URL.")
        return cleaned


@admin.register(Subscriber)
class SubscriberAdmin(admin.ModelAdmin):
    form = SubscriberForm
    list_display = ("__str__", "channel", "state", "services_list", "min_severity", "source", "created_at")
    list_filter = ("channel", SubscriberConfirmedFilter, "source", "services", "min_severity")
    list_select_related = ("min_severity",)
    search_fields = ("email", "url")
    readonly_fields = ("source", "created_at", "confirmation_sent_at", "confirmed_at", "unsubscribed_at")
    filter_horizontal = ("services",)
    show_full_result_count = False
    actions = ["unsubscribe_selected"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("services")

    @admin.display(description="state")
    def state(self, subscriber):
        if subscriber.unsubscribed_at:
            return "unsubscribed"
        return "active" if subscriber.confirmed_at else "waiting for confirmation"

    @admin.display(description="services")
    def services_list(self, subscriber):
        return ", ".join(s.name for s in subscriber.services.all()) or "every service"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {name: data.get(name) for name in ("channel", "email", "url", "min_severity")}
        fields["email"], fields["url"] = fields["email"] or "", fields["url"] or ""
        try:
            if change:
                saved = comms_services.subscriber_update(
                    subscriber=obj, services=data.get("services", []), active=data.get("active"), **fields
                )
            else:
                saved = comms_services.subscriber_create(services=data.get("services", []), **fields)
                if not data.get("active"):
                    saved = comms_services.subscriber_unsubscribe(subscriber=saved)
        except comms_services.SubscriberError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        obj.pk = saved.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        pass  # services were set by the service

    @admin.action(description="Unsubscribe the selected subscribers", permissions=["change"])
    def unsubscribe_selected(self, request, queryset):
        for subscriber in queryset:
            comms_services.subscriber_unsubscribe(subscriber=subscriber)
        self.message_user(request, f"{queryset.count()} unsubscribed.", messages.SUCCESS)


@admin.register(OutreachContact)
class OutreachContactAdmin(admin.ModelAdmin):
    """Customers told directly of incidents on their services when the severity's policy says so (Sev1)."""

    list_display = ("name", "email", "services_list", "is_active")
    list_filter = ("is_active", "services")
    search_fields = ("name", "email")
    filter_horizontal = ("services",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("services")

    @admin.display(description="services")
    def services_list(self, contact):
        return ", ".join(s.name for s in contact.services.all()) or "every service"


@admin.register(StakeholderList)
class StakeholderListAdmin(admin.ModelAdmin):
    """Who hears internal updates besides the incident's role holders: by service and minimum severity."""

    list_display = ("name", "services_list", "min_severity", "people", "is_active")
    list_filter = ("is_active", "services", "min_severity")
    list_select_related = ("min_severity",)
    search_fields = ("name", "emails", "users__username", "users__email")
    filter_horizontal = ("users", "services")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("services", "users")

    @admin.display(description="services")
    def services_list(self, stakeholders):
        return ", ".join(s.name for s in stakeholders.services.all()) or "every service"

    @admin.display(description="people and addresses")
    def people(self, stakeholders):
        return len(stakeholders.users.all()) + len(stakeholders.email_list())


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DeliveryInline(admin.TabularInline):
    """The update's failed deliveries with their errors, on the update page. Read-only."""

    model = Delivery
    fields = ("address", "channel", "audience", "state", "attempts", "last_error", "claimed_at", "sent_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "failed deliveries"

    def get_queryset(self, request):
        # Only the failures: a big fan-out has thousands of pending rows, counted in "delivery progress".
        return super().get_queryset(request).filter(state=Delivery.State.FAILED).order_by("id")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(_ReadOnlyAdmin):
    list_display = ("address", "update_link", "channel", "audience", "state", "attempts", "short_error", "sent_at")
    list_filter = ("state", "channel", "audience")
    list_select_related = ("update__incident",)
    search_fields = ("address",)
    show_full_result_count = False
    actions = ["retry_failed"]

    def get_queryset(self, request):
        deliveries = super().get_queryset(request).select_related("update__incident")
        return visible_incident_rows(deliveries, request.user, "update__incident")

    @admin.display(description="update")
    def update_link(self, delivery):
        url = reverse("admin:comms_update_change", args=[delivery.update_id])
        return format_html('<a href="{}">{}</a>', url, delivery.update)

    @admin.display(description="last error")
    def short_error(self, delivery):
        return delivery.last_error[:120]

    def has_retry_permission(self, request):
        return request.user.has_perm("comms.change_update")

    @admin.action(description="Send the selected failed deliveries again", permissions=["retry"])
    def retry_failed(self, request, queryset):
        ids = list(queryset.filter(state=Delivery.State.FAILED).values_list("pk", flat=True))
        Delivery.objects.filter(pk__in=ids, state=Delivery.State.FAILED).update(
            state=Delivery.State.PENDING, attempts=0, enqueued_at=None
        )
        comms_services.deliveries_enqueue(delivery_ids=ids)
        self.message_user(request, f"{len(ids)} failed deliveries queued again.", messages.SUCCESS)


@admin.register(IncidentNudge)
class IncidentNudgeAdmin(_ReadOnlyAdmin):
    """The reminders sent: update due / overdue (per due window) and acknowledgement escalation (once)."""

    list_display = ("incident", "kind", "window", "recipient_list", "state", "sent_at")
    list_filter = ("kind", "state")
    list_select_related = ("incident",)
    show_full_result_count = False

    def get_queryset(self, request):
        return visible_incident_rows(super().get_queryset(request), request.user, "incident")

    @admin.display(description="recipients")
    def recipient_list(self, nudge):
        return ", ".join(nudge.recipients)
