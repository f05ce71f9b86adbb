"""Horizontal bar charts as inline SVG, drawn from the report's published counts.

Hand-built rather than matplotlib: every figure of the report is a bar chart of a few
labelled counts, some of them withheld ("<5" or "withheld", which no plotting library draws);
twenty lines of SVG give real text (selectable, read by screen readers, no embedded font paths), a
title and description for assistive technology, a few kilobytes per chart and no
dependency of 40 MB.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 720
ROW = 24
BAR = 16
VALUE_SPACE = 120
MAX_LABEL_CHARS = 44
CHAR_WIDTH = 7.0  # of the 12 px sans-serif labels, on average


class Secondary:
    """Stands, on the page, for a count withheld only because, published beside the totals it
    belongs to, it would give a smaller one away: it may be k or more, so it is not "<k"."""

    def __bool__(self) -> bool:
        return False


SECONDARY = Secondary()


def count_text(value: int | Secondary | None, k: int) -> str:
    """A published count with thousands separators; "<k" where it is withheld for being under
    k, "withheld" where it is withheld to protect another."""
    if isinstance(value, Secondary):
        return "withheld"
    return f"<{k}" if value is None else f"{value:,}"


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[:MAX_LABEL_CHARS - 1] + "…"


def bar_chart(chart_id: str, title: str, rows: Sequence[tuple[str, int | Secondary | None]],
              k: int, counts_what: str) -> Markup:
    """One bar per (label, count); a withheld count is written "<k" (under k: None) or
    "withheld" (``SECONDARY``), with no bar."""
    label_width = min(MAX_LABEL_CHARS, max((len(_short(lb)) for lb, _ in rows), default=4))
    left = int(label_width * CHAR_WIDTH) + 16
    span = WIDTH - left - VALUE_SPACE
    largest = max((v for _, v in rows if isinstance(v, int) and v), default=1)
    height = ROW * len(rows) + 8
    summary = "; ".join(f"{label}: {count_text(value, k)}" for label, value in rows)
    parts = [
        f'<svg class="chart" id="{chart_id}" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" aria-labelledby="{chart_id}-t {chart_id}-d" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(counts_what)}: {escape(summary or "none")}</desc>',
    ]
    for i, (label, value) in enumerate(rows):
        y = 4 + i * ROW
        middle = y + ROW / 2
        parts.append(f'<g><title>{escape(label)}: {escape(count_text(value, k))}</title>')
        parts.append(f'<text class="label" x="{left - 8}" y="{middle:.1f}" '
                     f'text-anchor="end" dominant-baseline="middle">{escape(_short(label))}'
                     '</text>')
        if value is None:
            parts.append(f'<text class="withheld" x="{left + 4}" y="{middle:.1f}" '
                         f'dominant-baseline="middle">{escape(count_text(value, k))} '
                         '(withheld)</text>')
        elif isinstance(value, Secondary):
            parts.append(f'<text class="withheld secondary" x="{left + 4}" y="{middle:.1f}" '
                         'dominant-baseline="middle">withheld (see the end of the page)</text>')
        else:
            width = span * value / largest if largest else 0
            if value:
                width = max(width, 1.5)
            parts.append(f'<rect class="bar" x="{left}" y="{y + (ROW - BAR) / 2:.1f}" '
                         f'width="{width:.1f}" height="{BAR}"/>')
            parts.append(f'<text class="value" x="{left + width + 6:.1f}" y="{middle:.1f}" '
                         f'dominant-baseline="middle">{value:,}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
