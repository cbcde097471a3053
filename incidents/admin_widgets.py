"""Select and hidden-input widgets written out directly, for the busiest admin screens.

Django renders a <select> through its form templates: one template include per option and per
attribute. On the incident lists (the action menu) and the incident page (the role picker) that
was a twentieth of the whole request; these widgets give the same markup from the same context.
"""

from django import forms
from django.contrib.admin.widgets import AutocompleteSelect
from django.forms.utils import flatatt
from django.utils.safestring import mark_safe

from .html_text import escape_text

SELECTED = {"selected": True}


def option_attrs(attrs):
    """flatatt() of an option's attributes, without its escaping machinery for the usual two cases."""
    if not attrs:
        return ""
    return " selected" if attrs == SELECTED else flatatt(attrs)


def select_html(widget):
    """Django's django/forms/widgets/select.html for a widget's template context."""
    groups = []
    for group_name, options, _index in widget["optgroups"]:
        inner = "".join(
            f'<option value="{escape_text(option["value"])}"{option_attrs(option["attrs"])}>{escape_text(option["label"])}</option>'
            for option in options
        )
        groups.append(f'<optgroup label="{escape_text(group_name)}">{inner}</optgroup>' if group_name else inner)
    return mark_safe(
        f'<select name="{escape_text(widget["name"])}"{flatatt(widget["attrs"])}>{"".join(groups)}</select>'
    )


class PlainRendering:
    def render(self, name, value, attrs=None, renderer=None):
        return select_html(self.get_context(name, value, attrs)["widget"])


class PlainSelect(PlainRendering, forms.Select):
    pass


class PlainHiddenInput(forms.HiddenInput):
    """django/forms/widgets/input.html (with attrs.html) for a hidden input."""

    def render(self, name, value, attrs=None, renderer=None):
        widget = self.get_context(name, value, attrs)["widget"]
        shown = "" if widget["value"] is None else f' value="{escape_text(widget["value"])}"'
        return mark_safe(
            f'<input type="{widget["type"]}" name="{escape_text(widget["name"])}"{shown}{flatatt(widget["attrs"])}>'
        )


class PlainAutocompleteSelect(PlainRendering, AutocompleteSelect):
    pass
