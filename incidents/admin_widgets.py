"""Select widgets written out directly, for the busiest admin screens.

Django renders a <select> through its form templates: one template include per option and per
attribute. On the incident lists (the action menu) and the incident page (the role picker) that
was a twentieth of the whole request; these widgets give the same markup from the same context.
"""

from django import forms
from django.contrib.admin.widgets import AutocompleteSelect
from django.forms.utils import flatatt
from django.utils.html import escape
from django.utils.safestring import mark_safe


def select_html(widget):
    """Django's django/forms/widgets/select.html for a widget's template context."""
    groups = []
    for group_name, options, _index in widget["optgroups"]:
        inner = "".join(
            f'<option value="{escape(option["value"])}"{flatatt(option["attrs"])}>{escape(option["label"])}</option>'
            for option in options
        )
        groups.append(f'<optgroup label="{escape(group_name)}">{inner}</optgroup>' if group_name else inner)
    return mark_safe(f'<select name="{escape(widget["name"])}"{flatatt(widget["attrs"])}>{"".join(groups)}</select>')


class PlainRendering:
    def render(self, name, value, attrs=None, renderer=None):
        return select_html(self.get_context(name, value, attrs)["widget"])


class PlainSelect(PlainRendering, forms.Select):
    pass


class PlainAutocompleteSelect(PlainRendering, AutocompleteSelect):
    pass
