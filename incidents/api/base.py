"""What every API view shares: throttling, Idempotency-Key on POSTs, and headers servers accept as they are."""

import hashlib

from django.db import transaction
from django.utils.cache import get_conditional_response

from . import idempotency
from .throttling import ApiKeyRateThrottle


class ApiViewMixin:
    throttle_classes = [ApiKeyRateThrottle]

    def dispatch(self, request, *args, **kwargs):
        self.idempotency_row = None
        if request.method != "POST" or idempotency.HEADER not in request.headers:
            return super().dispatch(request, *args, **kwargs)
        idempotency.prune_expired()
        # The key's row and the operation commit together: a crash in between leaves neither.
        with transaction.atomic():
            response = super().dispatch(request, *args, **kwargs)
            if self.idempotency_row is not None:
                idempotency.settle(self.idempotency_row, response)
        return response

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication, permissions and throttling first
        key = idempotency.requested_key(request)
        if key is not None:
            self.idempotency_row = idempotency.claim(request, key)

    def handle_exception(self, exc):
        if isinstance(exc, idempotency.Replay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # Serializer values (a Location from a HyperlinkedIdentityField) are str subclasses, which WSGI
        # servers refuse (wsgiref asserts type(value) is str): send plain strings.
        for name, value in list(response.items()):
            if type(value) is not str:
                response[name] = str(value)
        if request.method in ("GET", "HEAD") and response.status_code == 200:
            response = conditional(request, response)
        return response


def conditional(request, response):
    """An ETag on every 200 read (a hash of the body unless the view set one, e.g. an incident's version),
    and 304 Not Modified when If-None-Match names it: a client polling a list downloads it only when it changed."""
    if not response.has_header("ETag"):
        if hasattr(response, "render"):
            response.render()
        response["ETag"] = f'W/"{hashlib.sha256(response.content).hexdigest()[:32]}"'
    return get_conditional_response(request, etag=response["ETag"], response=response)
