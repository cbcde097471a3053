"""The postmortems admin; sections by area."""

import re
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import URLField
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from incidents.admin import ServiceFilter, incident_panel_register
from incidents.models import Incident, visible_incident_rows

from . import selectors as review_selectors
from . import services as postmortem_services
from .models import (
    REVIEW_SECTION_FIELDS,
    ActionItem,
    ActionItemReminder,
    ContributingFactor,
    Review,
    ReviewReviewer,
    ReviewTemplate,
)

INCIDENT_REFERENCE_RE = re.compile(r"^(?:INC-?)?(\d+)$", re.IGNORECASE)

# ---- Post-incident reviews ----


class ReviewServiceFilter(ServiceFilter):
    """Reviews of incidents that affected a service."""

    incident_column = "incident_id"


class ReviewRequiredFilter(admin.SimpleListFilter):
    title = "required by severity"
    parameter_name = "required"

    def lookups(self, request, model_admin):
        return [("yes", "Required"), ("no", "Optional")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(incident__severity__review_required=self.value() == "yes")
        return queryset


@admin.register(ReviewTemplate)
class ReviewTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "is_default", "updated_at")
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "is_default")}),
        ("Starting text of each section", {"fields": REVIEW_SECTION_FIELDS}),
    )


class ContributingFactorInline(admin.TabularInline):
    """Contributing factors, several per review, each with its category; saved through the review services."""

    model = ContributingFactor
    fields = ("category", "description")
    extra = 1
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 2, "cols": 80})}}

    def _editable(self, obj):
        return obj is None or obj.status != Review.Status.PUBLISHED

    def has_add_permission(self, request, obj=None):
        return self._editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._editable(obj) and super().has_delete_permission(request, obj)


class ReviewerForm(forms.ModelForm):
    class Meta:
        model = ReviewReviewer
        fields = ("user",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "user" in self.fields:
            self.fields["user"].queryset = get_user_model().objects.filter(is_active=True, is_staff=True)

    def _post_clean(self):
        pass  # naming someone twice is a no-op in the service; the author is refused there with a message


class ReviewReviewerInline(admin.TabularInline):
    """The named reviewers and their approvals; publishing needs every one of them."""

    model = ReviewReviewer
    form = ReviewerForm
    fields = ("user", "added_at", "approved_at")
    readonly_fields = ("added_at", "approved_at")
    extra = 1
    verbose_name_plural = "reviewers (publishing needs every one's approval)"

    def get_readonly_fields(self, request, obj=None):
        # Existing rows cannot be switched to another person: remove the row and name someone else.
        return ("added_at", "approved_at")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")

    def _editable(self, obj):
        return obj is None or obj.status != Review.Status.PUBLISHED

    def has_add_permission(self, request, obj=None):
        return self._editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._editable(obj) and super().has_delete_permission(request, obj)


class ReviewAddForm(forms.ModelForm):
    class Meta:
        model = Review
        fields = ("incident", "template")

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].initial = getattr(postmortem_services.review_template_default(), "pk", None)
        self.fields["template"].help_text = "Its text follows what the incident record already tells (editable)."

    def clean_incident(self):
        incident = self.cleaned_data["incident"]
        if incident is not None and incident.status == Incident.Status.DISMISSED:
            raise forms.ValidationError(f"{incident.reference} was dismissed: there is nothing to review.")
        return incident


