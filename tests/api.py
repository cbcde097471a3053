"""The API tests' client: a DRF test client authenticated with a fresh API key of the given person."""

from rest_framework.test import APIClient

from incidents.api.keys import api_key_create


def api_client_for(user, *, name=None):
    """An APIClient sending `Authorization: Bearer <a new key of user>` (as tools call the API)."""
    _key, raw = api_key_create(name=name or f"{user.username} key", user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client
