from rest_framework.permissions import DjangoModelPermissions


class ModelPermissions(DjangoModelPermissions):
    """The admin's permissions, applied to the API: reading needs the view permission, writes the matching one.

    An extra endpoint (a ViewSet ``@action``) names what it needs in the view's ``action_permissions``:
    ``{"transition": {"POST": ["incidents.change_incident"]}}``. Methods the action does not serve are
    answered 405 after this check, so they need no entry.
    """

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def _queryset(self, view):
        # Only the model is read from it: the class's queryset says which, without building the view's
        # filtered queryset (visibility rule and all) a second time per request.
        queryset = getattr(view, "queryset", None)
        return queryset if queryset is not None else super()._queryset(view)

    def has_permission(self, request, view):
        required = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if required is None:
            return super().has_permission(request, view)
        if not request.user or not request.user.is_authenticated:
            return False
        if request.method == "OPTIONS":
            return True
        method = "GET" if request.method == "HEAD" else request.method
        return request.user.has_perms(required.get(method, ()))
