"""The admin home leads with what is open (issue 15, "Admin home"): counts by severity, the reader's own
incidents and overdue action items, links to the open list and the dashboard; the sidebar links the
dashboard too; its query count does not grow with the number of incidents."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from incidents import services
from incidents.models import Incident
from tests.incidents.factories import SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

HOME = reverse("admin:index")
DASHBOARD = reverse("admin:incidents_dashboard")


def test_home_counts_open_incidents_by_severity(admin_client, admin_user):
    sev1, sev3 = SeverityFactory(level=1), SeverityFactory(level=3)
    declare("Checkout down", severity=sev1)
    declare("Search slow", severity=sev3)
    declare("Search stale", severity=sev3)
    services.incident_transition(incident=declare("Old", severity=sev1), to="resolved", actor=admin_user)
    open_now = admin_client.get(HOME).context["open_now"]
    counts = {severity.level: n for severity, n, _ in open_now["by_severity"]}
    assert open_now["total"] == 3 and counts[1] == 1 and counts[3] == 2
    page = admin_client.get(HOME).content.decode()
    assert page.index('id="open-now"') < page.index("app-auth")  # leads the page, above the apps
    assert f"?severity__id__exact={sev1.pk}" in page and "?needs=any" in page


def test_home_lists_my_open_incidents_and_my_overdue_action_items(client, responder):
    from postmortems.models import ActionItem

    mine = declare("Mine", actor=responder)
    services.role_assign(incident=mine, role="technical_lead", user=responder, actor=responder)
    declare("Not mine")
    done = declare("Mine but resolved")
    services.role_assign(incident=done, role="commander", user=responder, actor=responder)
    services.incident_transition(incident=done, to="resolved", actor=responder)
    yesterday = timezone.localdate() - timedelta(days=1)
    ActionItem.objects.create(incident=done, title="Add a disk alert", owner=responder, due_date=yesterday)
    ActionItem.objects.create(incident=done, title="Due later", owner=responder, due_date=yesterday + timedelta(days=9))
    client.force_login(responder)
    response = client.get(HOME)
    assert [incident.title for incident, _ in response.context["open_now"]["my_incidents"]] == ["Mine"]
    (section,) = response.context["home_sections"]
    assert [row[0] for row in section["rows"]] == ["Add a disk alert"]
    page = response.content.decode()
    assert "My overdue action items" in page and "Due later" not in page


def test_home_and_sidebar_link_the_dashboard(admin_client):
    declare("Open")
    home = admin_client.get(HOME).content.decode()
    assert home.count(f'href="{DASHBOARD}"') >= 2  # the open-now box and the Incidents app row
    sidebar = admin_client.get(reverse("admin:incidents_openincident_changelist")).content.decode()
    nav = sidebar[sidebar.index('id="nav-sidebar"') :]
    assert f'href="{DASHBOARD}"' in nav


def test_home_counts_only_what_the_reader_may_see(client, responder, admin_user):
    secret = declare("Token leak", restricted=True)
    services.role_assign(incident=secret, role="commander", user=admin_user, actor=admin_user)
    declare("Public")
    client.force_login(responder)
    assert client.get(HOME).context["open_now"]["total"] == 1


def test_viewer_without_incident_access_gets_the_plain_home(client):
    nobody = UserFactory(username="nobody")  # staff, no permissions
    client.force_login(nobody)
    response = client.get(HOME)
    assert response.status_code == 200 and "open_now" not in response.context


def test_home_runs_the_same_queries_with_1_and_100_open_incidents(client):
    root = UserFactory(username="root", is_superuser=True)
    client.force_login(root)
    sev1 = SeverityFactory(level=1)

    def queries():
        client.get(HOME)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(HOME).status_code == 200
        return len(ctx.captured_queries)

    def add(n):
        for i in range(n):
            incident = declare(f"Incident {i}", severity=sev1)
            services.role_assign(incident=incident, role="commander", user=root, actor=root)

    add(1)
    at_one = queries()
    add(99)
    assert queries() == at_one
    assert Incident.objects.count() == 100


def test_the_app_list_follows_a_change_of_permissions(client, responder):
    """The app list is kept per set of permissions: a new permission shows at once, on the next page."""
    from django.contrib.auth.models import Permission

    users = reverse("admin:auth_user_changelist")
    client.force_login(responder)
    assert users not in client.get(HOME).content.decode()
    responder.user_permissions.add(Permission.objects.get(codename="view_user"))
    assert users in client.get(HOME).content.decode()
    assert users in client.get(reverse("admin:incidents_incident_changelist")).content.decode()  # the sidebar
    responder.user_permissions.clear()
    assert users not in client.get(HOME).content.decode()
