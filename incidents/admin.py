import functools

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, OuterRef, Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from . import reference, services
from .admin_incident_page import IncidentPageMixin, _not_in_future
from .admin_incident_page import incident_panel_register as incident_panel_register  # comms, postmortems use it
from .admin_lists import (
    REFERENCE_RE,
    AcknowledgedFilter,
    CommanderFilter,
    LargeListMixin,
    LargeTablePaginator,
    MergeForm,
    NeedsFilter,
    OpenListColumns,
    OpenStatusFilter,
    SeverityFilter,
    apply_to_each,
    bounded_actions,
    dismiss_as_duplicate,
    page_number,
    severities_of,
    short_duration,
    with_update_due_from,
)
from .html_text import escape_text
from .models import (
    Incident,
    IncidentMember,
    OpenIncident,
    Service,
    ServiceGroup,
    Severity,
    links_hidden_from,
    visible_incident_rows,
)

Status = Incident.Status
# Paging, sorting and popup parameters of the admin list; any other parameter filters it.
LIST_PARAMS_THAT_DO_NOT_FILTER = {"p", "o", "e", "all", "_popup", "_to_field", "_facets", "_changelist_filters"}


# ---- list filters -------------------------------------------------------------------------------


class OpenFilter(admin.SimpleListFilter):
    title = "open or closed"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return [("yes", "Open"), ("no", "Not open")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status__in=Incident.OPEN_STATUSES)
        if self.value() == "no":
            return queryset.exclude(status__in=Incident.OPEN_STATUSES)
        return queryset


class ServiceFilter(admin.SimpleListFilter):
    """Filters with EXISTS, so a service filter never multiplies rows or needs DISTINCT.

    For rows that belong to an incident (reviews, action items), subclass it and name the column
    that holds the incident's id in `incident_column`.
    """

    title = "service"
    parameter_name = "service"
    incident_column = "pk"

    def lookups(self, request, model_admin):
        return reference.services.get()

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        links = Incident.services.through.objects.filter(
            incident_id=OuterRef(self.incident_column), service__slug=self.value()
        )
        return queryset.filter(Exists(links))


def _link_filters_guarded(queryset, request):
    """A filter on a link (?recurrence_of__id__exact=…) only matches links the person may see.

    Otherwise an outsider could tell a restricted incident's id from a non-existent one.
    """
    for field in ("recurrence_of", "duplicate_of"):
        if any(key == field or key.startswith(f"{field}__") for key in request.GET):
            queryset = visible_incident_rows(queryset, request.user, field)
    return queryset


# ---- inlines ------------------------------------------------------------------------------------


class MemberListForm(forms.ModelForm):
    remove = forms.BooleanField(required=False, help_text="Take this person off the incident.")

    class Meta:
        model = IncidentMember
        fields = ("remove",)


class MemberListInline(admin.TabularInline):
    """People added explicitly to a restricted incident (role holders can see it anyway)."""

    model = IncidentMember
    form = MemberListForm
    verbose_name_plural = "members (see a restricted incident without a role)"
    fields = ("user", "added_at", "added_by", "remove")
    readonly_fields = ("user", "added_at", "added_by")
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "added_by")

    def has_add_permission(self, request, obj=None):
        return False


class AddMemberForm(forms.ModelForm):
    class Meta:
        model = IncidentMember
        fields = ("user",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = self.fields["user"].queryset.filter(is_active=True, is_staff=True)

    def _post_clean(self):
        pass  # adding someone twice is a no-op in the service, not a form error


class AddMemberInline(admin.TabularInline):
    model = IncidentMember
    form = AddMemberForm
    verbose_name = "member"
    verbose_name_plural = "add a member"
    autocomplete_fields = ("user",)
    extra = 1
    max_num = 1
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).none()


# ---- the incident form --------------------------------------------------------------------------


