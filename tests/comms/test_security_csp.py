"""Issue 11: a Content-Security-Policy on the public pages (status page, subscribe) that their own
inline CSS satisfies, and a decorator other views can use."""

import base64
import hashlib
import re

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from incidents_site.csp import content_security_policy, content_security_policy_exempt
from tests.incidents.factories import ServiceFactory

pytestmark = pytest.mark.django_db


def _policy(response):
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split("; ")}


def _sha(text):
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("url", ["/status/", "/subscribe/"])
def test_public_pages_have_a_strict_policy_that_allows_their_own_styles(client, url):
    ServiceFactory(slug="checkout", name="Checkout", is_public=True)
    response = client.get(url)
    assert response.status_code == 200
    policy = _policy(response)
    assert policy["default-src"] == ["'self'"] and policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'self'"] and policy["base-uri"] == ["'none'"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    page = response.content.decode()
    for block in re.findall(r"<style[^>]*>(.*?)</style>", page, re.DOTALL):
        assert _sha(block) in policy["style-src"]  # the page's own CSS still applies
    for attribute in re.findall(r'\sstyle="([^"]*)"', page):
        assert _sha(attribute) in policy["style-src"] and "'unsafe-hashes'" in policy["style-src"]


def test_the_subscribe_form_still_posts_under_the_policy(client):
    response = client.post("/subscribe/", {"email": "not-an-address"})
    assert response.status_code == 400 and "Content-Security-Policy" in response


def test_other_pages_are_left_alone(admin_client):
    assert "Content-Security-Policy" not in admin_client.get("/admin/")


def test_the_decorator_sets_and_replaces_directives_and_the_exemption_skips():
    @content_security_policy(img_src=["'self'", "https://img.example.com"])
    def view(request):
        return HttpResponse("<style>p{color:red}</style><p>hi</p>")

    response = view(RequestFactory().get("/anywhere/"))
    policy = _policy(response)
    assert policy["img-src"] == ["'self'", "https://img.example.com"]
    assert policy["style-src"] == ["'self'", _sha("p{color:red}")]

    @content_security_policy_exempt
    def data(request):
        return HttpResponse("{}", content_type="application/json")

    assert data(RequestFactory().get("/status/embed.json")).csp_exempt is True
