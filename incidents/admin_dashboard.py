"""The reliability dashboard: an admin page (``/admin/incidents/dashboard/``) and its CSV export.

Wired into the default admin site when the app is ready (``IncidentsConfig.ready`` imports this
module): two URLs are put in front of the site's own, and the admin index gets a link to the page.
Anyone who may view incidents may open it; every figure counts only the incidents they may see.
"""

import csv
import re
from datetime import timedelta
from urllib.parse import quote_plus, urlencode

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.template.defaultfilters import floatformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from . import charts, rollups
from .dashboard import (
    DEFAULT_PERIOD,
    EXPORT_DURATIONS,
    HOT_SPOT_COLUMNS,
    IMPACT_DEFINITION,
    MISSING_REASONS,
    PERIOD_DAYS,
    Scope,
    UnknownFigure,
    dashboard_data,
    export_queryset,
    figure_incidents,
    period_change,
)
from .html_text import escape_unless_safe
from .models import Service, Severity

PERMISSION = "incidents.view_incident"
MAX_CUSTOM_DAYS = 3660


def _attributes(attrs):
    """attrs.html of django/forms/widgets, in Python."""
    return format_html_join(
        "",
        "{}",
        (
            (format_html(' {}="{}"', name, value) if value is not True else format_html(" {}", name),)
            for name, value in attrs.items()
            if value is not False
        ),
    )


class QuickSelect(forms.Select):
    """forms.Select drawn in Python: the same markup as its templates (select.html, select_option.html), without
    a template include per option (the service picker has one per service). No option groups."""

    def render(self, name, value, attrs=None, renderer=None):
        widget = self.get_context(name, value, attrs)["widget"]
        options = format_html_join(
            "",
            '\n  <option value="{}"{}>{}</option>\n',
            (
                (str(option["value"]), _attributes(option["attrs"]), option["label"])
                for _group, group_options, _index in widget["optgroups"]
                for option in group_options
            ),
        )
        return format_html('<select name="{}"{}>{}\n</select>', widget["name"], _attributes(widget["attrs"]), options)


class QuickDateInput(forms.DateInput):
    """forms.DateInput drawn in Python: the same markup as its templates (input.html, attrs.html)."""

    def render(self, name, value, attrs=None, renderer=None):
        widget = self.get_context(name, value, attrs)["widget"]
        shown = "" if widget["value"] is None else format_html(' value="{}"', str(widget["value"]))
        return format_html(
            '<input type="{}" name="{}"{}{}>', widget["type"], widget["name"], shown, _attributes(widget["attrs"])
        )


def filter_fields_html(form):
    """The filter form's fields as the template's loop wrote them ({{ field.label_tag }} {{ field }} and the
    errors), in Python: the label's and the date inputs' templates were a tenth of the page's rendering. Only
    for this form: no required fields, labels without their own punctuation."""
    parts = []
    for field in form:
        label = field.label
        if form.label_suffix and label and label[-1] not in ":?.!":
            label = format_html("{}{}", label, form.label_suffix)
        label_tag = format_html('<label for="{}">{}</label>', field.id_for_label, label)
        parts.append(format_html("\n    <div>{} {}{}</div>\n  ", label_tag, field, field.errors or ""))
    return mark_safe("".join(parts))


class DashboardFilterForm(forms.Form):
    period = forms.ChoiceField(
        choices=[
            ("30", "Last 30 days"),
            ("90", "Last 90 days"),
            ("365", "Last 365 days"),
            ("custom", "Custom dates"),
        ],
        required=False,
        widget=QuickSelect,
    )
    since = forms.DateField(required=False, label="From", widget=QuickDateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=QuickDateInput(attrs={"type": "date"}))
    service = forms.ModelChoiceField(
        Service.objects.order_by("name"),
        to_field_name="slug",
        required=False,
        empty_label="All services",
        widget=QuickSelect,
    )
    severity = forms.ModelChoiceField(
        Severity.objects.order_by("level"),
        to_field_name="level",
        required=False,
        empty_label="All severities",
        widget=QuickSelect,
    )

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since or until:
            data["period"] = "custom"  # dates given: they win over a preset
        if data.get("period") == "custom":
            if not since or not until:
                raise forms.ValidationError("Custom dates need both a start and an end date.")
            if since > until:
                raise forms.ValidationError("The start date must not be after the end date.")
            if (until - since).days > MAX_CUSTOM_DAYS:
                raise forms.ValidationError("Choose a period of at most ten years.")
        return data

    def scope(self, now=None):
        """The scope these filters describe (the default, last 90 days, when they are invalid)."""
        now = now or timezone.now()
        data = self.cleaned_data if self.is_valid() else {}
        service, severity = data.get("service"), data.get("severity")
        if data.get("period") == "custom":
            return Scope.between(data["since"], data["until"], service=service, severity=severity, now=now)
        days = PERIOD_DAYS[data.get("period") or DEFAULT_PERIOD]
        return Scope.last(days, service=service, severity=severity, now=now)


