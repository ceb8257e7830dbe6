"""Server-drawn SVG charts for the console (no JS library, no CDN): stacked bars and a line, with a legend whose
entries link to the list behind each series."""

import datetime as dt

from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

PALETTE = {"completed": "#2e7d32", "failed": "#c62828", "retried": "#ef6c00", "cancelled": "#757575"}
OTHER = ["#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e", "#283593", "#f9a825"]


def colour(key: str, i: int) -> str:
    return PALETTE.get(key, OTHER[i % len(OTHER)])


def stacked_bars(*, buckets: list[dt.datetime], series: dict[str, list[float]], links: dict[str, str] | None = None,
                 width: int = 720, height: int = 160, title: str = "", time_format: str = "%H:%M",
                 unit: str = "") -> str:
    """Bars of the series stacked per bucket; a bar's tooltip gives its time and values."""
    links = links or {}
    n = max(1, len(buckets))
    totals = [sum(values[i] for values in series.values()) for i in range(len(buckets))]
    top = max(totals + [1])
    pad_left, pad_bottom, pad_top = 44, 18, 6
    plot_w, plot_h = width - pad_left - 4, height - pad_bottom - pad_top
    bar_w = plot_w / n
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
             f'width="100%" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">']
    for frac in (0, 0.5, 1):
        y = pad_top + plot_h * (1 - frac)
        parts.append(f'<line x1="{pad_left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{pad_left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#666">'
                     f'{_num(top * frac)}{unit}</text>')
    for i, at in enumerate(buckets):
        y = pad_top + plot_h
        tip = [at.strftime("%Y-%m-%d " + time_format)]
        for j, (key, values) in enumerate(series.items()):
            v = values[i]
            if not v:
                continue
            h = plot_h * v / top
            y -= h
            tip.append(f"{key}: {_num(v)}")
            parts.append(f'<rect x="{pad_left + i * bar_w:.2f}" y="{y:.2f}" width="{max(bar_w - 0.5, 0.5):.2f}" '
                         f'height="{h:.2f}" fill="{colour(key, j)}"/>')
        parts.append(f'<rect x="{pad_left + i * bar_w:.2f}" y="{pad_top}" width="{bar_w:.2f}" height="{plot_h}" '
                     f'fill="transparent"><title>{escape(" | ".join(tip))}</title></rect>')
    for i, anchor in ((0, "start"), (n // 2, "middle"), (n - 1, "end")) if buckets else ():
        x = pad_left + (i * bar_w if anchor == "start" else (i + 1) * bar_w if anchor == "end" else
                        i * bar_w + bar_w / 2)
        parts.append(f'<text x="{x:.1f}" y="{height - 4}" text-anchor="{anchor}" font-size="10" fill="#666">'
                     f'{buckets[i].strftime(time_format)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts) + legend(series, links))


def legend(series: dict, links: dict[str, str]) -> str:
    items = []
    for j, key in enumerate(series):
        label = format_html('<span class="swatch" style="background:{}"></span>{} ({})', colour(key, j), key,
                            _num(sum(series[key])))
        href = links.get(key)
        items.append(format_html('<a href="{}">{}</a>', href, label) if href else label)
    return mark_safe('<div class="legend">' + " ".join(items) + "</div>")


def _num(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k"
    return f"{v:.0f}" if float(v).is_integer() or v >= 10 else f"{v:.1f}"
