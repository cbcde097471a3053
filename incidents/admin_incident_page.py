"""The incident page as a command center: header, actions, note composer, panels, timeline, live updates.

`IncidentAdmin` (admin.py) mixes `IncidentPageMixin` in. The page is the admin's change page with
the stock edit form kept below, folded away as "Edit details"; everything a responder does during an
incident is a small POST view here that calls one service and comes back to the page:

- a note is appended to the timeline (never refused because someone else changed the incident; the
  version check is for field edits only),
- lifecycle steps, *Acknowledge* and *Take command* carry the note typed in the composer with them;
  Close and Dismiss ask for confirmation first (a page that still holds the note),
- roles are given and ended from the roles panel.

The timeline is read in pages of TIMELINE_PAGE_SIZE rows, newest first, so the page's query count does
not depend on how long it is. `live/` answers the page's poller (static/incidents/incident_page.js)
with the header, the actions and the timeline rows recorded since the last poll.
"""

from datetime import timedelta
from types import SimpleNamespace

from django import forms
from django.contrib import messages
from django.contrib.admin.options import IS_POPUP_VAR, TO_FIELD_VAR
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Max, Q, Subquery, Window
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import linebreaksbr
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dates import MONTHS_3
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext as _

from . import services
from .admin_widgets import PlainAutocompleteSelect, PlainSelect
from .models import Alert, Incident, RoleAssignment, TimelineEvent, references_hidden_from, references_redacted

Status = Incident.Status
Kind = TimelineEvent.Kind

TIMELINE_PAGE_SIZE = 50
LIVE_MAX_EVENTS = 100  # a poll that finds more asks the reader to reload instead
LIVE_POLL_SECONDS = 5
# A GET with either is a popup or a related-object lookup: Django's change view serves it.
_STOCK_FORM_PARAMS = {IS_POPUP_VAR, TO_FIELD_VAR}

# The timeline's filters: ?kind=<key> shows these kinds only.
KIND_FILTERS = {
    "notes": ("Notes", (Kind.NOTE,)),
    "status": (
        "Status and severity",
        (
            Kind.DECLARED,
            Kind.STATUS_CHANGED,
            Kind.ACKNOWLEDGED,
            Kind.SEVERITY_CHANGED,
            Kind.FIELDS_CHANGED,
            Kind.RESTRICTION_CHANGED,
            Kind.MERGED,
        ),
    ),
    "roles": ("Roles", (Kind.ROLE_ASSIGNED, Kind.ROLE_RELIEVED, Kind.MEMBER_ADDED, Kind.MEMBER_REMOVED)),
    "alerts": ("Alerts", (Kind.ALERT,)),
    "comms": ("Communications", (Kind.UPDATE_PUBLISHED,)),
    "customers": ("Customer reports", (Kind.CUSTOMER_REPORT,)),
    "follow_up": ("Review and action items", (Kind.REVIEW, Kind.ACTION_ITEM)),
}
GROUP_OF_KIND = {kind: key for key, (_label, kinds) in KIND_FILTERS.items() for kind in kinds}
KIND_LABELS = {kind: escape(label) for kind, label in TimelineEvent.Kind.choices}

# Forward steps in the order they are offered; the destructive ones are listed apart and confirmed.
FORWARD_STEPS = [
    (Status.TRIAGING, "Start triage"),
    (Status.RESPONDING, "Start responding"),
    (Status.MITIGATED, "Mark mitigated"),
    (Status.RESOLVED, "Mark resolved"),
    (Status.POSTMORTEM, "Start post-mortem"),
]
CONFIRM_FIRST = {  # verb, what it becomes, what that means
    Status.CLOSED: ("Close", "closed", "Nothing more happens to it: it can no longer be reopened."),
    Status.DISMISSED: (
        "Dismiss",
        "dismissed",
        "It was not an incident: it leaves every list of open work (undo with Start triage).",
    ),
}

# Rows that other apps add through incident_panel_register, by label, go into these panels;
# rows with any other label go into "Follow-up".
PANEL_OF_LABEL = {
    "Customer impact": "impact",
    "Updates": "comms",
    "Direct outreach": "comms",
    "Slack": "comms",
    "Post-incident review": "review",
    "Action items": "review",
}

# Other apps show what they hold about an incident (its review, action items, updates) on its page
# without incidents importing them: they register a panel when their admin module loads.
_incident_panels = []


