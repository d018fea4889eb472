"""Inline SVG charts for the HTML report: no script, no font, no network — text is escaped here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 520
ROW = 26
LABEL_WIDTH = 150
VALUE_WIDTH = 90


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    ci: tuple[float, float] | None = None
    highlight: bool = False


def bar_chart(
    title: str, bars: Sequence[Bar], fmt: Callable[[float], str], maximum: float | None = None
) -> str:
    """Horizontal bars with their 95% interval as a whisker; ``maximum`` fixes the scale (1 for rates)."""
    if not bars:
        return ""
    top = maximum or max([b.value for b in bars] + [b.ci[1] for b in bars if b.ci] + [1e-9])
    plot = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    height = ROW * len(bars) + 30
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<text x="0" y="14" class="chart-title">{escape(title)}</text>',
    ]
    for index, bar in enumerate(bars):
        y = 24 + index * ROW
        length = max(0.0, min(1.0, bar.value / top)) * plot
        css = "bar hl" if bar.highlight else "bar"
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 14}" text-anchor="end" class="label">{escape(_cut(bar.label))}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{ROW - 8}" class="{css}">'
            f"<title>{escape(bar.label)}: {escape(fmt(bar.value))}</title></rect>"
        )
        if bar.ci is not None:
            low = LABEL_WIDTH + max(0.0, min(1.0, bar.ci[0] / top)) * plot
            high = LABEL_WIDTH + max(0.0, min(1.0, bar.ci[1] / top)) * plot
            mid = y + ROW / 2 - 1
            parts.append(
                f'<path d="M{low:.1f} {mid - 5}v10M{low:.1f} {mid}H{high:.1f}M{high:.1f} {mid - 5}v10" class="ci"/>'
            )
        parts.append(
            f'<text x="{WIDTH - VALUE_WIDTH + 6}" y="{y + 14}" class="value">{escape(fmt(bar.value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, values: Sequence[float], fmt: Callable[[float], str], bins: int = 10) -> str:
    """Counts of values in equal-width bins, as vertical bars."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / span * bins))] += 1
    height, plot_h, left = 170, 120, 30
    step = (WIDTH - left - 10) / bins
    tallest = max(counts)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<text x="0" y="14" class="chart-title">{escape(title)}</text>',
    ]
    for index, count in enumerate(counts):
        h = count / tallest * plot_h
        x = left + index * step
        start = low + span * index / bins
        end = low + span * (index + 1) / bins
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{20 + plot_h - h:.1f}" width="{step - 2:.1f}" height="{h:.1f}" class="bar">'
            f"<title>{escape(fmt(start))} to {escape(fmt(end))}: {count}</title></rect>"
        )
    parts.append(f'<text x="{left}" y="{height - 12}" class="value">{escape(fmt(low))}</text>')
    parts.append(
        f'<text x="{WIDTH - 10}" y="{height - 12}" text-anchor="end" class="value">{escape(fmt(high))}</text>'
    )
    parts.append(
        f'<text x="0" y="{20 + plot_h}" class="value">0</text><text x="0" y="30" class="value">{tallest}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _cut(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
