"""`{% incident_result_list cl %}`: Django's `{% result_list cl %}` with the rows built faster.

Django's items_for_result works out each column again for every cell (field lookup by exception,
link rules, preserved filters parsed from the URL, format_html): about a quarter of an incident
list's time at 50 rows. Here that is worked out once per column and once per list, and each cell is
built with the same markup; the table around them is admin/change_list_results.html's markup written
directly (its loops cost a template lookup chain per row). Lists with editable rows (a formset) keep
Django's own rows and template.
"""

import datetime

from django import template
from django.contrib.admin.templatetags.admin_list import (
    ResultList,
    _coerce_field_name,
    admin_list_filter,
    result_headers,
    result_hidden_fields,
    results,
)
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import (
    FieldIsAForeignKeyColumnName,
    _get_non_gfk_field,
    display_for_field,
    display_for_value,
    lookup_field,
)
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.template.loader import render_to_string
from django.urls import NoReverseMatch
from django.utils.encoding import iri_to_uri
from django.utils.html import escape
from django.utils.safestring import SafeData, SafeString, mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext

from incidents.admin_home import app_list_key
from incidents.html_text import escape_text, escape_unless_safe

register = template.Library()

PK_SENTINEL = "0pk0sentinel0"


def _is_model_field(opts, name):
    """lookup_field's first question (a field of the model, not a reverse or GFK relation)."""
    try:
        _get_non_gfk_field(opts, name)
    except (FieldDoesNotExist, FieldIsAForeignKeyColumnName):
        return False
    return True


class Column:
    """What does not change from row to row in one column of the list."""

    def __init__(self, cl, index, name, first_link):
        self.name = name
        self.classes = [f"field-{_coerce_field_name(name, index)}"]
        self.link = cl.list_display_links is not None and (
            (first_link and not cl.list_display_links) or name in cl.list_display_links
        )
        self.tag = "th" if self.link and first_link else "td"
        self.model_admin = cl.model_admin
        self.empty = cl.model_admin.get_empty_value_display()
        self.admin_method = None
        self.choice_labels = None
        if not callable(name) and _is_model_field(cl.lookup_opts, name):
            field = cl.lookup_opts.get_field(name)
            if field.choices and not field.is_relation:
                # The label of each stored value, looked up once rather than per cell.
                self.choice_labels = {value: str(label) for value, label in field.flatchoices}
        elif not callable(name):
            if hasattr(cl.model_admin, name) and name != "__str__":
                self.admin_method = getattr(cl.model_admin, name)
                self.empty = getattr(self.admin_method, "empty_value_display", self.empty)
                if name == "action_checkbox":
                    self.classes = ["action-checkbox"]
                self.boolean = getattr(self.admin_method, "boolean", False)

    def cell(self, result):
        """(classes, representation) as Django's items_for_result makes them."""
        classes = self.classes
        if self.choice_labels is not None:
            value = getattr(result, self.name)
            if value in self.choice_labels:
                return classes, self.choice_labels[value]
        if self.admin_method is not None:
            value = self.admin_method(result)
            if isinstance(value, str) and not self.boolean:
                # display_for_value's answer for text, without its chain of type checks.
                return classes, (self.empty if value.strip() == "" else str(value))
            result_repr = display_for_value(value, self.empty, self.boolean)
            if isinstance(value, (datetime.date, datetime.time)):
                classes = [*classes, "nowrap"]
            return classes, result_repr
        return self.generic_cell(result)

    def generic_cell(self, result):
        classes, empty = list(self.classes), self.empty
        try:
            f, attr, value = lookup_field(self.name, result, self.model_admin)
        except ObjectDoesNotExist:
            return classes, empty
        empty = getattr(attr, "empty_value_display", empty)
        if isinstance(value, str) and value.strip() == "":
            value = ""
        if f is None or f.auto_created:
            boolean = getattr(attr, "boolean", False)
            if isinstance(attr, property) and hasattr(attr, "fget"):
                boolean = getattr(attr.fget, "boolean", False)
            result_repr = display_for_value(value, empty, boolean)
            if isinstance(value, (datetime.date, datetime.time)):
                classes.append("nowrap")
        else:
            if isinstance(f.remote_field, models.ManyToOneRel):
                field_val = getattr(result, f.name)
                result_repr = empty if field_val is None else field_val
            else:
                result_repr = display_for_field(value, f, empty, avoid_link=self.link)
            if isinstance(f, (models.DateField, models.TimeField, models.ForeignKey)):
                classes.append("nowrap")
        return classes, result_repr


def _row_link(cl):
    """The change URL of a row as prefix + pk + suffix, preserved filters included, worked out once."""
    sample = cl.url_for_result(_PkSentinel(cl))
    url = add_preserved_filters({"preserved_filters": cl.preserved_filters, "opts": cl.opts}, sample)
    if url.count(PK_SENTINEL) != 1:
        return None
    return url.split(PK_SENTINEL)


class _PkSentinel:
    def __init__(self, cl):
        self.pk = PK_SENTINEL
        setattr(self, cl.lookup_opts.pk.attname, PK_SENTINEL)