def incident_panel_register(panel):
    """panel(request, incident) returns [(label, html)] rows for the incident page's panels."""
    if panel not in _incident_panels:
        _incident_panels.append(panel)


# ---- reading the timeline -----------------------------------------------------------------------


def describe_event(event, hidden_references=()):
    """One readable line for a timeline row, leaving out references to incidents the reader may not see."""
    data = references_redacted(event.data or {}, hidden_references)
    if event.kind == Kind.STATUS_CHANGED:
        text = f"{data.get('from')} → {data.get('to')}"
        if data.get("reopened"):
            text += " (reopened)"
        if data.get("duplicate_of"):
            text += f", duplicate of {data['duplicate_of']}"
    elif event.kind == Kind.SEVERITY_CHANGED:
        text = f"SEV{data.get('from')} → SEV{data.get('to')}"
    elif event.kind in (Kind.ROLE_ASSIGNED, Kind.ROLE_RELIEVED):
        role = (
            RoleAssignment.Role(data["role"]).label
            if data.get("role") in RoleAssignment.Role.values
            else data.get("role")
        )
        text = f"{role}: {data.get('from') or '—'} → {data.get('to') or '—'}"
    elif event.kind == Kind.RESTRICTION_CHANGED:
        text = "restricted to its participants" if data.get("to") else "restriction lifted"
    elif event.kind in (Kind.MEMBER_ADDED, Kind.MEMBER_REMOVED):
        text = data.get("user") or ""
    elif event.kind == Kind.FIELDS_CHANGED:
        text = "; ".join(f"{name}: {before!r} → {after!r}" for name, (before, after) in data.items())
    else:
        text = ""
    return " — ".join(part for part in (text, event.body) if part)


def _timeline_rows(events, user):
    """The timeline's rows as HTML, for the page and the live view; one query at most for the references
    the reader may not see."""
    hidden = references_hidden_from(user, events)
    return [_timeline_row_html(event, describe_event(event, hidden)) for event in events]


def _timeline_row_html(event, text):
    """One row, built here rather than by a template included 50 times a page (the include, its variable
    lookups and the date filters were the largest part of rendering the page)."""
    local = timezone.localtime(event.occurred_at)
    # An f-string with escape() where the text comes from people: format_html escapes every argument.
    body = f'<div class="tl-text">{linebreaksbr(text, autoescape=True)}</div>' if text else ""
    actor = escape(event.actor.get_username()) if event.actor else "system"
    return mark_safe(
        f'<li class="tl-row tl-{GROUP_OF_KIND.get(event.kind, "other")}" data-event-id="{event.pk}">\n'
        f'  <div class="tl-meta"><time datetime="{local.isoformat()}">'  # as the date filter's "c"
        f"{MONTHS_3[local.month].title()} {local.day}, {local:%H:%M}</time> "  # as the date filter's "M j, H:i"
        f'<span class="tl-kind">{KIND_LABELS.get(event.kind, event.kind)}</span> <span class="tl-actor">{actor}</span>'
        f"</div>\n  {body}\n</li>\n"
    )


def _timeline_events(incident, kind):
    events = TimelineEvent.objects.filter(incident=incident).select_related("actor").order_by("-occurred_at", "-id")
    if kind in KIND_FILTERS:
        events = events.filter(kind__in=KIND_FILTERS[kind][1])
    return events


def timeline_page(incident, user, kind="", number=1):
    """(page, rows, last event id): one page of the timeline, newest first; two queries whatever its length.

    The paginator's count and the newest event's id (where the live poller starts) come from one query.
    """
    shown = Q(kind__in=KIND_FILTERS[kind][1]) if kind in KIND_FILTERS else Q()
    totals = TimelineEvent.objects.filter(incident=incident).aggregate(count=Count("id", filter=shown), last=Max("id"))
    paginator = Paginator(_timeline_events(incident, kind), TIMELINE_PAGE_SIZE)
    paginator.count = totals["count"]  # a cached_property: set, it is not counted again
    page = paginator.get_page(number)
    return page, _timeline_rows(list(page.object_list), user), totals["last"] or 0


# ---- the header ---------------------------------------------------------------------------------


