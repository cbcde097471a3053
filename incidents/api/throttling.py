from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from incidents.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """One budget per API key; per user for browser sessions, per address for anyone else.

    The rate is REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api"] (API_THROTTLE_RATE in the environment).
    Counters live in the default cache: use a shared cache (CACHE_URL) when running several processes.
    """

    scope = "api"

    def get_rate(self):
        # Read at request time (not import time) so a changed setting applies at once.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            ident = f"key-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"addr-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
