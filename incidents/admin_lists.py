"""The incident lists of the admin: paging big tables, bounded list actions, the open-incidents view's
"needs someone" flags and filters, and the merge ("dismiss as duplicate") list action.

Imported by incidents.admin (never the other way round), so the list parts live apart from the
incident page.
"""

import functools
import re
from collections import defaultdict
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.safestring import SafeString

from . import reference, services
from .admin_widgets import PlainHiddenInput, PlainSelect
from .html_text import escape_text
from .models import Incident, Severity

Status = Incident.Status
REFERENCE_RE = re.compile(r"^(?:INC-?)?(\d+)$", re.IGNORECASE)


# ---- paging -------------------------------------------------------------------------------------


class LargeTablePaginator(Paginator):
    """Never counts a whole big table, and still pages to the end of a filtered one.

    Unfiltered by the person: PostgreSQL's estimate of the table ("about 200,000"). Filtered: a true
    count of up to COUNT_CAP rows beyond the start of the page asked for; when there are more, the
    count is a lower bound ("more than 10,050") that moves along as the person pages on, so every
    page stays reachable however long the list.
    """

    COUNT_CAP = 10_000

    def __init__(self, *args, unfiltered=False, page_number=1, **kwargs):
        # Unfiltered by the person (the visibility rule may still apply): the table's size will do.
        self.unfiltered = unfiltered
        self.page_number = max(page_number, 1)
        self.estimated = self.lower_bound = False
        super().__init__(*args, **kwargs)

    @cached_property
    def count(self):
        query = self.object_list.query
        if connection.vendor == "postgresql" and (self.unfiltered or not query.where):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [query.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > self.COUNT_CAP:
                self.estimated = True
                return row[0]
        offset = (self.page_number - 1) * self.per_page
        # values("pk"): annotations the filters do not use (the open list's last update) stay out of the count.
        rows = self.object_list.order_by().values("pk")
        counted = rows[offset : offset + self.COUNT_CAP + 1].count()
        if counted > self.COUNT_CAP:
            self.lower_bound = True
        elif counted == 0 and offset:
            # Past the end: count from the start so the admin can say the page does not exist.
            return rows[: self.COUNT_CAP + 1].count()
        return offset + counted

    @property
    def count_label(self):
        """The count as people should read it: "4,146", "about 200,000" or "more than 10,050"."""
        if self.estimated:
            return f"about {self.count:,}"
        if self.lower_bound:
            return f"more than {self.count - 1:,}"
        return f"{self.count:,}"


MAX_PAGE = 1_000_000  # beyond any real list; keeps the counting OFFSET a number the database accepts


def page_number(request):
    try:
        return min(max(int(request.GET.get("p", 1)), 1), MAX_PAGE)
    except ValueError:
        return 1


# What the incident lists read of each row: the rest of an incident (its summary, public texts, a
# dozen timestamps) is left in the database, and of its commander only the name is read.
LIST_ROW_FIELDS = (
    "number",
    "title",
    "status",
    "detected_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "last_activity_at",
    "severity_id",
    "commander_id",
)


PK_PLACEHOLDER = "0pk0"


def with_severities(rows):
    """Each row's severity from the process copy (incidents.reference), not a joined model per row;
    one that is not in it yet (made in another process moments ago) is read."""
    by_id = {severity.pk: severity for severity in reference.severities.get()}
    missing = {row.severity_id for row in rows} - by_id.keys()
    if missing:
        by_id.update((severity.pk, severity) for severity in Severity.objects.filter(pk__in=missing))
    for row in rows:
        row.severity = by_id[row.severity_id]
    return rows


class IncidentChangeList(ChangeList):
    """The rows of a page read only the columns shown, and their services' names in one query (a
    prefetch builds a manager and a queryset per row); rows link to the incident page (also from the
    open list) without a reverse() per row."""

    def get_results(self, request):
        super().get_results(request)
        # The page's ids first, then those rows, in one query: sorting the ids can be done from an index
        # alone, where sorting whole rows reads every matching row (the 4,146 open incidents for 50 shown).
        # The page's query has already applied the filters and the visibility rule: the rows query only
        # names the ids it chose (compiling those conditions twice was a tenth of the request).
        page = self.result_list
        username = F(f"commander__{get_user_model().USERNAME_FIELD}")
        rows = self.model._default_manager.only(*LIST_ROW_FIELDS).annotate(commander_name=username)
        rows = self.model_admin.list_rows(rows).filter(pk__in=page.values("pk")).order_by(*page.query.order_by)
        rows = with_severities(list(rows))
        names = defaultdict(list)
        links = Incident.services.through.objects.filter(incident_id__in=[row.pk for row in rows])
        for incident_id, name in links.order_by("service__name").values_list("incident_id", "service__name"):
            names[incident_id].append(name)
        # The commander column links to this list, with its other filters kept, narrowed to that person.
        commander_query = self.get_query_string({"commander": PK_PLACEHOLDER}, [PAGE_VAR])
        for row in rows:
            row.service_names = names[row.pk]
            row.commander_query = commander_query
        self.result_list = rows

    def url_for_result(self, result):
        if not hasattr(self, "_change_url"):
            self._change_url = reverse("admin:incidents_incident_change", args=[0]).replace("/0/", "/{}/")
        return self._change_url.format(result.pk)


class ActionForm(helpers.ActionForm):
    action = forms.ChoiceField(label=helpers.ActionForm.base_fields["action"].label, widget=PlainSelect)
    select_across = forms.BooleanField(
        label="", required=False, initial=0, widget=PlainHiddenInput({"class": "select-across"})
    )


class RenderedMedia:
    """A Media's tags worked out once, for templates that print {{ media }}, {{ media.js }} or {{ media.css }}
    (Django merges and renders the lists again on each of those)."""

    def __init__(self, media):
        self.js = SafeString(media["js"].render())
        self.css = SafeString(media["css"].render())
        self.all = SafeString(media.render())

    def __html__(self):
        return self.all

    __str__ = __html__


class LargeListMixin:
    """List parts of a ModelAdmin over a big table that cost per row."""

    action_form = ActionForm

    def get_changelist(self, request, **kwargs):
        return IncidentChangeList

    def list_rows(self, queryset):
        """What the columns read beyond the row's own fields (annotations), for the page's rows."""
        return queryset

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"media": self.list_media(), **(extra_context or {})})

    def list_media(self):
        """The list's script and style tags, the same on every request: written once per admin."""
        if "_list_media" not in self.__dict__:
            self._list_media = RenderedMedia(self.media + self.action_form().media)
        return self._list_media

    @admin.display(description="services")
    def service_list(self, incident):
        return ", ".join(incident.service_names)

    @admin.display(description="commander", ordering="commander__username")
    def commander_link(self, incident):
        """The commander's name, linking to this list filtered to what they command."""
        if incident.commander_id is None:
            return "—"
        name = escape_text(incident.commander_name)
        href = escape_text(incident.commander_query.replace(PK_PLACEHOLDER, str(incident.commander_id)))
        return SafeString(
            f'<a href="{href}" title="Only incidents {name} commands" style="white-space:nowrap">{name}</a>'
        )

    def action_checkbox(self, obj):
        # Django renders a form widget template per row (about 1 ms each); the same markup directly.
        return SafeString(
            f'<input type="checkbox" name="{helpers.ACTION_CHECKBOX_NAME}" value="{obj.pk}" class="action-select" '
            f'aria-label="Select this object for an action - {escape_text(obj)}">'
        )