def _minutes(delta):
    return max(0, int(delta.total_seconds() // 60))


def _published_updates(incident):
    """The latest published update and the latest public one, read from the timeline (comms records them)."""
    published = TimelineEvent.objects.filter(incident=incident, kind=Kind.UPDATE_PUBLISHED).order_by(
        "-occurred_at", "-id"
    )
    public = published.filter(data__audience="external")
    # One query: the latest update of any audience, carrying the latest public one's time and text.
    latest = (
        published.annotate(
            public_at=Subquery(public.values("occurred_at")[:1]),
            public_body=Subquery(public.values("body")[:1]),
        )
        .only("occurred_at")
        .first()
    )
    if latest is None or latest.public_at is None:
        return latest, None
    return latest, SimpleNamespace(occurred_at=latest.public_at, body=latest.public_body)


def header_facts(incident, now=None):
    """What the header says: age, acknowledgement against its target, the next update, the last public one."""
    now = now or timezone.now()
    severity = incident.severity
    end = incident.resolved_at or incident.closed_at
    facts = {
        "age": timesince(incident.detected_at, end or now),
        "age_label": "lasted" if end else "open for",
        "ack_text": "",
        "ack_state": "",
        "next_update_text": "",
        "next_update_state": "",
    }
    if incident.acknowledged_at is not None:
        facts["ack_state"] = "ok"
        facts["ack_text"] = f"acknowledged after {timesince(incident.detected_at, incident.acknowledged_at)}"
    elif incident.is_open:
        waited = _minutes(now - incident.detected_at)
        late = waited > severity.ack_target_minutes
        facts["ack_state"] = "late" if late else "waiting"
        facts["ack_text"] = (
            f"unacknowledged for {timesince(incident.detected_at, now)} — target {severity.ack_target_minutes} min"
        )
    latest, public = _published_updates(incident)
    facts["last_public_update"] = public
    if incident.is_open:
        # The same rule as comms' incident_next_update_due: from the last published update, or detection.
        due = (latest.occurred_at if latest else incident.detected_at) + timedelta(
            minutes=severity.update_interval_minutes
        )
        when = timezone.localtime(due).strftime("%H:%M")
        if due >= now:
            facts["next_update_state"] = "ok"
            facts["next_update_text"] = f"next update due in {timeuntil(due, now)} (by {when})"
        else:
            facts["next_update_state"] = "late"
            facts["next_update_text"] = f"update overdue by {timesince(due, now)} (was due {when})"
    return facts


# ---- forms --------------------------------------------------------------------------------------


def _not_in_future(value):
    if value is not None and value > timezone.now() + services.CLOCK_SKEW:
        raise ValidationError("This time is in the future.")
    return value


class NoteForm(forms.Form):
    """The composer at the top of the page; its note also travels with the action buttons."""

    note = forms.CharField(
        required=False,
        label="Note",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "What happened, what you are trying, what you found…"}),
    )
    occurred_at = forms.DateTimeField(
        required=False,
        label="It happened at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Leave empty for now; set it to write up something that happened earlier.",
    )

    def clean_occurred_at(self):
        return _not_in_future(self.cleaned_data["occurred_at"])

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("occurred_at") and not (cleaned.get("note") or "").strip():
            self.add_error("note", "Write the note to date it.")
        return cleaned


class AssignRoleForm(forms.Form):
    role = forms.ChoiceField(choices=RoleAssignment.Role.choices, widget=PlainSelect)
    user = forms.ModelChoiceField(queryset=None, label="Person")

    def __init__(self, *args, admin_site, **kwargs):
        super().__init__(*args, **kwargs)
        field = RoleAssignment._meta.get_field("user")
        # The admin's autocomplete: searches people as you type, for anyone who may run incidents.
        self.fields["user"].widget = PlainAutocompleteSelect(
            field, admin_site, attrs={"data-placeholder": "Find a person"}
        )
        self.fields["user"].queryset = field.related_model.objects.filter(is_active=True, is_staff=True)


# ---- the page and its views ---------------------------------------------------------------------