def _review_visible(queryset, request):
    return visible_incident_rows(queryset, request.user, "incident")


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    """Reviews, and the knowledge base of published ones: search looks through every section."""

    change_form_template = "admin/postmortems/review/change_form.html"
    list_display = ("incident_reference", "incident_title", "severity", "status", "author", "published_at", "updated_at")
    list_display_links = ("incident_reference", "incident_title")
    list_filter = (
        "status",
        "incident__severity",
        ReviewServiceFilter,
        ReviewRequiredFilter,
        "published_at",
        "factors__category",
    )
    list_select_related = ("incident", "incident__severity", "author")
    search_fields = (*REVIEW_SECTION_FIELDS, "incident__title", "incident__summary", "factors__description")
    search_help_text = (
        "Reference (INC-1042), or words from any section, a contributing factor, or the incident's title, "
        "summary or notes (every word must match; best matches first)."
    )
    date_hierarchy = None
    autocomplete_fields = ("incident",)
    list_per_page = 50
    show_full_result_count = False
    inlines = [ContributingFactorInline, ReviewReviewerInline]
    sections_fieldset = ("Review", {"fields": REVIEW_SECTION_FIELDS})
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 6, "cols": 100})}}

    # -- lists and pages show only reviews of incidents this person may see

    def get_queryset(self, request):
        return _review_visible(super().get_queryset(request), request)

    def get_search_results(self, request, queryset, search_term):
        # The knowledge base search: full-text, ranked, over the incident's title, summary and notes, every
        # section and factor (see postmortems.selectors.review_search); a reference finds its review.
        return review_selectors.review_search(queryset, search_term), False

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "incident":
            kwargs["queryset"] = Incident.objects.visible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_delete_permission(self, request, obj=None):
        return False  # reviews are history: reopen one to change it

    # -- the form

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ReviewAddForm
            kwargs["fields"] = ("incident", "template")
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("incident", "template")}),)
        return (
            (None, {"fields": ("incident_link", "status", "author", "workflow", "blameless_check")}),
            self.sections_fieldset,
            ("The incident record (when the review started)", {"classes": ("collapse",), "fields": ("facts_text",)}),
            (
                "Knowledge base",
                {"fields": ("similar_past_incidents", "recurrence_links"), "description": "Visible incidents only."},
            ),
            ("The incident's timeline, as it is now", {"classes": ("collapse",), "fields": ("incident_timeline",)}),
        )

    def get_readonly_fields(self, request, obj=None):
        fixed = (
            "incident_link",
            "status",
            "author",
            "workflow",
            "blameless_check",
            "facts_text",
            "similar_past_incidents",
            "recurrence_links",
            "incident_timeline",
        )
        if obj is not None and obj.status == Review.Status.PUBLISHED:
            return (*fixed, *REVIEW_SECTION_FIELDS)
        return fixed

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

    def get_changeform_initial_data(self, request):
        # "Start review" links pass ?incident=<id>; the rest of the prefill is done by the service.
        return super().get_changeform_initial_data(request)

    def add_view(self, request, form_url="", extra_context=None):
        incident_id = request.GET.get("incident", "")
        if request.method == "GET" and incident_id.isdigit():
            existing = _review_visible(Review.objects.filter(incident_id=int(incident_id)), request).first()
            if existing is not None:
                self.message_user(request, f"{existing.incident.reference} already has a review.", messages.INFO)
                return HttpResponseRedirect(reverse("admin:postmortems_review_change", args=[existing.pk]))
        return super().add_view(request, form_url, {"title": "Start a post-incident review", **(extra_context or {})})

    # -- saving through the services

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = postmortem_services.review_create(
                incident=data["incident"], actor=request.user, template=data.get("template")
            )
            obj.pk = created.pk
            obj.refresh_from_db()
            obj._state.adding = False
            return
        sections = {name: data[name] for name in REVIEW_SECTION_FIELDS if name in data}
        postmortem_services.review_update(review=obj, actor=request.user, **sections)
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        for formset in formsets:
            self.save_formset(request, form, formset, change)

    def save_formset(self, request, form, formset, change):
        review = form.instance
        for inline_form in formset.forms:
            if not hasattr(inline_form, "cleaned_data") or not inline_form.cleaned_data:
                continue
            data = inline_form.cleaned_data
            existing = inline_form.instance.pk is not None
            deleting = data.get("DELETE")
            try:
                if formset.model is ContributingFactor:
                    if existing and deleting:
                        postmortem_services.review_factor_remove(factor=inline_form.instance, actor=request.user)
                    elif existing and inline_form.has_changed():
                        postmortem_services.review_factor_update(
                            factor=inline_form.instance,
                            actor=request.user,
                            category=data["category"],
                            description=data["description"],
                        )
                    elif not existing and not deleting and data.get("description"):
                        postmortem_services.review_factor_add(
                            review=review, actor=request.user, category=data["category"], description=data["description"]
                        )
                elif formset.model is ReviewReviewer:
                    if existing and deleting:
                        postmortem_services.review_reviewer_remove(reviewer=inline_form.instance, actor=request.user)
                    elif not existing and not deleting and data.get("user"):
                        postmortem_services.review_reviewer_add(review=review, user=data["user"], actor=request.user)
                else:
                    # Inlines added by other sections (action items) save themselves.
                    self._save_other(request, form, formset, change)
                    return
            except postmortem_services.ReviewError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def _save_other(self, request, form, formset, change):
        saver = getattr(formset, "save_through_services", None)
        if saver is not None:
            saver(request)
        else:
            super().save_formset(request, form, formset, change)

    def construct_change_message(self, request, form, formsets, add=False):
        return "Changed through the review services; see the incident's timeline."

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(request, f"Review of {obj.incident.reference} started from the incident record.")
        return HttpResponseRedirect(reverse("admin:postmortems_review_change", args=[obj.pk]))

    # -- columns and read-only fields

    @admin.display(description="incident", ordering="incident__number")
    def incident_reference(self, review):
        return review.incident.reference

    @admin.display(description="title")
    def incident_title(self, review):
        return review.incident.title

    @admin.display(description="severity", ordering="incident__severity__level")
    def severity(self, review):
        return review.incident.severity.label

    @admin.display(description="incident")
    def incident_link(self, review):
        url = reverse("admin:incidents_incident_change", args=[review.incident_id])
        required = "required" if review.incident.severity.review_required else "optional"
        return format_html(
            '<a href="{}">{}</a> {} — {} ({}, review {})',
            url,
            review.incident.reference,
            review.incident.title,
            review.incident.get_status_display(),
            review.incident.severity.label,
            required,
        )

    @admin.display(description="approval")
    def workflow(self, review):
        rows = list(review.reviewers.select_related("user"))
        if not rows:
            return "No reviewer named yet: name at least one below, then submit for review."
        return format_html_join(
            ", ",
            "{} {}",
            ((r.user.get_username(), "✔ approved" if r.approved_at else "(waiting)") for r in rows),
        )

    @admin.display(description="blameless check")
    def blameless_check(self, review):
        matches = postmortem_services.review_people_named(review)
        if not matches:
            return "No section names a person."
        items = format_html_join(
            "", "<li>{}: “{}”</li>", ((m["section_label"], m["text"]) for m in matches)
        )
        return format_html(
            '<div class="blameless-warning"><strong>These sections name people:</strong><ul>{}</ul>'
            "Blameless reviews describe systems, conditions and decisions rather than individuals: "
            "consider “the on-call engineer”, “the deploy pipeline”, “the team decided…”. "
            "Publishing will ask you to confirm.</div>",
            items,
        )

    @admin.display(description="facts")
    def facts_text(self, review):
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', review.facts or "—")

    @admin.display(description="similar past incidents")
    def similar_past_incidents(self, review):
        found = review_selectors.similar_incidents(review.incident, review.viewer, limit=5)
        if not found:
            return "None found."
        return format_html_join(
            "",
            '<div><a href="{}">{}</a> {} — {}</div>',
            (
                (
                    reverse("admin:incidents_incident_change", args=[f.incident.pk]),
                    f.incident.reference,
                    f.incident.title,
                    "; ".join(f.reasons),
                )
                for f in found
            ),
        )

    @admin.display(description="recurrences")
    def recurrence_links(self, review):
        earlier, later = review_selectors.recurrence_links(review.incident, review.viewer)
        parts = []
        if earlier is not None:
            url = reverse("admin:incidents_incident_change", args=[earlier.pk])
            parts.append(format_html('Recurrence of <a href="{}">{}</a> {}', url, earlier.reference, earlier.title))
        for incident in later:
            url = reverse("admin:incidents_incident_change", args=[incident.pk])
            parts.append(format_html('Repeated by <a href="{}">{}</a> {}', url, incident.reference, incident.title))
        return format_html_join("", "<div>{}</div>", ((p,) for p in parts)) if parts else "None."

    @admin.display(description="timeline")
    def incident_timeline(self, review):
        return format_html(
            '<pre style="white-space:pre-wrap">{}</pre>',
            postmortem_services.review_timeline_text(review.incident) or "—",
        )

    def get_object(self, request, object_id, from_field=None):
        review = super().get_object(request, object_id, from_field)
        if review is not None:
            review.viewer = request.user  # the knowledge-base fields show only what this person may see
        return review

    # -- workflow buttons

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        steps = [
            path(
                f"<path:object_id>/{step}/",
                self.admin_site.admin_view(getattr(self, f"{step}_view")),
                name=f"{prefix}_{step}",
            )
            for step in ("submit", "approve", "publish", "reopen", "refresh")
        ]
        return [*steps, *super().get_urls()]

    def _review_for_change(self, request, object_id):
        review = get_object_or_404(self.get_queryset(request).select_related("incident"), pk=unquote(object_id))
        if not self.has_change_permission(request, review):
            raise PermissionDenied
        return review

    def _back_to(self, review):
        return HttpResponseRedirect(reverse("admin:postmortems_review_change", args=[review.pk]))

    def _step(self, request, object_id, service, done):
        review = self._review_for_change(request, object_id)
        if request.method != "POST":
            return self._back_to(review)  # a step is a button (POST); a followed link just shows the review
        try:
            service(review=review, actor=request.user)
        except postmortem_services.ReviewError as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            self.message_user(request, done.format(ref=review.incident.reference))
        return self._back_to(review)

    def submit_view(self, request, object_id):
        return self._step(request, object_id, postmortem_services.review_submit, "Review of {ref} submitted for approval.")

    def approve_view(self, request, object_id):
        return self._step(request, object_id, postmortem_services.review_approve, "You approved the review of {ref}.")

    def reopen_view(self, request, object_id):
        return self._step(request, object_id, postmortem_services.review_reopen, "Review of {ref} is a draft again.")

    def refresh_view(self, request, object_id):
        return self._step(
            request, object_id, postmortem_services.review_refresh_facts, "Facts of {ref} refreshed from the incident."
        )

    def publish_view(self, request, object_id):
        """Publishes at once when no section names a person; otherwise shows the names and asks to confirm."""
        review = self._review_for_change(request, object_id)
        matches = postmortem_services.review_people_named(review)
        if request.method == "POST":
            confirmed = request.POST.get("acknowledge_named_people") in ("on", "true", "1", "yes")
            try:
                postmortem_services.review_publish(
                    review=review, actor=request.user, acknowledge_named_people=confirmed
                )
            except postmortem_services.PeopleNamed as exc:
                matches = exc.matches
            except postmortem_services.ReviewError as exc:
                self.message_user(request, str(exc), messages.WARNING)
                return self._back_to(review)
            else:
                self.message_user(request, f"Review of {review.incident.reference} published.")
                return self._back_to(review)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Publish the review of {review.incident.reference}",
            "opts": self.opts,
            "original": review,
            "matches": matches,
        }
        return TemplateResponse(request, "admin/postmortems/review/publish_confirm.html", context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            reviewer = next((r for r in obj.reviewers.all() if r.user_id == request.user.pk), None)
            context.update(
                can_submit=obj.status == Review.Status.DRAFT,
                can_approve=obj.status == Review.Status.IN_REVIEW and reviewer is not None and not reviewer.approved_at,
                can_publish=obj.status == Review.Status.IN_REVIEW,
                can_reopen=obj.status != Review.Status.DRAFT and obj.incident.status != Incident.Status.CLOSED,
                can_refresh=obj.status != Review.Status.PUBLISHED,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)


# ---- Action items ----


def _action_item_visible(queryset, request):
    """Action items (or rows of them) follow their incident's visibility."""
    return visible_incident_rows(queryset, request.user, "incident")


class ActionItemDueFilter(admin.SimpleListFilter):
    title = "due"
    parameter_name = "due"

    def lookups(self, request, model_admin):
        return [
            ("overdue", "Overdue"),
            ("week", "Due this week"),
            ("soon", f"Due within {settings.ACTION_ITEM_REMINDER_DAYS_BEFORE} days"),
            ("none", "No due date"),
        ]

    def queryset(self, request, queryset):
        today = timezone.localdate()
        active = queryset.filter(status__in=ActionItem.ACTIVE_STATUSES)
        if self.value() == "overdue":
            return active.filter(due_date__lt=today)
        if self.value() == "week":  # from today to Sunday
            return active.filter(due_date__gte=today, due_date__lte=today + timedelta(days=6 - today.weekday()))
        if self.value() == "soon":
            return active.filter(
                due_date__gte=today, due_date__lte=today + timedelta(days=settings.ACTION_ITEM_REMINDER_DAYS_BEFORE)
            )
        if self.value() == "none":
            return queryset.filter(due_date__isnull=True)
        return queryset


class ActionItemMineFilter(admin.SimpleListFilter):
    title = "whose"
    parameter_name = "mine"

    def lookups(self, request, model_admin):
        return [("yes", "My action items"), ("open", "My open action items")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(owner=request.user)
        if self.value() == "open":
            return queryset.filter(owner=request.user, status__in=ActionItem.ACTIVE_STATUSES)
        return queryset


class ActionItemOwnerFilter(admin.SimpleListFilter):
    """Lists staff (not every distinct owner), and "nobody"."""

    title = "owner"
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        staff = get_user_model().objects.filter(is_staff=True, is_active=True).order_by("username")
        return [("none", "Nobody"), *((str(u.pk), u.get_username()) for u in staff)]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(owner__isnull=True)
        if self.value() and self.value().isdigit():
            return queryset.filter(owner_id=int(self.value()))
        return queryset


class ActionItemServiceFilter(ServiceFilter):
    """Items whose incident affects the service."""

    incident_column = "incident_id"


def _https_by_default(db_field, **kwargs):
    if isinstance(db_field, URLField):
        kwargs.setdefault("assume_scheme", "https")  # what Django 6 does; silences its warning
    return db_field.formfield(**kwargs)


class HttpsUrlFieldsMixin:
    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, URLField):
            kwargs.setdefault("assume_scheme", "https")
        return super().formfield_for_dbfield(db_field, request, **kwargs)


class ActionItemForm(forms.ModelForm):
    class Meta:
        formfield_callback = _https_by_default
        model = ActionItem
        fields = (
            "incident",
            "title",
            "description",
            "owner",
            "due_date",
            "priority",
            "kind",
            "status",
            "wont_do_reason",
            "tracker_url",
        )
        widgets = {
            "description": forms.Textarea(attrs={"rows": 4, "cols": 80}),
            "wont_do_reason": forms.Textarea(attrs={"rows": 2, "cols": 80}),
        }

    def clean(self):
        data = super().clean()
        if data.get("status") == ActionItem.Status.WONT_DO and not (data.get("wont_do_reason") or "").strip():
            self.add_error("wont_do_reason", "Say why this action item won't be done.")
        return data

    def _post_clean(self):
        super()._post_clean()
        if self.errors or self.instance.incident_id is None:
            return
        try:
            postmortem_services.action_item_validate(self.instance)
        except postmortem_services.ActionItemError as error:
            self.add_error(None, str(error))


class ActionItemInlineFormSet(forms.BaseInlineFormSet):
    """The review page's action items, saved through the services (actor set per request)."""

    actor = None

    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        if self.instance is not None and self.instance.pk is not None:
            form.instance.incident_id = self.instance.incident_id
        return form

    def save_new(self, form, commit=True):
        data = form.cleaned_data
        item = postmortem_services.action_item_create(
            incident=self.instance.incident,
            review=self.instance,
            actor=self.actor,
            **{name: data[name] for name in ActionItemInline.fields if name in data and name not in _STATUS_FIELDS},
        )
        if data.get("status", ActionItem.Status.OPEN) != ActionItem.Status.OPEN:
            item = postmortem_services.action_item_status_set(
                item=item, status=data["status"], actor=self.actor, reason=data.get("wont_do_reason", "")
            )
        return item

    def save_existing(self, form, obj, commit=True):
        data = form.cleaned_data
        fields = {name: data[name] for name in form.changed_data if name not in _STATUS_FIELDS}
        item = postmortem_services.action_item_update(item=obj, actor=self.actor, **fields) if fields else obj
        if set(form.changed_data) & set(_STATUS_FIELDS):
            item = postmortem_services.action_item_status_set(
                item=item, status=data["status"], actor=self.actor, reason=data.get("wont_do_reason", "")
            )
        return item

    def delete_existing(self, obj, commit=True):
        pass  # never deleted: mark it won't do with a reason

    def save_through_services(self, request):
        """Called by ReviewAdmin.save_formset: each row is saved by its service; refusals become messages."""
        self.actor = request.user
        for form in self.initial_forms + self.extra_forms:
            if not form.has_changed() or not hasattr(form, "cleaned_data"):
                continue
            try:
                if form.instance.pk is None:
                    self.save_new(form)
                else:
                    self.save_existing(form, form.instance)
            except postmortem_services.ActionItemError as error:
                messages.warning(request, f"“{form.cleaned_data.get('title', '')}” not saved: {error}")
        self.new_objects, self.changed_objects, self.deleted_objects = [], [], []


_STATUS_FIELDS = ("status", "wont_do_reason")


class ActionItemInline(HttpsUrlFieldsMixin, admin.TabularInline):
    """Action items on the review page (ReviewAdmin.inlines); edits go through the services."""

    model = ActionItem
    fk_name = "review"
    form = ActionItemForm
    formset = ActionItemInlineFormSet
    fields = ("title", "owner", "due_date", "priority", "kind", "status", "wont_do_reason", "tracker_url")
    autocomplete_fields = ("owner",)
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return _action_item_visible(super().get_queryset(request), request).select_related("owner")

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        return type(formset.__name__, (formset,), {"actor": request.user})


class ActionItemReminderInline(admin.TabularInline):
    """What was sent (or skipped, and why): read-only history."""

    model = ActionItemReminder
    fields = ("date", "kind", "status", "recipient", "sent_at", "skipped_reason", "attempts")
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    verbose_name_plural = "reminders sent"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class WontDoForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Recorded on each item and on its incident's timeline.",
    )


