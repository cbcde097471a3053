"""OpenAPI details drf-spectacular cannot infer: the error shape on every operation, and its headers."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from . import idempotency
from .base import ApiViewMixin


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Stable, machine-readable: invalid, not_authenticated, invalid_transition, stale…"
    )
    message = serializers.CharField(help_text="For people.")
    fields = serializers.DictField(
        child=serializers.JSONField(), help_text="Messages per field or parameter; empty when not about a field."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


IDEMPOTENCY_PARAMETER = {
    "in": "header",
    "name": idempotency.HEADER,
    "required": False,
    "schema": {"type": "string", "pattern": idempotency.KEY_PATTERN},
    "description": "Any unique value (a UUID) to make this request safe to retry: a retry with the same key "
    "and body gets the first response (with `Idempotent-Replayed: true`) and changes nothing; the same key "
    "with another body is a 422. Keys are per API key (or user) and kept for 24 hours.",
}


IF_NONE_MATCH_PARAMETER = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "schema": {"type": "string"},
    "description": "The ETag of your last copy: 304 with no body if it has not changed since.",
}
ETAG_RESPONSE_HEADER = {
    "schema": {"type": "string"},
    "description": "This representation's version: send it as If-None-Match to get 304 while it is unchanged.",
}


def error_response(description):
    return OpenApiResponse(ErrorSerializer, description=description)


class AutoSchema(SpectacularAutoSchema):
    """Adds the error responses every API operation can give, unless the view documented them itself."""

    ERRORS = {
        "400": "Invalid input: see `error.fields`.",
        "401": "No credentials, or an unknown or revoked API key.",
        "403": "The key's user lacks the permission this needs.",
        "404": "No such object.",
        "415": "The body is not JSON.",
        "429": "Too many requests for this key: wait `Retry-After` seconds.",
    }
    HEADERS = {
        "401": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "The expected scheme: Bearer."}},
        "429": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}},
    }

    def _error_codes(self):
        has_body = self.method in ("POST", "PUT", "PATCH")
        codes = []
        if has_body or self._is_list_view() or getattr(self.view, "single_object_list", False):
            codes.append("400")
        if self.view.authentication_classes:
            codes += ["401", "403"]
        if "{" in self.path:
            codes.append("404")
        if has_body:
            codes.append("415")
        if self.view.throttle_classes:
            codes.append("429")
        return codes

    def _is_list_view(self, serializer=None):
        # A ViewSet's list action that answers one document (metrics, an incident's impact) says so.
        if getattr(self.view, "single_object_list", False):
            return False
        return super()._is_list_view(serializer)

    def _idempotent(self):
        return self.method == "POST" and isinstance(self.view, ApiViewMixin)

    def _conditional(self):
        return self.method == "GET" and isinstance(self.view, ApiViewMixin)

    def _get_parameters(self):
        parameters = super()._get_parameters()
        if self._idempotent():
            parameters.append(IDEMPOTENCY_PARAMETER)
        if self._conditional() and not any(p["name"] == "If-None-Match" for p in parameters):
            parameters.append(IF_NONE_MATCH_PARAMETER)
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if self._conditional():
            responses["304"] = {"description": "Not modified: If-None-Match names the current ETag; no body."}
            if "200" in responses:
                responses["200"].setdefault("headers", {}).setdefault("ETag", ETAG_RESPONSE_HEADER)
        if self._idempotent() and "422" not in responses:
            responses["422"] = self._get_response_for_code(
                error_response("This Idempotency-Key was used with a different request."), "422", direction=direction
            )
        for code in self._error_codes():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    error_response(self.ERRORS[code]), code, direction=direction
                )
        for code, headers in self.HEADERS.items():
            if code in responses:
                responses[code].setdefault("headers", {}).update(headers)
        return responses
