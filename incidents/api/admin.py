from django.contrib import admin, messages
from django.urls import reverse

from incidents.models import ApiKey

from ..admin_keys import key_shown_once
from .keys import api_key_issue, api_key_revoke


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    autocomplete_fields = ["user"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "user"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        obj.new_key = api_key_issue(api_key=obj)  # shown once by response_add, never in a message cookie

    def response_add(self, request, obj, post_url_continue=None):
        if getattr(obj, "new_key", None) is None:
            return super().response_add(request, obj, post_url_continue)
        return key_shown_once(
            request,
            title=f"The API key “{obj.name}”",
            what="API key",
            keys=[(f"{obj.name} (acts as {obj.user})", obj.new_key)],
            back_url=reverse("admin:incidents_apikey_changelist"),
            back_label="API keys",
            note="Send it as “Authorization: Bearer <key>”.",
        )

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key)
        self.message_user(request, "The selected keys are revoked; requests using them now get 401.", messages.SUCCESS)
