"""Server-side SVG charts for the admin dashboard: no JavaScript, no CDN.

Each function returns safe markup for an inline ``<svg role="img">`` with a ``<title>`` and ``<desc>``,
axis labels, a legend and a tooltip (``<title>``) on every bar, point and slice; where a link is given,
the mark links to the incidents behind it. Every text and attribute value is escaped here (as plain text:
Django's escape() makes a SafeString per call, hundreds a chart).
"""

import math
import re

from django.utils.safestring import mark_safe

from .html_text import escape_text as escape

COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?$")
FALLBACK = "#6c757d"
FONT = "font-family=\"-apple-system, 'Segoe UI', system-ui, Roboto, sans-serif\""
INK = "#333"
MUTED = "#767676"
GRID = "#e3e3e3"


def colour(value):
    """A colour safe to put in an attribute: a hex colour, or grey."""
    return value if isinstance(value, str) and COLOUR_RE.match(value) else FALLBACK


def nice_ticks(maximum, count=4):
    """Round tick values from 0 to at least `maximum` (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not maximum or maximum <= 0:
        return [0, 1]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if maximum >= 1 and step < 1:
        step = 1
    ticks = [0]
    while ticks[-1] < maximum:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def number(value, digits=1):
    if value is None:
        return "–"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _open(chart_id, title, desc, width, height):
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" style="max-width: {width}px" preserveAspectRatio="xMidYMin meet" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" {FONT} font-size="12">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]


def _close(parts):
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every value above went through escape()


def _linked(mark, href):
    if not href:
        return mark
    return f'<a href="{escape(href)}">{mark}</a>'


def _empty(parts, width, height, message):
    parts.append(
        f'<text class="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{MUTED}" '
        f'font-size="14">{escape(message)}</text>'
    )
    return _close(parts)


def _legend(parts, items, x, y, width):
    """A legend row of (label, colour) swatches, wrapping to the chart's width."""
    cx, cy = x, y
    for label, fill in items:
        text_width = 8 + 7 * len(label)
        if cx + text_width + 16 > x + width and cx > x:
            cx, cy = x, cy + 18
        parts.append(
            f'<g class="legend-item"><rect x="{cx}" y="{cy - 10}" width="12" height="12" rx="2" fill="{colour(fill)}"/>'
            f'<text x="{cx + 16}" y="{cy}" fill="{INK}">{escape(label)}</text></g>'
        )
        cx += text_width + 24


def _y_axis(parts, ticks, left, top, plot_w, plot_h, unit):
    top_value = ticks[-1] or 1
    for tick in ticks:
        y = top + plot_h - plot_h * tick / top_value
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{number(tick)}</text>'
        )
    if unit:
        parts.append(
            f'<text class="axis-label" x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" fill="{MUTED}" '
            f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{escape(unit)}</text>'
        )
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{MUTED}"/>')


