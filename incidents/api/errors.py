"""One error shape for every API failure: ``{"error": {"code", "message", "fields"}}``.

``fields`` maps a field (or filter, or query parameter) to its messages, and is empty when the error
is not about a field. Domain errors from the services are mapped here: an IncidentError is a 400, a
transition the lifecycle forbids a 409, an edit based on a stale copy a 412.
"""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

from incidents.services import IncidentError, InvalidTransition, StaleIncident


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the resource's current state."
    default_code = "conflict"


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The resource has changed since you loaded it."
    default_code = "precondition_failed"


def _as_api_exception(exc):
    if isinstance(exc, Http404):
        return exceptions.NotFound(*exc.args)
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, StaleIncident):
        return PreconditionFailed(str(exc), code="stale")
    if isinstance(exc, InvalidTransition):
        return Conflict({"to": [str(exc)]}, code="invalid_transition")
    if isinstance(exc, IncidentError):
        return exceptions.ValidationError(str(exc), code="invalid")
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return exceptions.ValidationError(detail, code="invalid")
    return exc


def error_body(code, message, fields=None):
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _first_code(codes):
    while isinstance(codes, (list, dict)):
        if not codes:
            return None
        codes = next(iter(codes.values())) if isinstance(codes, dict) else codes[0]
    return codes


def _describe(exc):
    """(code, message, fields) for an APIException."""
    detail = exc.detail
    if isinstance(detail, dict):
        fields = dict(detail)
        general = fields.pop("non_field_errors", None) or fields.pop("detail", None)
        if general:
            message = " ".join(str(m) for m in general) if isinstance(general, list) else str(general)
        elif len(fields) == 1:
            name, messages = next(iter(fields.items()))
            first = messages[0] if isinstance(messages, list) and messages else messages
            message = f"{name}: {first}" if isinstance(first, str) else f"Invalid {name}."
        else:
            message = "Invalid input: see the fields."
        code = "invalid" if isinstance(exc, exceptions.ValidationError) else _first_code(exc.get_codes())
        return code or exc.default_code, message, fields
    if isinstance(detail, list):
        code = "invalid" if isinstance(exc, exceptions.ValidationError) else _first_code(exc.get_codes())
        return code or exc.default_code, " ".join(str(m) for m in detail) or str(exc.default_detail), {}
    return (getattr(detail, "code", None) or exc.default_code), str(detail), {}


def exception_handler(exc, context):
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 handling and logging take over
    response.data = error_body(*_describe(exc))
    return response


def not_found(request, exception=None):
    """handler404: the API's shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)