# ---- list actions -------------------------------------------------------------------------------


def apply_to_each(modeladmin, request, queryset, change):
    """Run one service call per selected incident; report what changed and why the rest did not."""
    done, rejected = [], []
    for incident in queryset:
        try:
            change(incident)
            done.append(incident.reference)
        except services.IncidentError as exc:
            rejected.append((incident.reference, str(exc)))
    if done:
        modeladmin.message_user(request, f"Updated {len(done)}: {', '.join(done)}.", messages.SUCCESS)
    for incident_reference, reason in rejected:
        modeladmin.message_user(request, f"{incident_reference} not changed: {reason}", messages.WARNING)


def _bounded(action):
    """The action, refusing to run over more incidents than INCIDENT_LIST_ACTION_MAX (one LIMITed count)."""

    @functools.wraps(action)
    def bounded(modeladmin, request, queryset):
        limit = settings.INCIDENT_LIST_ACTION_MAX
        if queryset.order_by()[: limit + 1].count() > limit:
            modeladmin.message_user(
                request,
                f"Nothing was changed: this action applies to at most {limit:,} incidents at once, and more "
                "are selected. Narrow the list with filters or a search, or select fewer rows.",
                messages.ERROR,
            )
            return None
        return action(modeladmin, request, queryset)

    return bounded


def bounded_actions(actions):
    """ModelAdmin.get_actions() output with every action bounded."""
    return {name: (_bounded(func), name, description) for name, (func, name, description) in actions.items()}


