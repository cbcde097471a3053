"""The admin home leads with what is open: counts by severity, how many need someone, the reader's
own open incidents and what other apps add (postmortems: the reader's overdue action items), with
links to the open list, the declare page and the reliability dashboard. The sidebar links the
dashboard too.

Wired into the default admin site by `install()` (IncidentsConfig.ready, after the dashboard module
set its index template): the index view gets this context, the app list gets the dashboard.
"""

import functools

from django.contrib import admin
from django.db.models import Count, Exists, OuterRef, Q
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.translation import get_language

from .admin_lists import needs, unacknowledged_late, update_overdue, with_update_due_from
from .models import Incident, RoleAssignment, Severity

PERMISSION = "incidents.view_incident"
MY_INCIDENTS_SHOWN = 10

# Other apps add a box to the home page without incidents importing them:
# home_section_register(section); section(request) returns None (nothing to show) or
# {"title", "rows": [(text, url, detail)], "count", "more_url", "empty"}.
_home_sections = []


def home_section_register(section):
    if section not in _home_sections:
        _home_sections.append(section)


def open_summary(request):
    """What is open for this reader: counts by severity (with links), the total, how many need someone,
    and their own open incidents (commander or another active role), worst first."""
    now = timezone.now()
    open_url = reverse("admin:incidents_openincident_changelist")
    visible_open = Incident.objects.visible_to(request.user).filter(status__in=Incident.OPEN_STATUSES)
    counts = dict(visible_open.order_by().values_list("severity").annotate(n=Count("id")))
    severities = list(Severity.objects.order_by("level"))
    needing = unacknowledged_late(now, severities) | update_overdue(now, severities) | Q(commander__isnull=True)
    mine = (
        with_update_due_from(visible_open)
        .filter(Exists(RoleAssignment.objects.filter(incident=OuterRef("pk"), user=request.user, relieved_at=None)))
        .select_related("severity")
        .order_by("severity__level", "detected_at", "id")
    )
    my_incidents = [(incident, needs(incident, now)) for incident in mine[: MY_INCIDENTS_SHOWN + 1]]
    return {
        "by_severity": [
            (severity, counts.get(severity.pk, 0), f"{open_url}?severity__id__exact={severity.pk}")
            for severity in severities
        ],
        "total": sum(counts.values()),
        "needing": with_update_due_from(visible_open).filter(needing).order_by().count(),
        "open_url": open_url,
        "needing_url": f"{open_url}?needs=any",
        "my_incidents": my_incidents[:MY_INCIDENTS_SHOWN],
        "my_incidents_more": len(my_incidents) > MY_INCIDENTS_SHOWN,
    }


def home_context(request):
    if not request.user.has_perm(PERMISSION):
        return {}
    sections = [section(request) for section in _home_sections]
    return {
        "open_now": open_summary(request),
        "home_sections": [section for section in sections if section is not None],
        "dashboard_url": reverse("admin:incidents_dashboard"),
        "declare_url": reverse("admin:incidents_incident_add")
        if request.user.has_perm("incidents.add_incident")
        else None,
    }


def _index_with_home(index):
    @functools.wraps(index)
    def index_with_home(request, extra_context=None):
        return index(request, {**home_context(request), **(extra_context or {})})

    index_with_home.home = True
    return index_with_home


APP_LIST_CACHE_SIZE = 256
_app_lists = {}


def app_list_key(request, app_label):
    """Everything the app list depends on: who (their permissions), the language, the URL prefix.

    Every ModelAdmin here answers has_*_permission(request) from the user's permissions alone.
    """
    user = request.user
    perms = None if user.is_superuser else frozenset(user.get_all_permissions())
    return user.pk, user.is_active, user.is_staff, perms, get_language(), get_script_prefix(), app_label


def _app_list_with_dashboard(get_app_list):
    """The dashboard as the first row of the Incidents app, on the home page and in the sidebar.

    The list is built once per set of permissions, not on every page: building it reverses two URLs
    per model, about a tenth of an incident list's time.
    """

    @functools.wraps(get_app_list)
    def get_app_list_with_dashboard(request, app_label=None):
        key = app_list_key(request, app_label)
        app_list = _app_lists.get(key)
        if app_list is None:
            app_list = _with_dashboard(request, get_app_list(request, app_label))
            if len(_app_lists) >= APP_LIST_CACHE_SIZE:
                _app_lists.clear()
            _app_lists[key] = app_list
        # Copies, so a caller that edits its list never changes the next reader's.
        return [{**app, "models": [dict(model) for model in app["models"]]} for app in app_list]

    get_app_list_with_dashboard.home = True
    return get_app_list_with_dashboard


def _with_dashboard(request, app_list):
    if request.user.has_perm(PERMISSION):
        for app in app_list:
            if app["app_label"] == "incidents":
                app["models"].insert(
                    0,
                    {
                        "name": "Reliability dashboard",
                        "object_name": "Dashboard",
                        "model_name": "dashboard",
                        "perms": {"view": True},
                        "admin_url": reverse("admin:incidents_dashboard"),
                        "add_url": None,
                        "view_only": True,
                    },
                )
    return app_list


def install(site=admin.site):
    if not getattr(site.index, "home", False):
        site.index = _index_with_home(site.index)
        site.get_app_list = _app_list_with_dashboard(site.get_app_list)
        site.index_template = "admin/incidents/home.html"
