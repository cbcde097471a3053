"""The dashboard's customer-cost page (``/admin/incidents/dashboard/customers/``) and its CSV exports.

The same filters and visibility as the reliability dashboard (incidents.admin_dashboard): every
figure counts only the incidents the reader may see. Wired into the admin site like the dashboard."""

import csv

from django.contrib import admin
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from .admin_dashboard import DashboardFilterForm, _check_permission, _Echo, csv_safe
from .customer_cost import EXPORTS, customer_cost, export_rows


def _scope(request):
    form = DashboardFilterForm(request.GET or None)
    return form, (form.scope() if form.is_bound else DashboardFilterForm().scope())


def customer_cost_view(request):
    _check_permission(request)
    form, scope = _scope(request)
    cost = customer_cost(user=request.user, scope=scope)
    query = request.GET.urlencode()
    context = {
        **admin.site.each_context(request),
        "title": "What incidents cost customers",
        "form": form,
        "scope": scope,
        "cost": cost,
        "largest_bucket": max([b["incidents"] for b in cost["by_accounts_affected"]] + [1]),
        "export": {name: reverse("admin:incidents_customer_cost_export") + f"?{query}&figure={name}" for name in EXPORTS},
        "dashboard_url": reverse("admin:incidents_dashboard") + (f"?{query}" if query else ""),
    }
    return TemplateResponse(request, "admin/incidents/customer_cost.html", context)


def customer_cost_export_view(request):
    _check_permission(request)
    form, scope = _scope(request)
    if form.is_bound and not form.is_valid():
        return HttpResponseBadRequest("Invalid filters.", content_type="text/plain")
    figure = request.GET.get("figure", "incidents")
    if figure not in EXPORTS:
        return HttpResponseBadRequest(f"Unknown figure {figure!r}: one of {', '.join(EXPORTS)}.", content_type="text/plain")
    writer = csv.writer(_Echo())
    cost = customer_cost(user=request.user, scope=scope)
    rows = (writer.writerow([csv_safe(cell) for cell in row]) for row in export_rows(cost, figure))
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="customer-cost-{figure}-{timezone.localdate():%Y%m%d}.csv"'
    return response


def _with_customer_cost_urls(get_urls):
    def get_urls_with_customer_cost():
        site = admin.site
        return [
            path("incidents/dashboard/customers/", site.admin_view(customer_cost_view), name="incidents_customer_cost"),
            path(
                "incidents/dashboard/customers/export.csv",
                site.admin_view(customer_cost_export_view),
                name="incidents_customer_cost_export",
            ),
            *get_urls(),
        ]

    get_urls_with_customer_cost.customer_cost = True
    return get_urls_with_customer_cost


if not getattr(admin.site.get_urls, "customer_cost", False):
    admin.site.get_urls = _with_customer_cost_urls(admin.site.get_urls)