def _apply_status(modeladmin, request, queryset, status, reason=""):
    items = list(queryset.select_related("incident"))
    changed, refused = postmortem_services.action_item_bulk_status_set(
        items=items, status=status, actor=request.user, reason=reason
    )
    label = ActionItem.Status(status).label.lower()
    if changed:
        modeladmin.message_user(request, f"{len(changed)} action item(s) marked {label}.", messages.SUCCESS)
    unchanged = len(items) - len(changed) - len(refused)
    if unchanged:
        modeladmin.message_user(request, f"{unchanged} action item(s) were already {label}.", messages.INFO)
    for item, reason_refused in refused.items():
        modeladmin.message_user(request, f"“{item.title}” not changed: {reason_refused}", messages.WARNING)


@admin.action(description="Mark done (selected action items)", permissions=["change"])
def mark_done(modeladmin, request, queryset):
    _apply_status(modeladmin, request, queryset, ActionItem.Status.DONE)


@admin.action(description="Mark in progress (selected action items)", permissions=["change"])
def mark_in_progress(modeladmin, request, queryset):
    _apply_status(modeladmin, request, queryset, ActionItem.Status.IN_PROGRESS)


@admin.action(description="Reopen (selected action items)", permissions=["change"])
def mark_open(modeladmin, request, queryset):
    _apply_status(modeladmin, request, queryset, ActionItem.Status.OPEN)