def _with_choices(form, severities, services):
    """Give the form's service and severity pickers their options as lists (already read, in name and level
    order), so that drawing them runs no query instead of a server-side cursor each; the same options."""
    for name, objects in (("service", services), ("severity", severities)):
        field = form.fields[name]
        field.choices = [("", field.empty_label), *((getattr(o, field.to_field_name), str(o)) for o in objects)]


def _check_permission(request):
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied


def export_url(scope, figure):
    # Hundreds of links a page: the scope's part of the query string is encoded once per scope.
    base = getattr(scope, "_export_base", None)
    if base is None:
        base = scope._export_base = reverse("admin:incidents_dashboard_export") + "?" + urlencode(scope.params())
    return base + "&figure=" + quote_plus(figure)  # what urlencode writes, without its generality


# ---- metric cards --------------------------------------------------------------------------------


def human_duration(seconds):
    """12 s, 14 min, 3.5 h, 2.1 d — a duration read at a glance (None: "–")."""
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _plural(n, word):
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def change_text(change, kind):
    """ "+12% on the period before" in words a reader takes in at a glance ("" when not comparable)."""
    if change is None or change.get("change") is None:
        return ""
    ratio = change["change"]
    if abs(ratio) < 0.005:
        return "same as the period before"
    previous = change["previous"]
    shown = (
        human_duration(previous)
        if kind == "duration"
        else (
            f"{100 * previous:.1f}%" if kind == "rate" else f"{previous:g}" if isinstance(previous, float) else previous
        )
    )
    return f"{'+' if ratio > 0 else '−'}{abs(ratio) * 100:.0f}% on the period before ({shown})"


def summary_lines(results, changes, scope):
    """The figures in plain words, most asked-for first, then why some incidents are not measured."""
    total = results["incidents"]["count"]
    days = round((scope.until - scope.since).total_seconds() / 86400)
    before = changes.get("incidents", {}).get("previous")
    line = f"{_plural(total, 'incident')} detected in these {days} days"
    if before is not None:
        if before == total:
            line += f", as many as in the {days} days before"
        else:
            direction = "more" if total > before else "fewer"
            line += f", {abs(total - before):,} {direction} than in the {days} days before ({before:,})"
    lines = [line + "."]
    mtta, mttr, mttd = results["mtta"], results["mttr"], results["mttd"]
    if mtta["count"]:
        text = (
            f"Half were acknowledged within {human_duration(mtta['median'])} of detection, nine in ten within "
            f"{human_duration(mtta['p90'])}"
        )
        split = [
            f"{label} {human_duration(results[key]['median'])}"
            for key, label in (("mtta_alert", "from alerts"), ("mtta_person", "declared by a person"))
            if results.get(key, {}).get("count")
        ]
        lines.append(text + (f" (median {', '.join(split)})." if split else "."))
    if mttr["count"]:
        reopen = results["reopen_rate"]
        lines.append(
            f"Half were resolved within {human_duration(mttr['median'])} of detection (first resolution); "
            f"{reopen['count']:,} of {total:,} reopened afterwards."
        )
    if mttd["count"]:
        lines.append(f"Impact was noticed {human_duration(mttd['median'])} after it began (median).")
    missing = [
        f"{_plural(results[key]['missing'], 'incident')} {reason}."
        for key, reason in MISSING_REASONS.items()
        if key in results and results[key]["missing"] and key not in ("mtta_alert", "mtta_person")
    ]
    return lines, missing


