"""Checks on every request to the REST API before any view parses it, so bad input is a 4xx, never a 500.

- a body over API_MAX_BODY_BYTES is a 413, refused from its Content-Length or, without one, after
  reading one byte past the limit (nothing bigger is ever held in memory or parsed);
- JSON nested deeper than API_MAX_JSON_DEPTH is a 400 (Python's parser would recurse until it fails);
- a NUL character or a lone surrogate in any JSON string or key, or a NUL in a query parameter, is a
  400 naming where it is (PostgreSQL refuses ``\\u0000`` in text and jsonb, mid-transaction);
- a 404 for a URL nothing under /api/ matches is answered in the API's error shape, also with DEBUG on.

Alert ingestion (/api/v1/integrations/) keeps its own limits and answers: it is left alone here.
"""

import io
import json

from django.conf import settings
from django.http import JsonResponse

from .errors import error_body

API_PREFIX = "/api/"
SKIPPED_PREFIXES = ("/api/v1/integrations/", "/api/schema/", "/api/docs/")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class InvalidJson(Exception):
    def __init__(self, status_code, code, message, field=None):
        super().__init__(message)
        self.status_code, self.code, self.message, self.field = status_code, code, message, field

    def response(self):
        fields = {self.field or "body": [self.message]}
        return JsonResponse(error_body(self.code, self.message, fields), status=self.status_code)


def _path(parts):
    """title, services[2], data.labels.env: where a value sits in the body, as a client would name it."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _bad_text(text):
    """Why this string cannot be stored, or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (an invalid \\ud800-\\udfff escape)"
    return None


def check_json_document(document, max_depth):
    """Walk a parsed body without recursion: depth, and text that cannot be stored."""
    stack = [(document, (), 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            problem = _bad_text(value)
            if problem:
                field = _path(where) or "body"
                raise InvalidJson(400, "invalid", f"{field}: {problem}.", field)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > max_depth:
            raise InvalidJson(400, "too_deep", f"The JSON body is nested more than {max_depth} levels deep.")
        if isinstance(value, dict):
            for key, item in value.items():
                problem = _bad_text(key)
                if problem:
                    field = _path(where) or "body"
                    raise InvalidJson(400, "invalid", f"A key in {field} {problem}.", field)
                stack.append((item, (*where, key), depth + 1))
        else:
            stack.extend((item, (*where, i), depth + 1) for i, item in enumerate(value))


def parse_json_body(body, max_depth):
    """The document, or None when the body is not JSON at all (the view's parser says why); InvalidJson when
    it is JSON that must not reach the view."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise InvalidJson(400, "too_deep", f"The JSON body is nested more than {max_depth} levels deep.") from None
    except ValueError:
        return None
    check_json_document(document, max_depth)
    return document


class ApiInputGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        if not path.startswith(API_PREFIX) or path.startswith(SKIPPED_PREFIXES):
            return self.get_response(request)
        problem = self.query_problem(request) or self.body_problem(request)
        if problem is not None:
            return problem.response()
        response = self.get_response(request)
        if response.status_code == 404 and not response.get("Content-Type", "").startswith("application/json"):
            return JsonResponse(error_body("not_found", "Not found."), status=404)  # Django's DEBUG page
        return response

    def query_problem(self, request):
        for name, values in request.GET.lists():
            for text in (name, *values):
                problem = _bad_text(text)
                if problem:
                    return InvalidJson(400, "invalid", f"Query parameter {name!r} {problem}.", name)
        return None

    def body_problem(self, request):
        if request.method not in BODY_METHODS:
            return None
        limit = settings.API_MAX_BODY_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return self.too_large(limit)
        body = request.read(limit + 1)
        if len(body) > limit:
            return self.too_large(limit)
        # Hand the body on as if nobody had read it: request.body and the views' parsers see it whole.
        request._body = body
        request._stream = io.BytesIO(body)
        request._read_started = False
        if body and "json" in request.META.get("CONTENT_TYPE", "").lower():
            try:
                parse_json_body(body, settings.API_MAX_JSON_DEPTH)
            except InvalidJson as exc:
                return exc
        return None

    @staticmethod
    def too_large(limit):
        return InvalidJson(413, "payload_too_large", f"The body is larger than {limit:,} bytes.")
