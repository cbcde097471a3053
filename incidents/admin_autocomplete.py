"""The admin's autocomplete endpoint, with people pickers that do not need the user admin.

Django's autocomplete answers only people who may *view* the target model's admin, so a responder
picking an action item's owner or a role holder got "The results could not be loaded." (only
superusers may see the user admin). Here, whoever may add or change the rows that point at people
(``ActionItem.owner``, ``RoleAssignment.user``, ``IncidentMember.user`` …) may look up *active staff*
for that field — by username or name, nothing else shown — without being given the user admin.

Terms are also cleaned of NUL characters, which PostgreSQL refuses in a query (a 500 before).
Installed as ``admin.site.autocomplete_view`` from IncidentsConfig.ready().
"""

from django.contrib import admin
from django.contrib.admin.views.autocomplete import AutocompleteJsonView
from django.contrib.auth import get_permission_codename, get_user_model
from django.db.models import Q


def may_pick_people(user, source_model):
    """Whether `user` may fill in a person on rows of `source_model` (may add or change such rows)."""
    opts = source_model._meta
    return any(
        user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}") for action in ("add", "change")
    )


def people_search(queryset, term):
    """Active staff matching every word of `term` in the username, first or last name."""
    queryset = queryset.filter(is_active=True, is_staff=True)
    for word in term.split():
        queryset = queryset.filter(
            Q(username__icontains=word) | Q(first_name__icontains=word) | Q(last_name__icontains=word)
        )
    return queryset.order_by("username")


class AutocompleteView(AutocompleteJsonView):
    def process_request(self, request):
        term, model_admin, source_field, to_field_name = super().process_request(request)
        return term.replace("\x00", ""), model_admin, source_field, to_field_name

    def _picks_people(self):
        return (
            self.model_admin.model is get_user_model()
            and not self.model_admin.has_view_permission(self.request)
            and may_pick_people(self.request.user, self.source_field.model)
        )

    def has_perm(self, request, obj=None):
        return super().has_perm(request, obj) or self._picks_people()

    def get_queryset(self):
        if not self._picks_people():
            return super().get_queryset()
        people = get_user_model()._default_manager.complex_filter(self.source_field.get_limit_choices_to())
        return people_search(people, self.term)


def autocomplete_view(request):
    return AutocompleteView.as_view(admin_site=admin.site)(request)


def install():
    # AdminSite.get_urls() wires "autocomplete/" to self.autocomplete_view (behind admin_view).
    admin.site.autocomplete_view = autocomplete_view