def metric_cards(results, scope, changes=None):
    """One card per metric of metrics_compute: headline, detail lines, definition, change, export link."""
    cards = []
    for key, metric in results.items():
        kind = metric.get("kind")
        card = {
            "change": change_text((changes or {}).get(key), kind),
            "missing_reason": MISSING_REASONS.get(key, "") if metric.get("missing") else "",
            "key": key,
            "name": metric.get("name", key),
            "definition": metric.get("definition", ""),
            "export": export_url(scope, f"metric:{key}"),
            "stats": [],
        }
        if kind == "duration":
            card["headline"] = human_duration(metric.get("mean"))
            card["headline_label"] = "mean"
            card["stats"] = [
                ("median", human_duration(metric.get("median"))),
                ("p90", human_duration(metric.get("p90"))),
                ("measured", metric.get("count")),
                ("missing", metric.get("missing")),
            ]
        elif kind == "rate":
            rate = metric.get("rate")
            card["headline"] = "–" if rate is None else f"{100 * rate:.1f}%"
            card["stats"] = [("count", metric.get("count")), ("of", metric.get("total"))]
        elif kind == "series":
            card["headline"] = "–" if metric.get("mean") is None else f"{metric['mean']:g}"
            card["headline_label"] = "mean"
            card["stats"] = [("total", metric.get("total")), ("buckets", len(metric.get("series") or ()))]
        elif kind == "distribution":
            continue  # drawn as the severity mix chart
        else:
            value = metric.get("value", metric.get("count"))
            if isinstance(value, float):
                value = f"{value:g}"
            card["headline"] = "–" if value is None else value
            for name in ("mean", "median", "p90", "missing", "total"):
                if metric.get(name) is not None:
                    card["stats"].append((name, metric[name]))
        card["unit"] = "" if kind == "duration" else metric.get("unit", "")
        cards.append(card)
    return cards


def _text(value):
    """What ``{{ value }}`` writes in a template: the value localized, escaped unless already safe."""
    if type(value) is str or (type(value) is int and not settings.USE_THOUSAND_SEPARATOR):
        return escape_unless_safe(value)  # what localize gives back for them: the text, the digits
    return escape_unless_safe(localize(value))


def cards_html(cards):
    """The metric cards' markup, as the template's loop wrote it (the same bytes), in Python: its variable
    lookups and filters were most of the page's rendering."""
    parts = []
    for card in cards:
        definition = _text(card["definition"])
        headline = _text(card["headline"])
        if card.get("headline_label"):
            headline += f" <small>{_text(card['headline_label'])}</small>"
        if card.get("unit"):
            headline += f" <small>{_text(card['unit'])}</small>"
        stats = ""
        if card["stats"]:
            stats = "".join(
                f"<dt>{_text(label)}</dt><dd>{'–' if value is None else _text(value)}</dd>"
                for label, value in card["stats"]
            )
            stats = f"<dl>{stats}</dl>"
        change = f'<p class="change">{_text(card["change"])}</p>' if card["change"] else ""
        missing = ""
        if card["missing_reason"]:
            missing = f'<p class="missing">Missing: incidents that {_text(card["missing_reason"])}.</p>'
        parts.append(
            f'\n  <article class="dash-card" id="metric-{_text(card["key"])}" title="{definition}">\n'
            f"    <h3>{_text(card['name'])}</h3>\n"
            f'    <div class="headline">{headline}</div>\n'
            f"    {stats}\n    {change}\n    {missing}\n"
            f"    <details><summary>Definition</summary>{definition}</details>\n"
            f'    <div class="card-links"><a href="{_text(card["export"])}">Incidents (CSV)</a></div>\n'
            "  </article>\n"
        )
    return mark_safe("".join(parts))


def hot_spot_rows_html(rows, action_items_tracked):
    """The hot-spot table's rows, as the template's loop wrote them (the same bytes), in Python."""
    parts = []
    for i, row in enumerate(rows):
        overdue = _text(row["overdue_action_items"]) if action_items_tracked else "–"
        parts.append(
            f'\n      <tr class="{"row2" if i % 2 else "row1"}">\n'
            f'        <th scope="row">{_text(row["name"])}</th>\n'
            f'        <td class="num">{_text(row["incidents"])}</td>\n'
            f'        <td class="num">{_text(floatformat(row["impact_minutes"], "0g"))}</td>\n'
            f'        <td class="num">{_text(row["customer_reports"])}</td>\n'
            f'        <td class="num">{overdue}</td>\n'
            f'        <td><a href="{_text(row["export"])}">Incidents (CSV)</a></td>\n'
            "      </tr>\n    "
        )
    return mark_safe("".join(parts))


# ---- charts --------------------------------------------------------------------------------------


def _week_label(day):
    return f"{day.day} {day:%b}"


FACTOR_COLOURS = ["#2f6fb0", "#b0452f", "#3c8d40", "#8a4fb0", "#c07a16", "#16858a", "#6c757d"]