class MergeForm(forms.Form):
    original = forms.CharField(label="Duplicate of", help_text="Reference of the original incident, e.g. INC-1042.")
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def __init__(self, *args, user, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_original(self):
        match = REFERENCE_RE.match(self.cleaned_data["original"].strip())
        # Only incidents this person may see: a restricted one is "no incident", as everywhere else.
        visible = Incident.objects.visible_to(self.user)
        original = visible.filter(number=int(match.group(1))).first() if match else None
        if original is None:
            raise ValidationError("No incident has this reference.")
        return original


@admin.action(description="Dismiss as duplicate of… (selected incidents)", permissions=["change"])
def dismiss_as_duplicate(modeladmin, request, queryset):
    """Asks for the original, then merges each selected incident into it (incident_merge)."""
    form = MergeForm(request.POST if "apply" in request.POST else None, user=request.user)
    if form.is_valid():
        original, note = form.cleaned_data["original"], form.cleaned_data["note"]
        apply_to_each(
            modeladmin,
            request,
            queryset.exclude(pk=original.pk),
            lambda incident: services.incident_merge(
                duplicate=incident, original=original, actor=request.user, note=note
            ),
        )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Dismiss as duplicates",
        "opts": modeladmin.opts,
        "form": form,
        "incidents": queryset[:100],
        "selected_count": queryset.count(),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action": "dismiss_as_duplicate",
    }
    return TemplateResponse(request, "admin/incidents/incident/merge_selected.html", context)


# ---- the open-incidents view ------------------------------------------------------------------

# Another app (comms) says when each incident last had a published update, as an expression on
# incidents, without incidents importing it: last_update_source_register(lambda: Subquery(...)).
_last_update_sources = []


def last_update_source_register(source):
    if source not in _last_update_sources:
        _last_update_sources.append(source)
        _update_due_from.cache_clear()


@functools.cache
def _update_due_from():
    # Built once: annotate() resolves a copy of an expression, never the expression itself.
    last = _last_update_sources[0]() if _last_update_sources else Value(None, output_field=DateTimeField())
    return Coalesce(last, "detected_at")


def with_update_due_from(queryset):
    """Annotate `update_due_from`: the last published update's time, or the detection time without one."""
    return queryset.annotate(update_due_from=_update_due_from())


def _per_severity(now, minutes_field, condition, severities=None):
    """OR over the severities (a handful of rows) of condition(cutoff): portable date arithmetic."""
    q = Q(pk__in=[])
    for severity in Severity.objects.all() if severities is None else severities:
        q |= Q(severity=severity) & condition(now - timedelta(minutes=getattr(severity, minutes_field)))
    return q


def unacknowledged_late(now, severities=None):
    """Open incidents not acknowledged within their severity's target."""

    def late(cutoff):
        return Q(acknowledged_at__isnull=True, detected_at__lt=cutoff)

    return _per_severity(now, "ack_target_minutes", late, severities)


def update_overdue(now, severities=None):
    """Incidents whose next update is overdue (needs the with_update_due_from annotation)."""
    if not _last_update_sources:
        return Q(pk__in=[])
    return _per_severity(now, "update_interval_minutes", lambda cutoff: Q(update_due_from__lt=cutoff), severities)


def short_duration(delta):
    """12 min, 19 h, 3 d: read at a glance in a narrow column."""
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def needs(incident, now=None):
    """Why an open incident needs someone: [(kind, text)], worst first (empty when all is well)."""
    now = now or timezone.now()
    severity, flags = incident.severity, []
    if incident.acknowledged_at is None:
        waiting = now - incident.detected_at
        if waiting > timedelta(minutes=severity.ack_target_minutes):
            target = f"{severity.ack_target_minutes} min"
            flags.append(("unacknowledged", f"unacknowledged {short_duration(waiting)} (target {target})"))
    due_from = getattr(incident, "update_due_from", None)
    if _last_update_sources and due_from is not None:
        due = due_from + timedelta(minutes=severity.update_interval_minutes)
        if due < now:
            flags.append(("update", f"update overdue {short_duration(now - due)}"))
    if incident.commander_id is None:
        flags.append(("commander", "no commander"))
    return flags


STATUS_LABELS = dict(Status.choices)


