"""Update text: placeholders filled by plain substitution, Markdown rendered to sanitised HTML.

Staff write templates and updates; nothing they write is ever evaluated. A placeholder is exactly
``{{ name }}`` with a name from PLACEHOLDERS; it is replaced by a regular expression with a plain
string. Anything else between ``{{`` and ``}}`` is an error (an unknown name, ``{{ x.__class__ }}``),
and template-engine tags such as ``{% load %}`` are just text.
"""

import re
from datetime import timedelta

import nh3
from django.conf import settings
from django.utils import timezone
from markdown_it import MarkdownIt

from incidents.selectors import incident_impact, incident_impact_text

from .public_name import english_list, incident_public_name

# The fixed list, in the order the help texts show them.
PLACEHOLDERS = {
    "incident.title": "The incident's title (external updates: its public title, never the internal one).",
    "incident.reference": "Its reference, e.g. INC-1042 (internal updates only: it never reaches the public).",
    "incident.status": "Its lifecycle status, e.g. Responding.",
    "severity": "Its severity, e.g. SEV1 Critical.",
    "services": "The affected services (external updates: the public ones only): “Checkout and Search”.",
    "services_are": "The same with its verb, for a sentence: “Checkout is”, “Checkout and Search are”.",
    "status": "The update's public status (Investigating, Identified, …); the incident's status for internal ones.",
    "started_at": "When impact began (detection time if unknown).",
    "detected_at": "When it was detected.",
    "resolved_at": "When it was resolved (empty while open).",
    "next_update_at": "When the next update is due: now plus the severity's update interval.",
    "status_page_url": "The public status page.",
    "customers_affected": "How many customers reported the problem so far (customer reports).",
    "customer_impact": "Internal updates: e.g. “12 customers affected (15 reports); revenue at risk: 4,200.00 USD.”",
}

PLACEHOLDER_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
NAME_RE = re.compile(r"\s*([a-z_][a-z_.]*)\s*")
TIME_FORMAT = "%Y-%m-%d %H:%M %Z"


def placeholder_help():
    return "Placeholders: " + ", ".join(f"{{{{ {name} }}}}" for name in PLACEHOLDERS) + "."


def unknown_placeholders(*texts):
    """The `{{ … }}` expressions in these texts that are not on the fixed list, as written."""
    unknown = []
    for text in texts:
        for match in PLACEHOLDER_RE.finditer(text or ""):
            name = NAME_RE.fullmatch(match[1])
            if name is None or name[1] not in PLACEHOLDERS:
                if match[0] not in unknown:
                    unknown.append(match[0])
    return unknown


def unknown_placeholders_message(unknown):
    return f"Unknown placeholder{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}. {placeholder_help()}"


def _time(value):
    return timezone.localtime(value).strftime(TIME_FORMAT) if value is not None else ""


def placeholder_values(*, incident, audience, public_status="", now=None):
    """The value of every placeholder for an update on this incident (all plain strings)."""
    from .models import Update

    now = now or timezone.now()
    services = list(incident.services.all())
    if audience == Update.Audience.EXTERNAL:
        services = [s for s in services if s.is_public]  # internal service names stay internal
    if public_status:
        status = Update.PublicStatus(public_status).label
    else:
        status = incident.get_status_display()
    severity = incident.severity
    impact = incident_impact(incident)
    external = audience == Update.Audience.EXTERNAL
    names = [s.name for s in services]
    return {
        "incident.title": incident_public_name(incident, services) if external else incident.title,
        "incident.reference": "" if external else incident.reference,  # refused in external texts
        "incident.status": incident.get_status_display(),
        "severity": f"{severity.label} {severity.name}",
        "services": english_list(names) or "our services",
        "services_are": f"{english_list(names)} {'is' if len(names) == 1 else 'are'}" if names else "our services are",
        "status": status,
        "started_at": _time(incident.started_at or incident.detected_at),
        "detected_at": _time(incident.detected_at),
        "resolved_at": _time(incident.resolved_at),
        "next_update_at": _time(now + timedelta(minutes=severity.update_interval_minutes)),
        "status_page_url": f"{settings.SITE_URL}/status/",
        "customers_affected": str(impact["customers_affected"]),
        # Revenue figures are for the company's own people, never for customers.
        "customer_impact": incident_impact_text(incident) if audience == Update.Audience.INTERNAL else "",
    }


# Placeholders whose value is for the company's own people only.
INTERNAL_ONLY_PLACEHOLDERS = ("incident.reference",)


def internal_only_placeholders(*texts):
    """The internal-only placeholders these texts use (an external update may not)."""
    used = []
    for text in texts:
        for match in PLACEHOLDER_RE.finditer(text or ""):
            name = NAME_RE.fullmatch(match[1])
            if name is not None and name[1] in INTERNAL_ONLY_PLACEHOLDERS and match[0] not in used:
                used.append(match[0])
    return used


def placeholders_fill(text, values):
    """Replace each known placeholder by its value; unknown ones are left as written (validate first)."""

    def replace(match):
        name = NAME_RE.fullmatch(match[1])
        if name is None or name[1] not in values:
            return match[0]
        return values[name[1]]

    return PLACEHOLDER_RE.sub(replace, text or "")


# Markdown's output, narrowed: no images (tracking pixels), no raw HTML surviving, no scripts or styles.
ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}


# The longest body an update may have (a status update is a few paragraphs); refused with a form/API error.
BODY_MAX_CHARS = 20_000


def _markdown():
    # markdown-it-py (CommonMark) parses in linear time: Python-Markdown took over 120 s on "[" × 50,000.
    # Raw HTML and every link pass through to nh3 below, which is what decides what survives.
    parser = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")
    parser.validateLink = lambda url: True
    return parser


_MARKDOWN = _markdown()


def markdown_render(text):
    """Markdown to HTML, then sanitised with an allow-list; links get rel="nofollow noopener"."""
    html = _MARKDOWN.render(text or "").strip()
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="nofollow noopener",
    )


def slack_escape(text):
    """Text for a Slack message: &, < and > escaped, so "<!channel>", "<@U123>" or "<https://x|y>" in it is shown
    as written instead of pinging a channel, a person, or hiding a link (Slack's own escaping rules)."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