class IncidentPageMixin:
    """The incident page's extra context, URLs and POST views, for IncidentAdmin."""

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        views = [
            ("transition", self.transition_view),
            ("acknowledge", self.acknowledge_view),
            ("take-command", self.take_command_view),
            ("note", self.note_view),
            ("role", self.role_assign_view),
            ("relieve", self.role_relieve_view),
            ("live", self.live_view),
            ("panels", self.panels_view),
            ("duplicate", self.duplicate_view),
        ]
        return [
            *(
                path(
                    f"<path:object_id>/{name}/",
                    self.admin_site.admin_view(view),
                    name=f"{prefix}_{name.replace('-', '_')}",
                )
                for name, view in views
            ),
            *super().get_urls(),
        ]

    # -- helpers

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if getattr(request, "incident_page", False):
            return queryset.select_related("severity", "commander")  # the header shows both
        return queryset

    def _incident_for_change(self, request, object_id):
        incident = get_object_or_404(self.get_queryset(request), pk=unquote(object_id))
        if not self.has_change_permission(request, incident):
            raise PermissionDenied
        return incident

    def _back_to(self, incident):
        return HttpResponseRedirect(reverse("admin:incidents_incident_change", args=[incident.pk]))

    def _run(self, request, incident, change, done):
        """Call a service; report its refusal as a message on the page, not an error page."""
        try:
            result = change()
        except services.IncidentError as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            self.message_user(request, done(result), messages.SUCCESS)
        return self._back_to(incident)

    @staticmethod
    def _note(request):
        return request.POST.get("note", "").strip()

    # -- POST views

    def transition_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        incident = self._incident_for_change(request, object_id)
        to = request.POST.get("to", "")
        if to not in Status.values:
            self.message_user(request, f"Unknown status {to!r}.", messages.ERROR)
            return self._back_to(incident)
        allowed = to in Incident.TRANSITIONS[incident.status]
        if allowed and to in CONFIRM_FIRST and request.POST.get("confirmed") != "yes":
            return self._confirm_page(request, incident, to)
        return self._run(
            request,
            incident,
            lambda: services.incident_transition(
                incident=incident, to=to, actor=request.user, note=self._note(request)
            ),
            lambda moved: f"{moved.reference} is now {moved.get_status_display().lower()}.",
        )

    def _confirm_page(self, request, incident, to):
        verb, past, consequence = CONFIRM_FIRST[to]
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb} {incident.reference}?",
            "opts": self.opts,
            "original": incident,
            "to": to,
            "verb": verb,
            "past": past,
            "consequence": consequence,
            "note": request.POST.get("note", ""),
        }
        return TemplateResponse(request, "admin/incidents/incident/confirm_transition.html", context)

    def _step(self, request, object_id, change, done):
        """A one-button step: POST only, on an incident this person may change."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        incident = self._incident_for_change(request, object_id)
        return self._run(request, incident, lambda: change(incident), lambda result: done(incident, result))

    def acknowledge_view(self, request, object_id):
        return self._step(
            request,
            object_id,
            lambda incident: services.incident_acknowledge(
                incident=incident, actor=request.user, note=self._note(request)
            ),
            lambda incident, _: f"{incident.reference} acknowledged.",
        )

    def take_command_view(self, request, object_id):
        return self._step(
            request,
            object_id,
            lambda incident: services.incident_take_command(
                incident=incident, actor=request.user, note=self._note(request)
            ),
            lambda incident, _: f"You are now the commander of {incident.reference}.",
        )

    def note_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        incident = self._incident_for_change(request, object_id)
        form = NoteForm(request.POST)
        if form.is_valid() and form.cleaned_data["note"].strip():
            # Append-only: no version check, so a note is never refused because the incident moved on.
            return self._run(
                request,
                incident,
                lambda: services.timeline_note_add(
                    incident=incident,
                    actor=request.user,
                    body=form.cleaned_data["note"],
                    occurred_at=form.cleaned_data["occurred_at"],
                ),
                lambda _: "Note added to the timeline.",
            )
        if form.is_valid():
            form.add_error("note", "Write something to add a note.")
        # The page again, with what was typed still in the composer.
        request.method = "GET"
        page_url = reverse("admin:incidents_incident_change", args=[incident.pk])
        return self.change_view(request, object_id, form_url=page_url, extra_context={"note_form": form})

    def role_assign_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        incident = self._incident_for_change(request, object_id)
        form = AssignRoleForm(request.POST, admin_site=self.admin_site)
        if not form.is_valid():
            problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
            self.message_user(request, f"No role given ({problems}).", messages.ERROR)
            return self._back_to(incident)
        role, user = form.cleaned_data["role"], form.cleaned_data["user"]
        return self._run(
            request,
            incident,
            lambda: services.role_assign(incident=incident, role=role, user=user, actor=request.user),
            lambda assignment: f"{assignment.user.get_username()} is now {assignment.get_role_display().lower()}.",
        )

    def role_relieve_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        incident = self._incident_for_change(request, object_id)
        assignment_id = request.POST.get("assignment", "")
        assignment = (
            RoleAssignment.objects.filter(incident=incident, pk=assignment_id).first()
            if assignment_id.isdigit()
            else None
        )
        if assignment is None:
            self.message_user(request, "No such role on this incident.", messages.ERROR)
            return self._back_to(incident)
        return self._run(
            request,
            incident,
            lambda: services.role_relieve(assignment=assignment, actor=request.user),
            lambda ended: f"{ended.user.get_username()} is no longer {ended.get_role_display().lower()}.",
        )

    # -- live updates

    def _incident_for_view(self, request, object_id):
        incident = self.get_queryset(request).filter(pk=unquote(object_id)).select_related("severity", "commander")
        incident = incident.first()
        if incident is None or not self.has_view_permission(request, incident):
            raise Http404
        return incident

    def panels_view(self, request, object_id):
        """The other apps' panels (impact, communications, review): fetched by the page once it is shown.

        Some of them search the whole history (similar incidents), so the page itself does not wait for them.
        """
        incident = self._incident_for_view(request, object_id)
        context = {"original": incident, "facts": header_facts(incident), "panels": self._panels(request, incident)}
        return TemplateResponse(request, "admin/incidents/incident/_follow_up_panels.html", context)

    def live_view(self, request, object_id):
        """JSON for the page's poller: the header and actions now, and timeline rows recorded since `since`."""
        incident = self._incident_for_view(request, object_id)
        try:
            since = int(request.GET.get("since", "0"))
        except ValueError:
            return JsonResponse({"error": "since must be a timeline event id"}, status=400)
        kind = request.GET.get("kind", "")
        newer = list(_timeline_events(incident, kind).filter(pk__gt=since)[: LIVE_MAX_EVENTS + 1])
        context = self._page_context(request, incident)
        rows = _timeline_rows(newer[:LIVE_MAX_EVENTS], request.user)
        return JsonResponse(
            {
                "version": incident.version,
                "status": incident.status,
                "last_event_id": max(_latest_event_id(incident), since),
                "more": len(newer) > LIVE_MAX_EVENTS,
                "header": render_to_string("admin/incidents/incident/_header.html", context, request),
                "actions": render_to_string("admin/incidents/incident/_actions.html", context, request),
                "events": rows,
            }
        )

    # -- the page

    def _page_context(self, request, incident):
        """What the header and the actions need; shared by the page and the live view."""
        can_change = self.has_change_permission(request, incident)
        allowed = Incident.TRANSITIONS[incident.status]
        reopen = incident.status in (Status.RESOLVED, Status.POSTMORTEM)
        steps = [(to, label) for to, label in FORWARD_STEPS if to in allowed]
        if Status.RESPONDING in allowed and incident.status in (Status.MITIGATED, Status.RESOLVED, Status.POSTMORTEM):
            steps = [
                (to, "Reopen" if reopen else "Back to responding") if to == Status.RESPONDING else (to, label)
                for to, label in steps
            ]
        if Status.TRIAGING in allowed and incident.status == Status.DISMISSED:
            steps = [(Status.TRIAGING, "Undo dismissal: start triage")]
        return {
            "original": incident,
            "severity": incident.severity,
            "facts": header_facts(incident),
            "can_change": can_change,
            "can_acknowledge": can_change and incident.acknowledged_at is None and incident.is_open,
            "can_take_command": can_change and incident.is_open and incident.commander_id != request.user.pk,
            "steps": steps if can_change else [],
            "destructive": [(to, CONFIRM_FIRST[to][0]) for to in (Status.CLOSED, Status.DISMISSED) if to in allowed]
            if can_change
            else [],
            "can_dismiss_duplicate": can_change and Status.DISMISSED in allowed,
            "live_poll_seconds": LIVE_POLL_SECONDS,
        }

    def _panels(self, request, incident):
        """Rows from the other apps' panels, sorted into this page's panels by their label."""
        panels = {"impact": [], "comms": [], "review": [], "follow_up": []}
        for panel in _incident_panels:
            for label, html in panel(request, incident) or ():
                panels[PANEL_OF_LABEL.get(label, "follow_up")].append((label, html))
        return panels

    def _alerts(self, incident):
        # The five latest alerts and the counts over all of them in one query (window counts).
        latest = list(
            Alert.objects.filter(incident=incident)
            .annotate(
                total=Window(Count("id")),
                firing=Window(Count("id", filter=Q(status=Alert.Status.FIRING))),
            )
            .order_by("-starts_at", "-id")[:5]
        )
        if not latest:
            return {"total": 0, "firing": 0, "latest": []}
        return {"total": latest[0].total, "firing": latest[0].firing, "latest": latest}

    def _command_center(self, request, obj, context):
        """The page's own context (header, actions, composer, timeline, panels), added to `context`."""
        kind = request.GET.get("kind", "")
        kind = kind if kind in KIND_FILTERS else ""
        page, rows, last_event_id = timeline_page(obj, request.user, kind, request.GET.get("tl"))
        roles = list(obj.role_assignments.select_related("user", "assigned_by").order_by("-assigned_at", "-id"))
        role_form = AssignRoleForm(admin_site=self.admin_site)
        context.update(
            self._page_context(request, obj),
            note_form=context.get("note_form") or NoteForm(),
            timeline=rows,
            timeline_page=page,
            timeline_kind=kind,
            kind_filters=[(key, label) for key, (label, _kinds) in KIND_FILTERS.items()],
            active_roles=[r for r in roles if r.relieved_at is None],
            past_roles=[r for r in roles if r.relieved_at is not None],
            role_form=role_form,
            alerts=self._alerts(obj),
            last_event_id=last_event_id,
        )
        context["media"] = context["media"] + role_form.media
        # The page is a work surface: it uses the whole width (and skips rendering the model list).
        context["is_nav_sidebar_enabled"] = False
        # The stock edit form is shown when asked for (?edit=1), or again with what was typed after a
        # refused save.
        context["show_edit_form"] = request.method == "POST" or bool(request.GET.get("edit"))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and change:
            self._command_center(request, obj, context)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET" and not request.GET.get("edit") and not request.GET.keys() & _STOCK_FORM_PARAMS:
            return self._page_view(request, object_id, form_url, extra_context)
        return super().change_view(request, object_id, form_url, extra_context)

    def _page_view(self, request, object_id, form_url, extra_context):
        """The page without the stock edit form: a plain GET builds no ModelForm, formsets or inlines.

        Building them (and the admin's app list for a sidebar the page hides) was most of the page's
        time; ?edit=1 and a POST go through Django's change view as before.
        """
        request.incident_page = True
        obj = self.get_object(request, unquote(object_id))
        if not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        can_change = self.has_change_permission(request, obj)
        context = {
            **self._site_context(request),
            "title": (_("Change %s") if can_change else _("View %s")) % self.opts.verbose_name,
            "subtitle": str(obj),
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            # No edit form, so none of the admin's form scripts: the role picker adds its own (jQuery, select2).
            "media": forms.Media(),
            "preserved_filters": self.get_preserved_filters(request),
            "add": False,
            "change": True,
            "has_view_permission": True,
            "has_add_permission": self.has_add_permission(request),
            "has_change_permission": can_change,
            "has_delete_permission": self.has_delete_permission(request, obj),
            "form_url": form_url,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            **(extra_context or {}),
        }
        self._command_center(request, obj, context)
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_form_template, context)

    def _site_context(self, request):
        """AdminSite.each_context without its app list: only the navigation sidebar shows it, and the
        page hides that sidebar (the list checks permissions and reverses a URL for every model)."""
        site = self.admin_site
        script_name = request.META["SCRIPT_NAME"]
        return {
            "site_title": site.site_title,
            "site_header": site.site_header,
            "site_url": script_name if site.site_url == "/" and script_name else site.site_url,
            "has_permission": site.has_permission(request),
            "available_apps": [],
            "is_popup": False,
            "is_nav_sidebar_enabled": False,
            "log_entries": site.get_log_entries(request),
        }


def _latest_event_id(incident):
    return TimelineEvent.objects.filter(incident=incident).order_by("-id").values_list("id", flat=True).first() or 0
