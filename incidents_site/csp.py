"""Content-Security-Policy for the public pages (status page, subscribe), with no template changes.

The policy allows only this site's own files: no inline script at all, no other origin, no framing,
forms posting only here. The pages' own inline CSS (a <style> block, a style="…" attribute) is allowed
by its SHA-256, worked out from the response, so a template may keep its styles and nothing injected
can add new ones.

- ``ContentSecurityPolicyMiddleware`` puts the policy on every HTML response under
  ``settings.CONTENT_SECURITY_POLICY_PATHS`` (``/status/``, ``/subscribe/``) that has none yet.
- ``@content_security_policy(**directives)`` sets it on one view, replacing directives
  (``script_src=["'self'", "https://cdn.example.com"]``), e.g. for a view elsewhere or one that needs more.
- ``@content_security_policy_exempt`` leaves a view's responses without one (a JSON or script
  document read by other sites, say).
"""

import base64
import functools
import hashlib
import html
import re

from django.conf import settings

HEADER = "Content-Security-Policy"
DEFAULT_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

STYLE_BLOCK_RE = re.compile(rb"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)
STYLE_ATTRIBUTE_RE = re.compile(rb"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)


def _sha256(data):
    return "'sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode() + "'"


def inline_style_sources(content):
    """The style-src sources that allow exactly the inline CSS of this HTML document."""
    blocks = {_sha256(match[1]) for match in STYLE_BLOCK_RE.finditer(content)}
    attributes = {
        _sha256(html.unescape((match[1] or match[2] or b"").decode("utf-8", "replace")).encode())
        for match in STYLE_ATTRIBUTE_RE.finditer(content)
    }
    sources = sorted(blocks)
    if attributes:
        sources += ["'unsafe-hashes'", *sorted(attributes)]  # attributes need it, in CSP 3
    return sources


def policy_header(response, **directives):
    """The header value: the default policy, directives replaced (snake_case names), inline styles hashed."""
    policy = {name: list(sources) for name, sources in DEFAULT_POLICY.items()}
    for name, sources in directives.items():
        policy[name.replace("_", "-")] = list(sources)
    content_type = response.get("Content-Type", "")
    if content_type.startswith("text/html") and not response.streaming:
        policy["style-src"] += inline_style_sources(response.content)
    return "; ".join(" ".join([name, *sources]) for name, sources in policy.items())


def content_security_policy(view=None, **directives):
    """Decorator: this view's responses get the policy (with `directives` replaced)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.add_post_render_callback(lambda r: _set(r, directives))
            else:
                _set(response, directives)
            return response

        return wrapped

    return decorate(view) if view is not None else decorate


def content_security_policy_exempt(view):
    """Decorator: the middleware leaves this view's responses without a policy."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response.csp_exempt = True
        return response

    return wrapped


def _set(response, directives):
    response[HEADER] = policy_header(response, **directives)
    return response


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.paths = tuple(getattr(settings, "CONTENT_SECURITY_POLICY_PATHS", ()))

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path.startswith(self.paths)
            and response.status_code != 304  # it would replace the cached page's header, hashes and all
            and HEADER not in response
            and not getattr(response, "csp_exempt", False)
        ):
            _set(response, {})
        return response