def _x_labels(parts, labels, left, slot, baseline):
    room = max(2, int(slot * len(labels) // 56))  # labels that fit side by side without overlapping
    every = max(1, math.ceil(len(labels) / room))
    for i, label in enumerate(labels):
        if i % every:
            continue
        x = left + slot * (i + 0.5)
        parts.append(
            f'<text class="x-label" x="{x:.1f}" y="{baseline + 16}" text-anchor="middle" fill="{MUTED}">'
            f"{escape(label)}</text>"
        )


def stacked_bars(
    *, chart_id, title, desc, labels, series, unit="", links=None, empty="No incidents in this period", width=720
):
    """Vertical bars, one per label, stacked by series.

    series: [(name, colour, [value per label])]; links: [[href per label] per series] or None.
    """
    height = 300
    left, right, top, legend_h = 48, 12, 16, 28
    plot_w, plot_h = width - left - right, height - top - legend_h - 40
    parts = _open(chart_id, title, desc, width, height)
    totals = [sum(values[i] or 0 for _n, _c, values in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(parts, width, height, empty)
    ticks = nice_ticks(max(totals))
    _y_axis(parts, ticks, left, top, plot_w, plot_h, unit)
    slot = plot_w / len(labels)
    bar_w = max(2.0, slot * 0.7)
    scale = plot_h / ticks[-1]
    baseline = top + plot_h
    for i, label in enumerate(labels):
        x = left + slot * i + (slot - bar_w) / 2
        y = baseline
        for s, (name, fill, values) in enumerate(series):
            value = values[i] or 0
            if not value:
                continue
            h = value * scale
            y -= h
            mark = (
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour(fill)}" data-value="{value}"><title>{escape(label)} · {escape(name)}: '
                f"{number(value)}</title></rect>"
            )
            parts.append(_linked(mark, links[s][i] if links else None))
        if totals[i] and bar_w >= 14:
            parts.append(
                f'<text class="bar-total" x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                f'fill="{INK}" font-size="10">{number(totals[i])}</text>'
            )
    _x_labels(parts, labels, left, slot, baseline)
    _legend(parts, [(name, fill) for name, fill, _v in series], left, height - 8, plot_w)
    return _close(parts)


def line_chart(
    *, chart_id, title, desc, labels, series, unit="", links=None, empty="Nothing to plot in this period", width=720
):
    """Lines over the labels; a None value leaves a gap (no point), never a zero.

    series: [(name, colour, [value or None per label])]; links: [[href per label] per series] or None.
    """
    height = 260
    left, right, top, legend_h = 48, 12, 16, 28
    plot_w, plot_h = width - left - right, height - top - legend_h - 40
    parts = _open(chart_id, title, desc, width, height)
    present = [v for _n, _c, values in series for v in values if v is not None]
    if not labels or not present:
        return _empty(parts, width, height, empty)
    ticks = nice_ticks(max(present))
    _y_axis(parts, ticks, left, top, plot_w, plot_h, unit)
    slot = plot_w / len(labels)
    scale = plot_h / ticks[-1]
    baseline = top + plot_h
    for s, (name, fill, values) in enumerate(series):
        segments, current = [], []
        points = []
        for i, value in enumerate(values):
            if value is None:
                if current:
                    segments.append(current)
                current = []
                continue
            xy = (left + slot * (i + 0.5), baseline - value * scale)
            current.append(xy)
            points.append((i, value, xy))
        if current:
            segments.append(current)
        for segment in segments:
            if len(segment) > 1:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
                parts.append(
                    f'<polyline class="line" points="{d}" fill="none" stroke="{colour(fill)}" stroke-width="2.5" '
                    f'stroke-linejoin="round"/>'
                )
        for i, value, (x, y) in points:
            mark = (
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour(fill)}" stroke="#fff" '
                f'stroke-width="1.5" data-value="{value:.2f}"><title>{escape(labels[i])} · {escape(name)}: '
                f"{number(value)} {escape(unit)}</title></circle>"
            )
            parts.append(_linked(mark, links[s][i] if links else None))
    _x_labels(parts, labels, left, slot, baseline)
    _legend(parts, [(name, fill) for name, fill, _v in series], left, height - 8, plot_w)
    return _close(parts)


def donut(*, chart_id, title, desc, slices, centre_label="incidents", empty="No incidents in this period"):
    """A ring of slices with a legend giving each count and share. slices: [(label, colour, value, href)]."""
    width, height = 440, 220
    parts = _open(chart_id, title, desc, width, height)
    total = sum(value for _l, _c, value, _h in slices)
    if not total:
        return _empty(parts, width, height, empty)
    cx, cy, r = 100, 110, 70
    circumference = 2 * math.pi * r
    offset = 0.0
    for label, fill, value, href in slices:
        if not value:
            continue
        length = circumference * value / total
        mark = (
            f'<circle class="slice" cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="{colour(fill)}" '
            f'stroke-width="34" stroke-dasharray="{length:.2f} {circumference - length:.2f}" '
            f'stroke-dashoffset="{-offset:.2f}" transform="rotate(-90 {cx} {cy})" data-value="{value}">'
            f"<title>{escape(label)}: {number(value)} ({100 * value / total:.0f}%)</title></circle>"
        )
        parts.append(_linked(mark, href))
        offset += length
    parts.append(
        f'<text x="{cx}" y="{cy}" text-anchor="middle" font-size="22" font-weight="bold" fill="{INK}">'
        f"{number(total)}</text>"
        f'<text x="{cx}" y="{cy + 18}" text-anchor="middle" fill="{MUTED}">{escape(centre_label)}</text>'
    )
    y = cy - 12 * len(slices) + 6
    for label, fill, value, href in slices:
        text = f"{label} — {number(value)} ({100 * value / total:.0f}%)"
        item = (
            f'<g class="legend-item"><rect x="200" y="{y - 10}" width="12" height="12" rx="2" fill="{colour(fill)}"/>'
            f'<text x="218" y="{y}" fill="{INK}">{escape(text)}</text></g>'
        )
        parts.append(_linked(item, href if value else None))
        y += 24
    return _close(parts)


def horizontal_bars(
    *, chart_id, title, desc, rows, fill="#2f6fb0", unit="", empty="Nothing to show in this period", width=720
):
    """One labelled bar per row, longest first as given. rows: [(label, value, value text, href)]."""
    row_h = 26
    label_w = 180
    height = max(60, 16 + row_h * len(rows))
    parts = _open(chart_id, title, desc, width, height)
    if not rows or not any(value for _l, value, _t, _h in rows):
        return _empty(parts, width, height, empty)
    maximum = max(value for _l, value, _t, _h in rows) or 1
    plot_w = width - label_w - (190 if width >= 600 else 60)
    for i, (label, value, text, href) in enumerate(rows):
        y = 8 + i * row_h
        w = max(1.0, plot_w * value / maximum) if value else 0
        short = label if len(label) <= 26 else label[:25] + "…"
        parts.append(
            f'<text class="y-label" x="{label_w - 8}" y="{y + 15}" text-anchor="end" fill="{INK}">{escape(short)}</text>'
        )
        mark = (
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" rx="2" '
            f'fill="{colour(fill)}" data-value="{value:.2f}"><title>{escape(label)}: {escape(text)}</title></rect>'
        )
        parts.append(_linked(mark, href))
        parts.append(f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + 15}" fill="{INK}">{escape(text)}</text>')
    if unit:
        parts.append(f'<text x="{width - 4}" y="{height - 4}" text-anchor="end" fill="{MUTED}">{escape(unit)}</text>')
    return _close(parts)