def build_charts(data, scope):
    per_week = data["per_week"]
    weeks = per_week["weeks"]
    labels = [_week_label(week) for week in weeks]
    span = (
        f"{timezone.localtime(scope.since):%d %b %Y} to "
        f"{timezone.localtime(scope.until - timedelta(microseconds=1)):%d %b %Y}"
    )
    result = {}
    result["per_week"] = charts.stacked_bars(
        chart_id="chart-per-week",
        title="Incidents per week by severity",
        desc=f"{data['total']} incidents detected from {span}, counted by week of detection and stacked by severity.",
        labels=labels,
        series=[(sev.label, sev.colour, counts) for sev, counts in per_week["series"]],
        unit="incidents",
        width=960,
        links=[
            [export_url(scope, f"week:{week.isoformat()}:{sev.level}") for week in weeks]
            for sev, _counts in per_week["series"]
        ],
    )
    trend = data["trend"]
    result["mtta"] = charts.line_chart(
        chart_id="chart-mtta",
        title="MTTA per week (mean, minutes)",
        desc="Mean minutes from detection to first acknowledgement, by week of detection. "
        "Weeks without an acknowledged incident have no point.",
        labels=labels,
        series=[("MTTA (mean)", "#2f6fb0", trend["mtta_minutes"])],
        unit="minutes",
        width=540,
        links=[[export_url(scope, f"mtta:{week.isoformat()}") for week in weeks]],
    )
    result["mttr"] = charts.line_chart(
        chart_id="chart-mttr",
        title="MTTR per week (mean, hours)",
        desc="Mean hours from detection to resolution, by week of detection. "
        "Weeks without a resolved incident have no point.",
        labels=labels,
        series=[("MTTR (mean)", "#b0452f", trend["mttr_hours"])],
        unit="hours",
        width=540,
        links=[[export_url(scope, f"mttr:{week.isoformat()}") for week in weeks]],
    )
    result["mix"] = charts.donut(
        chart_id="chart-mix",
        title="Severity mix",
        desc="Incidents of the period by current severity: "
        + ", ".join(f"{sev.label} {n}" for sev, n in data["mix"])
        + ".",
        slices=[
            (f"{sev.label} {sev.name}", sev.colour, n, export_url(scope, f"severity:{sev.level}"))
            for sev, n in data["mix"]
        ],
    )
    top = data["top_services"]
    result["top_services"] = charts.horizontal_bars(
        chart_id="chart-top-services",
        title="Top services by impact minutes",
        desc="Services with the most impact minutes in the period. " + IMPACT_DEFINITION,
        rows=[
            (
                row["name"],
                row["impact_minutes"],
                f"{row['impact_minutes']:,.0f} min · {row['incidents']} incident{'s' * (row['incidents'] != 1)}",
                export_url(scope, f"service:{row['slug']}"),
            )
            for row in top
        ],
        fill="#8a4fb0",
        empty="No incident of the period names a service",
        width=960,
    )
    factors = data.get("factors")
    if factors is not None:
        result["factors"] = charts.stacked_bars(
            chart_id="chart-factors",
            title="Contributing factors by category, per month",
            desc="Contributing factors recorded in the reviews of the period's incidents, by the month the "
            "incident was detected in and category.",
            labels=[f"{month:%b %Y}" for month in factors["months"]],
            series=[
                (label, FACTOR_COLOURS[i % len(FACTOR_COLOURS)], counts)
                for i, (label, counts) in enumerate(factors["series"])
            ],
            unit="factors",
            empty="No contributing factors recorded for this period's incidents",
            width=960,
        )
    by_age = data["action_items_by_age"]
    if by_age is not None:
        result["action_items"] = charts.horizontal_bars(
            chart_id="chart-action-items",
            title="Open action items by age",
            desc="Every action item still open or in progress (whatever the period), by how long ago it was created.",
            rows=[(label, count, f"{count}", None) for label, count in by_age],
            fill="#c07a16",
            empty="No open action items",
            width=440,
        )
    return result


# ---- views ---------------------------------------------------------------------------------------