def _rows(cl):
    columns, first_link = [], True
    for index, name in enumerate(cl.list_display):
        column = Column(cl, index, name, first_link)
        first_link = first_link and not column.link
        columns.append(column)
    # Links are escaped once; a popup row also says which value it hands back.
    try:
        link = _row_link(cl)
    except NoReverseMatch:
        link = None
    if link is None:
        return list(results(cl))
    prefix, suffix = escape(link[0]), escape(link[1])
    js_attr = str(cl.to_field) if cl.to_field else cl.lookup_opts.pk.attname
    rows = []
    for result in cl.result_list:
        cells = []
        for column in columns:
            classes, result_repr = column.cell(result)
            row_class = ' class="{}"'.format(" ".join(classes))
            if column.link:
                popup = ""
                if cl.is_popup:
                    popup = f' data-popup-opener="{escape_unless_safe(result.serializable_value(js_attr))}"'
                href = f"{prefix}{escape_text(result.pk)}{suffix}"
                inner = f'<a href="{href}"{popup}>{escape_unless_safe(result_repr)}</a>'
                cells.append(f"<{column.tag}{row_class}>{inner}</{column.tag}>")
            else:
                cells.append(f"<td{row_class}>{escape_unless_safe(result_repr)}</td>")
        rows.append(ResultList(None, [SafeString("".join(cells))]))
    return rows


def _header_html(header, num_sorted_fields):
    """One <th> of admin/change_list_results.html."""
    text = capfirst(header["text"])
    text = escape_unless_safe(mark_safe(text) if isinstance(header["text"], SafeData) else text)
    sort_options = ""
    if header["sortable"] and header["sort_priority"] > 0:
        priority = ""
        if num_sorted_fields > 1:
            title = gettext("Sorting priority: %(priority_number)s") % {"priority_number": header["sort_priority"]}
            priority = f'<span class="sortpriority" title="{escape_text(title)}">{header["sort_priority"]}</span>'
        direction = "ascending" if header["ascending"] else "descending"
        sort_options = (
            f'<div class="sortoptions"><a class="sortremove" href="{escape_text(header["url_remove"])}" '
            f'title="{escape_text(gettext("Remove from sorting"))}"></a> {priority}'
            f' <a href="{escape_text(header["url_toggle"])}" class="toggle {direction}" '
            f'title="{escape_text(gettext("Toggle sorting"))}"></a></div>'
        )
    if header["sortable"]:
        label = f'<a href="{escape_text(header["url_primary"])}">{text}</a>'
    else:
        label = f"<span>{text}</span>"
    return (
        f'<th scope="col"{escape_unless_safe(header["class_attrib"])}>{sort_options}'
        f'<div class="text">{label}</div><div class="clear"></div></th>'
    )


@register.simple_tag
def incident_result_list(cl):
    """admin/change_list_results.html's table, written directly; an editable list keeps the template."""
    headers = list(result_headers(cl))
    num_sorted_fields = sum(1 for h in headers if h["sortable"] and h["sorted"])
    if cl.formset:
        context = {
            "cl": cl,
            "result_hidden_fields": list(result_hidden_fields(cl)),
            "result_headers": headers,
            "num_sorted_fields": num_sorted_fields,
            "results": list(results(cl)),
        }
        return render_to_string("admin/change_list_results.html", context)
    rows = _rows(cl)
    if not rows:
        return ""
    head = "".join(_header_html(header, num_sorted_fields) for header in headers)
    body = "".join(f"<tr>{''.join(escape_unless_safe(item) for item in row)}</tr>" for row in rows)
    return mark_safe(
        f'<div class="results"><table id="result_list"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


# ---- the filter sidebar -------------------------------------------------------------------------

DJANGO_FILTER_TEMPLATE = "admin/filter.html"


@register.simple_tag
def incident_list_filter(cl, spec):
    """`{% admin_list_filter cl spec %}`: admin/filter.html's markup written directly.

    Six to eight filters a list, each a template render with a loop and a tag per choice, were a
    tenth of the open list's rendering. A filter with its own template keeps Django's rendering.
    """
    if spec.template != DJANGO_FILTER_TEMPLATE:
        return admin_list_filter(cl, spec)
    title = escape_text(spec.title)
    selected = ' class="selected"'
    items = "".join(
        f"<li{selected if choice['selected'] else ''}>"
        f'<a href="{escape_text(iri_to_uri(choice["query_string"]))}">{escape_unless_safe(choice["display"])}</a></li>'
        for choice in spec.choices(cl)
    )
    return mark_safe(
        f'<details data-filter-title="{title}" open><summary> By {title} </summary><ul>{items}</ul></details>'
    )


# ---- the navigation sidebar -----------------------------------------------------------------------

SIDEBAR_CACHE_SIZE = 256
_sidebars = {}


@register.simple_tag(takes_context=True)
def incident_nav_sidebar(context):
    """The admin's sidebar, rendered once per reader's app list and page rather than on every request.

    Its template works through every model of every app (about a tenth of a list's rendering); what
    it shows is the app list, a function of the reader's permissions (the app list's own cache key),
    and the page's path, which marks the current model.
    """
    request, available_apps = context["request"], context.get("available_apps", [])
    key = app_list_key(request, None), request.path
    html = _sidebars.get(key)
    if html is None:
        html = render_to_string("admin/nav_sidebar.html", {"available_apps": available_apps, "request": request})
        if len(_sidebars) >= SIDEBAR_CACHE_SIZE:
            _sidebars.clear()
        _sidebars[key] = html
    return html