class IncidentForm(forms.ModelForm):
    # The version the editor loaded; a save based on an older one is refused (no silent overwrite).
    loaded_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Incident
        fields = (
            "title",
            "summary",
            "severity",
            "services",
            "is_restricted",
            "started_at",
            "detected_at",
            "recurrence_of",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["loaded_version"].initial = self.instance.version

    def clean_detected_at(self):
        return _not_in_future(self.cleaned_data["detected_at"])

    def clean_recurrence_of(self):
        earlier = self.cleaned_data["recurrence_of"]
        linked = self.instance.recurrence_of_id
        if earlier is None and linked and not self.fields["recurrence_of"].queryset.filter(pk=linked).exists():
            # A link to an incident this editor may not see is not shown, so it cannot be removed here.
            return self.instance.recurrence_of
        if earlier is not None and earlier.pk == self.instance.pk:
            raise ValidationError("An incident cannot be a recurrence of itself.")
        return earlier

    def clean(self):
        cleaned = super().clean()
        detected_at = cleaned.get("detected_at")
        i = self.instance
        later = [t for t in (i.acknowledged_at, i.mitigated_at, i.resolved_at, i.closed_at) if t]
        if detected_at and later and detected_at > min(later):
            self.add_error("detected_at", "Detection cannot be later than the acknowledgement, mitigation or closing.")
        if self.instance.pk:
            # Locked until this save commits: nobody can slip a change in between check and write.
            current = Incident.objects.select_for_update().values_list("version", flat=True).get(pk=self.instance.pk)
            if cleaned.get("loaded_version") != current:
                raise ValidationError(
                    "Someone else changed this incident while you were editing it. Your changes were not "
                    "saved: open the incident again to see theirs, then reapply yours.",
                    code="stale",
                )
        return cleaned


class IncidentDeclareForm(IncidentForm):
    """The add page: the incident's details and who takes command (the declaring person by default)."""

    # Not "commander": that model field is set only by the role service.
    declare_commander = forms.ModelChoiceField(
        queryset=None,
        required=False,
        label="Commander",
        help_text="You take command unless you choose someone else (or leave it empty: nobody yet).",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from django.contrib.auth import get_user_model

        people = get_user_model().objects.filter(is_active=True, is_staff=True).order_by("username")
        self.fields["declare_commander"].queryset = people


# ---- incident admin -----------------------------------------------------------------------------

TRANSITION_ACTIONS = [
    (Status.TRIAGING, "Start triage"),
    (Status.RESPONDING, "Start responding"),
    (Status.MITIGATED, "Mark mitigated"),
    (Status.RESOLVED, "Mark resolved"),
    (Status.POSTMORTEM, "Start post-mortem"),
    (Status.CLOSED, "Close"),
    (Status.DISMISSED, "Dismiss (not an incident)"),
]


@functools.lru_cache(maxsize=256)
def severity_badge_html(colour, name, label):
    """A list row's severity badge: the same few for every row of a page, so each is written once."""
    return mark_safe(
        f'<span class="sev-badge" style="background:{escape_text(colour)};color:#fff;padding:1px 6px;'
        f'border-radius:3px;font-weight:bold" title="{escape_text(name)}">{escape_text(label)}</span>'
    )


def _transition_action(to, label):
    @admin.action(description=f"{label} (selected incidents)", permissions=["change"])
    def action(modeladmin, request, queryset):
        apply_to_each(
            modeladmin,
            request,
            queryset,
            lambda incident: services.incident_transition(incident=incident, to=to, actor=request.user),
        )

    action.__name__ = f"transition_to_{to}"
    return action


def _severity_action(severity):
    def action(modeladmin, request, queryset):
        apply_to_each(
            modeladmin,
            request,
            queryset,
            lambda incident: services.incident_severity_change(
                incident=incident, severity=severity, actor=request.user
            ),
        )

    action.__name__ = f"set_severity_{severity.level}"
    action.short_description = f"Set severity to {severity} (selected incidents)"
    return action


@admin.action(description="Acknowledge (selected incidents)", permissions=["change"])
def acknowledge(modeladmin, request, queryset):
    apply_to_each(
        modeladmin,
        request,
        queryset,
        lambda incident: services.incident_acknowledge(incident=incident, actor=request.user),
    )


def _reopen_one(incident, actor):
    if incident.status not in (Status.RESOLVED, Status.POSTMORTEM):
        raise services.IncidentError("only resolved incidents and those in post-mortem can be reopened.")
    services.incident_transition(incident=incident, to=Status.RESPONDING, actor=actor, note="Reopened")


@admin.action(description="Reopen (selected resolved incidents)", permissions=["change"])
def reopen(modeladmin, request, queryset):
    apply_to_each(modeladmin, request, queryset, lambda incident: _reopen_one(incident, request.user))


class DuplicateForm(MergeForm):
    """The incident page's Dismiss as duplicate: the list action's form, for one incident."""

    def __init__(self, *args, incident, user, **kwargs):
        self.incident = incident
        super().__init__(*args, user=user, **kwargs)

    def clean_original(self):
        original = super().clean_original()
        if original.pk == self.incident.pk:
            raise ValidationError("An incident cannot duplicate itself.")
        return original


@admin.register(Incident)
class IncidentAdmin(LargeListMixin, IncidentPageMixin, admin.ModelAdmin):
    form = IncidentForm
    change_form_template = "admin/incidents/incident/change_form.html"
    list_display = (
        "reference",
        "title",
        "severity_badge",
        "status",
        "service_list",
        "commander_link",
        "age",
        "last_update",
    )
    list_display_links = ("reference", "title")
    list_filter = (
        "status",
        SeverityFilter,
        ServiceFilter,
        CommanderFilter,
        OpenFilter,
        "is_restricted",
        "detected_at",
        "resolved_at",
    )
    search_fields = ("title", "summary")
    search_help_text = "Reference (INC-1042), or words from the title or summary."
    list_select_related = ("severity", "commander")
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice would scan 200,000 rows
    paginator = LargeTablePaginator
    autocomplete_fields = ("services", "recurrence_of")
    actions = [
        acknowledge,
        *(_transition_action(to, label) for to, label in TRANSITION_ACTIONS),
        dismiss_as_duplicate,
        reopen,
    ]
    # Roles, notes and the timeline live on the page itself (admin_incident_page); members stay in the form.
    inlines = [MemberListInline, AddMemberInline]
    readonly_fields = (
        "reference",
        "status",
        "acknowledged_at",
        "mitigated_at",
        "resolved_at",
        "closed_at",
        "duplicate_of_link",
        "commander",
        "created_at",
        "updated_at",
        "last_activity_at",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "reference",
                    "status",
                    "title",
                    "summary",
                    "severity",
                    "services",
                    "is_restricted",
                    "loaded_version",
                )
            },
        ),
        (
            "Timing",
            {
                "fields": (
                    "started_at",
                    "detected_at",
                    "acknowledged_at",
                    "mitigated_at",
                    "resolved_at",
                    "closed_at",
                )
            },
        ),
        ("Links", {"fields": ("recurrence_of", "duplicate_of_link")}),
        ("Record", {"classes": ("collapse",), "fields": ("commander", "created_at", "updated_at", "last_activity_at")}),
    )
    add_fieldsets = (
        (None, {"fields": ("title", "summary", "severity", "services", "declare_commander", "is_restricted")}),
        ("Timing", {"fields": ("started_at", "detected_at")}),
        ("Links", {"fields": ("recurrence_of",)}),
    )

    def get_queryset(self, request):
        # Everything on the incident pages (inlines, buttons, autocomplete) starts from here.
        queryset = super().get_queryset(request).visible_to(request.user).prefetch_related("services")
        return _link_filters_guarded(queryset, request)

    def get_object(self, request, object_id, from_field=None):
        incident = super().get_object(request, object_id, from_field)
        if incident is not None and incident.duplicate_of_id is not None:
            visible = Incident.objects.visible_to(request.user)
            incident.duplicate_of_visible = visible.filter(pk=incident.duplicate_of_id).exists()
        if incident is not None and incident.recurrence_of_id in links_hidden_from(request.user, [incident]):
            # Blank on the page (read-only field or form) for whoever may not see it; a save keeps it.
            incident.hidden_recurrence_of_id = incident.recurrence_of_id
            incident.recurrence_of = None
        return incident

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "recurrence_of":
            # Only incidents this person may see can be chosen, or shown as the current choice.
            kwargs["queryset"] = Incident.objects.visible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="duplicate of")
    def duplicate_of_link(self, incident):
        if incident.duplicate_of_id is None or not getattr(incident, "duplicate_of_visible", False):
            return "-"
        url = reverse("admin:incidents_incident_change", args=[incident.duplicate_of_id])
        return format_html('<a href="{}">{}</a>', url, incident.duplicate_of)

    def add_view(self, request, form_url="", extra_context=None):
        return super().add_view(request, form_url, {"title": "Declare an incident", **(extra_context or {})})

    def response_add(self, request, obj, post_url_continue=None):
        if "_addanother" in request.POST or IS_POPUP_VAR in request.POST:
            return super().response_add(request, obj, post_url_continue)
        # After declaring, the responder's next stop is the incident itself.
        self.message_user(request, f"{obj.reference} declared.", messages.SUCCESS)
        return self._back_to(obj)

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = IncidentDeclareForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is None:
            return fields
        if obj.is_restricted and not services.incident_restriction_may_lift(incident=obj, user=request.user):
            return [*fields, "is_restricted"]  # only the commander or the global permission may lift it
        return fields

    def get_changeform_initial_data(self, request):
        return {"declare_commander": request.user.pk, **super().get_changeform_initial_data(request)}

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        unfiltered = not set(request.GET) - LIST_PARAMS_THAT_DO_NOT_FILTER
        return self.paginator(
            queryset, per_page, orphans, allow_empty_first_page, unfiltered=unfiltered, page_number=page_number(request)
        )

    def get_search_results(self, request, queryset, search_term):
        match = REFERENCE_RE.match(search_term.strip())
        if match:
            return queryset.filter(number=int(match.group(1))), False
        return super().get_search_results(request, queryset, search_term)

    def has_delete_permission(self, request, obj=None):
        return False  # incidents are history: dismiss them instead

    def get_actions(self, request):
        # Django's list asks three times per request; the severities are read once.
        built = request.__dict__.setdefault("_incident_actions", {})
        if self not in built:
            built[self] = self._actions_with_severities(request)
        return built[self]

    def _actions_with_severities(self, request):
        actions = super().get_actions(request)
        if self.has_change_permission(request):
            # Severities are data, so their actions are made from the table on each request.
            for severity in severities_of(request):
                action = _severity_action(severity)
                actions[action.__name__] = (action, action.__name__, action.short_description)
        return bounded_actions(actions)

    # -- columns

    @admin.display(description="severity", ordering="severity__level")
    def severity_badge(self, incident):
        severity = incident.severity
        return severity_badge_html(severity.colour, severity.name, severity.label)

    @admin.display(description="age / duration")
    def age(self, incident):
        end = incident.resolved_at or incident.closed_at or timezone.now()
        return short_duration(end - incident.detected_at)

    @admin.display(description="last update", ordering="last_activity_at")
    def last_update(self, incident):
        return f"{short_duration(timezone.now() - incident.last_activity_at)} ago"

    # -- saving through the services

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = services.incident_declare_by_person(
                title=data["title"],
                summary=data["summary"],
                severity=data["severity"],
                person=request.user,
                services=data["services"],
                started_at=data["started_at"],
                detected_at=data["detected_at"],
                recurrence_of=data["recurrence_of"],
                restricted=data["is_restricted"],
                commander=data.get("declare_commander"),
            )
            obj.pk = created.pk
            obj.refresh_from_db()
            obj._state.adding = False
            return
        fields = {name: data[name] for name in services.EDITABLE_FIELDS}
        if fields["recurrence_of"] is None and getattr(obj, "hidden_recurrence_of_id", None):
            del fields["recurrence_of"]  # a link this person could not see stays as it is
        services.incident_update(
            incident=obj,
            actor=request.user,
            expected_version=data["loaded_version"],
            services=data["services"],
            **fields,
        )
        services.incident_severity_change(incident=obj, severity=data["severity"], actor=request.user)
        restricted = data.get("is_restricted", obj.is_restricted)  # read-only for those who may not lift it
        services.incident_restriction_set(incident=obj, restricted=restricted, actor=request.user)
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        # Services were saved by the service layer; inline rows go through it too.
        for formset in formsets:
            self.save_formset(request, form, formset, change)

    def save_formset(self, request, form, formset, change):
        incident = form.instance
        for inline_form in formset.forms:
            if not inline_form.has_changed() or not hasattr(inline_form, "cleaned_data"):
                continue
            data = inline_form.cleaned_data
            if isinstance(inline_form, MemberListForm) and data.get("remove"):
                for notice in services.incident_member_remove(member=inline_form.instance, actor=request.user):
                    self.message_user(request, notice, messages.WARNING)
            elif isinstance(inline_form, AddMemberForm) and data.get("user"):
                services.incident_member_add(incident=incident, user=data["user"], actor=request.user)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def construct_change_message(self, request, form, formsets, add=False):
        return "Changed through the incident services; see the timeline."

    # -- buttons on the incident page

    def duplicate_view(self, request, object_id):
        incident = self._incident_for_change(request, object_id)
        # The incident page's button posts only the note typed there: show the form with it filled in.
        submitted = request.POST if "original" in request.POST else None
        form = DuplicateForm(
            submitted, incident=incident, user=request.user, initial={"note": request.POST.get("note", "")}
        )
        if request.method == "POST" and form.is_valid():
            try:
                services.incident_merge(
                    duplicate=incident,
                    original=form.cleaned_data["original"],
                    actor=request.user,
                    note=form.cleaned_data["note"],
                )
            except services.IncidentError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request, f"{incident.reference} dismissed as a duplicate and merged into the original."
                )
                return self._back_to(incident)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Dismiss {incident.reference} as a duplicate",
            "opts": self.opts,
            "original": incident,
            "form": form,
        }
        return TemplateResponse(request, "admin/incidents/incident/duplicate.html", context)