def dashboard_view(request):
    _check_permission(request)
    form = DashboardFilterForm(request.GET or None)
    scope = form.scope() if form.is_bound else DashboardFilterForm().scope()
    order = request.GET.get("rank", "incidents")
    order = order if order in HOT_SPOT_COLUMNS else "incidents"
    data = dashboard_data(user=request.user, scope=scope, hot_spot_order=order)
    results = rollups.metrics_read(
        user=request.user,
        since=scope.since,
        until=scope.until,
        service=scope.service,
        severity=scope.severity,
        read=data["read"],
    )
    before = scope.previous()
    read = data["read"]
    previous = rollups.metrics_read(  # means, counts and rates are what the change compares
        user=request.user,
        since=before.since,
        until=before.until,
        service=scope.service,
        severity=scope.severity,
        percentiles=False,
        selection=None if read is None else read._selection.for_period(before.since, before.until),
    )
    changes = period_change(results, previous)
    summary, missing = summary_lines(results, changes, scope)
    base = {**scope.params()}
    rank_links = {column: "?" + urlencode({**base, "rank": column}) for column in HOT_SPOT_COLUMNS}
    for row in data["hot_spots"]:
        row["export"] = export_url(scope, f"service:{row['slug']}")
    shown_form = form if form.is_bound else DashboardFilterForm(initial={"period": DEFAULT_PERIOD})
    _with_choices(shown_form, data["severities"], data["services"])
    context = {
        **admin.site.each_context(request),
        "title": "Reliability dashboard",
        "form": shown_form,
        "filter_fields_html": filter_fields_html(shown_form),
        "scope": scope,
        "period_since": timezone.localtime(scope.since),
        "period_until": timezone.localtime(scope.until - timedelta(microseconds=1)),
        "data": data,
        "cards_html": cards_html(metric_cards(results, scope, changes)),
        "summary": summary,
        "missing": missing,
        "charts": build_charts(data, scope),
        "hot_spots": data["hot_spots"],
        "hot_spot_rows_html": hot_spot_rows_html(data["hot_spots"], data["action_items_tracked"]),
        "rank": order,
        "rank_links": rank_links,
        "impact_definition": IMPACT_DEFINITION,
        "export_all": export_url(scope, "all"),
    }
    return TemplateResponse(request, "admin/incidents/dashboard.html", context)


CSV_COLUMNS = [
    "reference",
    "title",
    "severity",
    "services",
    "status",
    "started_at",
    "detected_at",
    "acknowledged_at",
    "mitigated_at",
    "resolved_at",
    "closed_at",
    *EXPORT_DURATIONS,
    "impact_minutes",
    "url",
]
INJECTION_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A cell a spreadsheet will not run as a formula: text starting with = + - @ (or a tab or CR) gets a quote."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(INJECTION_START) else text


class _Echo:
    def write(self, value):
        return value


def _timestamp(value):
    return "" if value is None else timezone.localtime(value).isoformat()


def _minutes(seconds):
    return "" if seconds is None else f"{seconds / 60:.1f}"


def export_rows(incidents):
    yield CSV_COLUMNS
    site = getattr(settings, "SITE_URL", "").rstrip("/")
    for incident in export_queryset(incidents).iterator(chunk_size=500):
        yield [
            incident.reference,
            incident.title,
            incident.severity.label,
            " ".join(service.slug for service in incident.services.all()),
            incident.status,
            _timestamp(incident.started_at),
            _timestamp(incident.detected_at),
            _timestamp(incident.acknowledged_at),
            _timestamp(incident.mitigated_at),
            _timestamp(incident.resolved_at),
            _timestamp(incident.closed_at),
            *(_minutes(getattr(incident, name)) for name in EXPORT_DURATIONS),
            _minutes(incident.impact_seconds),
            site + reverse("admin:incidents_incident_change", args=[incident.pk]),
        ]


def export_view(request):
    _check_permission(request)
    form = DashboardFilterForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        errors = "; ".join(message for messages in form.errors.values() for message in messages)
        return HttpResponseBadRequest(f"Invalid filters: {errors}", content_type="text/plain")
    scope = form.scope() if form.is_bound else DashboardFilterForm().scope()
    figure = request.GET.get("figure", "all")
    try:
        incidents = figure_incidents(user=request.user, scope=scope, figure=figure)
    except UnknownFigure as error:
        return HttpResponseBadRequest(str(error), content_type="text/plain")
    writer = csv.writer(_Echo())
    rows = (writer.writerow([csv_safe(cell) for cell in row]) for row in export_rows(incidents))
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", figure).strip("-") or "all"
    response["Content-Disposition"] = f'attachment; filename="incidents-{name}-{timezone.localdate():%Y%m%d}.csv"'
    return response


# ---- wiring into the admin site ------------------------------------------------------------------


def _with_dashboard_urls(get_urls):
    def get_urls_with_dashboard():
        site = admin.site
        return [
            path("incidents/dashboard/", site.admin_view(dashboard_view), name="incidents_dashboard"),
            path("incidents/dashboard/export.csv", site.admin_view(export_view), name="incidents_dashboard_export"),
            *get_urls(),
        ]

    get_urls_with_dashboard.dashboard = True
    return get_urls_with_dashboard


if not getattr(admin.site.get_urls, "dashboard", False):
    admin.site.get_urls = _with_dashboard_urls(admin.site.get_urls)
    admin.site.index_template = "admin/incidents/dashboard_index.html"