@admin.action(description="Won't do, with a reason… (selected action items)", permissions=["change"])
def mark_wont_do(modeladmin, request, queryset):
    """Asks for the reason on an intermediate page, then applies it to every selected item."""
    form = WontDoForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        _apply_status(modeladmin, request, queryset, ActionItem.Status.WONT_DO, form.cleaned_data["reason"])
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Won't do: say why",
        "opts": modeladmin.model._meta,
        "items": queryset.select_related("incident", "owner"),
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "select_across": request.POST.get("select_across", "0"),
    }
    return TemplateResponse(request, "admin/postmortems/actionitem/wont_do.html", context)


@admin.register(ActionItem)
class ActionItemAdmin(HttpsUrlFieldsMixin, admin.ModelAdmin):
    form = ActionItemForm
    list_display = (
        "title",
        "incident_link",
        "owner",
        "status",
        "priority",
        "kind",
        "due",
        "completed_at",
    )
    list_filter = (
        ActionItemMineFilter,
        ActionItemDueFilter,
        "status",
        "priority",
        "kind",
        ActionItemOwnerFilter,
        ActionItemServiceFilter,
    )
    search_fields = ("title", "description", "incident__title")
    search_help_text = "Words from the title or description, the incident's title, or its reference (INC-1042)."
    list_select_related = ("incident", "owner")
    list_per_page = 50
    show_full_result_count = False
    autocomplete_fields = ("incident", "owner")
    actions = [mark_done, mark_in_progress, mark_open, mark_wont_do]
    inlines = [ActionItemReminderInline]
    readonly_fields = ("review_link", "completed_at", "created_by", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("incident", "review_link", "title", "description", "owner", "due_date")}),
        ("Triage", {"fields": ("priority", "kind", "tracker_url")}),
        ("Progress", {"fields": ("status", "wont_do_reason", "completed_at")}),
        ("Record", {"classes": ("collapse",), "fields": ("created_by", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return _action_item_visible(super().get_queryset(request), request)

    def has_change_permission(self, request, obj=None):
        # Its owner may update an item (mark it done, say) without the group's change permission.
        return super().has_change_permission(request, obj) or (obj is not None and obj.owner_id == request.user.pk)

    def get_readonly_fields(self, request, obj=None):
        # An item stays with the incident it was raised on.
        return (*self.readonly_fields, "incident") if obj is not None else self.readonly_fields

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "incident":
            kwargs["queryset"] = Incident.objects.visible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_search_results(self, request, queryset, search_term):
        match = INCIDENT_REFERENCE_RE.match(search_term.strip())
        if match:
            return queryset.filter(incident__number=int(match.group(1))), False
        return super().get_search_results(request, queryset, search_term)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request, obj=None):
        return False  # action items are history: mark them won't do, with a reason

    @admin.display(description="incident", ordering="incident__number")
    def incident_link(self, item):
        url = reverse("admin:incidents_incident_change", args=[item.incident_id])
        return format_html('<a href="{}">{}</a>', url, item.incident.reference)

    @admin.display(description="due", ordering="due_date")
    def due(self, item):
        if item.due_date is None:
            return "-"
        if item.is_overdue():
            return format_html('<strong style="color:#ba2121">{} (overdue)</strong>', item.due_date.isoformat())
        return item.due_date.isoformat()

    @admin.display(description="review")
    def review_link(self, item):
        if item.review_id is None:
            return "-"
        try:
            url = reverse("admin:postmortems_review_change", args=[item.review_id])
        except NoReverseMatch:
            return str(item.review_id)
        return format_html('<a href="{}">Review of {}</a>', url, item.incident.reference)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = postmortem_services.action_item_create(
                incident=data["incident"],
                actor=request.user,
                **{name: data[name] for name in postmortem_services.ACTION_ITEM_EDITABLE_FIELDS if name in data},
            )
            if data["status"] != ActionItem.Status.OPEN:
                postmortem_services.action_item_status_set(
                    item=created, status=data["status"], actor=request.user, reason=data["wont_do_reason"]
                )
            obj.pk = created.pk
            obj.refresh_from_db()
            obj._state.adding = False
            return
        fields = {
            name: data[name]
            for name in form.changed_data
            if name in postmortem_services.ACTION_ITEM_EDITABLE_FIELDS
        }
        if fields:
            postmortem_services.action_item_update(item=obj, actor=request.user, **fields)
        if set(form.changed_data) & set(_STATUS_FIELDS):
            postmortem_services.action_item_status_set(
                item=obj, status=data["status"], actor=request.user, reason=data["wont_do_reason"]
            )
        obj.refresh_from_db()


# The review page lists its action items (ReviewAdmin is defined in the reviews section above).
ReviewAdmin.inlines = [*(i for i in ReviewAdmin.inlines if i is not ActionItemInline), ActionItemInline]


@admin.register(ActionItemReminder)
class ActionItemReminderAdmin(admin.ModelAdmin):
    """The reminder log: what went out to whom, and what was skipped and why. Read-only."""

    list_display = ("date", "kind", "item", "status", "recipient", "sent_at", "skipped_reason")
    list_filter = ("status", "kind", "date")
    list_select_related = ("item",)
    show_full_result_count = False
    date_hierarchy = None

    def get_queryset(self, request):
        return visible_incident_rows(super().get_queryset(request), request.user, "item__incident")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# ---- On the incident page ----


def incident_follow_up(request, incident):
    """The incident page's review, action-item and similar-incident rows (see incident_panel_register)."""
    rows = []
    review = Review.objects.filter(incident=incident).first()
    if review is not None:
        url = reverse("admin:postmortems_review_change", args=[review.pk])
        rows.append(("Post-incident review", format_html('<a href="{}">{}</a>', url, review.get_status_display())))
    elif request.user.has_perm("postmortems.add_review"):
        url = reverse("admin:postmortems_review_add") + f"?incident={incident.pk}"
        required = " (required by its severity)" if incident.severity.review_required else ""
        rows.append(("Post-incident review", format_html('<a href="{}">Start the review</a>{}', url, required)))

    items = ActionItem.objects.filter(incident=incident)
    still_open = items.filter(status__in=(ActionItem.Status.OPEN, ActionItem.Status.IN_PROGRESS))
    counts = (items.count(), still_open.count(), still_open.filter(due_date__lt=timezone.localdate()).count())
    if counts[0] or request.user.has_perm("postmortems.add_actionitem"):
        listing = reverse("admin:postmortems_actionitem_changelist") + f"?incident__id__exact={incident.pk}"
        add = reverse("admin:postmortems_actionitem_add") + f"?incident={incident.pk}"
        rows.append(
            (
                "Action items",
                format_html(
                    '<a href="{}">{} in all, {} open, {} overdue</a> · <a href="{}">Add one</a>',
                    listing,
                    *counts,
                    add,
                ),
            )
        )

    similar = review_selectors.similar_incidents(incident, request.user, limit=5)
    if similar:
        links = format_html_join(
            ", ",
            '<a href="{}" title="{}">{}</a>',
            (
                (reverse("admin:incidents_incident_change", args=[s.incident.pk]), "; ".join(s.reasons), s.incident)
                for s in similar
            ),
        )
        rows.append(("Similar past incidents", links))
    _earlier, later = review_selectors.recurrence_links(incident, request.user)
    if later:
        links = format_html_join(
            ", ", '<a href="{}">{}</a>', ((reverse("admin:incidents_incident_change", args=[i.pk]), i) for i in later)
        )
        rows.append(("Recurred as", links))
    return rows


incident_panel_register(incident_follow_up)