@admin.register(OpenIncident)
class OpenIncidentAdmin(OpenListColumns, IncidentAdmin):
    """The 3 a.m. screen: what is open, worst first, then oldest, and which rows need someone."""

    change_list_template = "admin/incidents/openincident/change_list.html"
    list_display = (
        "reference",
        "title_and_services",
        "severity_and_status",
        "needs_someone",
        "commander_link",
        "open_for",
    )
    list_display_links = ("reference", "title_and_services")
    list_filter = (OpenStatusFilter, SeverityFilter, NeedsFilter, AcknowledgedFilter, ServiceFilter, CommanderFilter)
    ordering = ("severity__level", "detected_at", "id")

    def get_queryset(self, request):
        return with_update_due_from(super().get_queryset(request).filter(status__in=Incident.OPEN_STATUSES))

    def list_rows(self, queryset):
        return with_update_due_from(queryset)  # the "update overdue" flag

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        # Open incidents are a filtered few thousand: a true count, never the whole table's estimate.
        return self.paginator(queryset, per_page, orphans, allow_empty_first_page, page_number=page_number(request))

    def has_add_permission(self, request):
        return False  # declaring happens on the incident add page; the list links to it

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Open incidents", **(extra_context or {})})

    def get_urls(self):
        return admin.ModelAdmin.get_urls(self)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # One incident page for everyone: the open list links to the main one.
        return HttpResponseRedirect(reverse("admin:incidents_incident_change", args=[unquote(object_id)]))


# ---- reference data -----------------------------------------------------------------------------


@admin.register(Severity)
class SeverityAdmin(admin.ModelAdmin):
    list_display = ("label", "name", "ack_target_minutes", "update_interval_minutes", "review_required")
    ordering = ("level",)


@admin.register(ServiceGroup)
class ServiceGroupAdmin(admin.ModelAdmin):
    list_display = ("name", "position", "service_names")
    search_fields = ("name",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("services")

    @admin.display(description="services")
    def service_names(self, group):
        return format_html_join(", ", "{}", ((s.name,) for s in group.services.all()))


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "group", "owning_team", "contact", "is_public", "open_incidents")
    list_filter = ("is_public", "group", "owning_team")
    list_select_related = ("group",)
    search_fields = ("name", "slug", "description", "owning_team")
    prepopulated_fields = {"slug": ("name",)}
    ordering = ("name",)  # explicit: an aggregate query drops the model's default ordering

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(open_count=Count("incidents", filter=Q(incidents__status__in=Incident.OPEN_STATUSES)))
        )

    @admin.display(description="open incidents", ordering="open_count")
    def open_incidents(self, service):
        return service.open_count