class OpenListColumns:
    """Columns of the open-incidents list, narrow enough for 1440 px with the sidebar and the filters.

    Written with f-strings and escape_text(): format_html's escaping of every argument is most of a cell's cost.
    """

    @admin.display(description="needs someone")
    def needs_someone(self, incident):
        flags = needs(incident)
        if not flags:
            return "—"
        return SafeString(
            " ".join(f'<span class="needs needs-{kind}">{escape_text(text)}</span>' for kind, text in flags)
        )

    @admin.display(description="title / services", ordering="title")
    def title_and_services(self, incident):
        names = ", ".join(incident.service_names)
        if not names:
            return incident.title
        return SafeString(f'{escape_text(incident.title)}<div class="services">{escape_text(names)}</div>')

    @admin.display(description="severity / status", ordering="severity__level")
    def severity_and_status(self, incident):
        return SafeString(f'{self.severity_badge(incident)}<div class="status">{STATUS_LABELS[incident.status]}</div>')

    @admin.display(description="open for", ordering="detected_at")
    def open_for(self, incident):
        """How long it has been open, and how long since its timeline last moved."""
        now = timezone.now()
        opened, quiet = short_duration(now - incident.detected_at), short_duration(now - incident.last_activity_at)
        return SafeString(f'{opened}<div class="quiet">quiet {quiet}</div>')


def database_id(value):
    """A filter's value as a row id, or None for anything else (text, a number no column holds)."""
    if value and value.isascii() and value.isdigit() and int(value) < 2**31:
        return int(value)
    return None


def severities_of(request):
    """The severities the severity filter, the needs filter and the per-severity actions list (incidents.reference)."""
    return reference.severities.get()


class SeverityFilter(admin.SimpleListFilter):
    """Django's filter for the severity link, with the severities the actions read too."""

    title = "severity"
    parameter_name = "severity__id__exact"

    def lookups(self, request, model_admin):
        return [(str(severity.pk), str(severity)) for severity in severities_of(request)]

    def queryset(self, request, queryset):
        if database_id(self.value()) is not None:
            return queryset.filter(severity_id=database_id(self.value()))
        return queryset


class OpenStatusFilter(admin.SimpleListFilter):
    """Status, offering only the open ones."""

    title = "status"
    parameter_name = "status__exact"

    def lookups(self, request, model_admin):
        return [(s, Status(s).label) for s in Incident.OPEN_STATUSES]

    def queryset(self, request, queryset):
        if self.value() in Incident.OPEN_STATUSES:
            return queryset.filter(status=self.value())
        return queryset


class NeedsFilter(admin.SimpleListFilter):
    title = "needs someone"
    parameter_name = "needs"

    def lookups(self, request, model_admin):
        choices = [("any", "Anything below"), ("unacknowledged", "Unacknowledged past target")]
        if _last_update_sources:
            choices.append(("update", "Update overdue"))
        return [*choices, ("commander", "No commander"), ("none", "Nothing (in hand)")]

    def queryset(self, request, queryset):
        if self.value() not in ("unacknowledged", "update", "commander", "any", "none"):
            return queryset  # unfiltered: no need to read the severities' targets
        now = timezone.now()
        severities = severities_of(request)
        conditions = {
            "unacknowledged": unacknowledged_late(now, severities),
            "update": update_overdue(now, severities),
            "commander": Q(commander__isnull=True),
        }
        if self.value() in conditions:
            return queryset.filter(conditions[self.value()])
        any_flag = conditions["unacknowledged"] | conditions["update"] | conditions["commander"]
        if self.value() == "any":
            return queryset.filter(any_flag)
        return queryset.exclude(any_flag)


class CommanderFilter(admin.SimpleListFilter):
    """Nobody, me, or the person picked by clicking a name in the commander column.

    Listing every staff member costs a query, a model per person and a link each (121 in the
    benchmark, thousands in a big company) on every page; the column links do the same job.
    """

    title = "commander"
    parameter_name = "commander"

    def lookups(self, request, model_admin):
        choices = [("none", "Nobody"), (str(request.user.pk), "Me")]
        picked = database_id(self.value())
        if picked is not None and picked != request.user.pk:
            User = get_user_model()
            username = User.objects.filter(pk=picked).values_list(User.USERNAME_FIELD, flat=True).first()
            if username is not None:
                choices.append((str(picked), username))
        return choices

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(commander__isnull=True)
        if database_id(self.value()) is not None:
            return queryset.filter(commander_id=database_id(self.value()))
        return queryset


class AcknowledgedFilter(admin.SimpleListFilter):
    title = "acknowledged"
    parameter_name = "acknowledged"

    def lookups(self, request, model_admin):
        return [("yes", "Acknowledged"), ("no", "Not yet")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(acknowledged_at__isnull=self.value() == "no")
        return queryset
