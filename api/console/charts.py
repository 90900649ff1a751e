"""Charts drawn on the server as SVG (no script, no style attribute: the console's CSP allows neither):
a bar chart of counts per hour, and latency percentiles per hour as lines."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 200
LEFT, BOTTOM, TOP = 44, 24, 12  # room for the scale's numbers, the hours, and the top number
COLOURS = ("#0b5cad", "#cf222e", "#1a7f37")


def _nice_top(value: float) -> float:
    """The scale's top: 1, 2 or 5 times a power of ten, at least `value`."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value * 10:
        step /= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= value:
            return step * factor
    return step * 10


def _frame(labels: Sequence[str], top: float, unit: str, title: str) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        value = top * fraction
        shown = f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#d0d7de"/>')
        parts.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#57606a">'
            f"{escape(shown)}{escape(unit)}</text>"
        )
    slot = plot_w / max(1, len(labels))
    for i, label in enumerate(labels):
        if i % 3 == 0:
            x = LEFT + slot * (i + 0.5)
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="11" fill="#57606a">'
                f"{escape(label)}</text>"
            )
    return parts


def bar_chart(values: Sequence[float], labels: Sequence[str], *, title: str, unit: str = "") -> Markup:
    top = _nice_top(max(values, default=0))
    parts = _frame(labels, top, unit, title)
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(values))
    for i, value in enumerate(values):
        height = plot_h * value / top
        x = LEFT + slot * i + slot * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{TOP + plot_h - height:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{height:.1f}" fill="{COLOURS[0]}"><title>{escape(labels[i])}: {value:g}</title></rect>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value above is a number or escaped


def line_chart(
    series: dict[str, Sequence[float | None]], labels: Sequence[str], *, title: str, unit: str = ""
) -> Markup:
    """One line per series (None: no point that hour), with a legend."""
    highest = max((v for values in series.values() for v in values if v is not None), default=0)
    top = _nice_top(highest)
    parts = _frame(labels, top, unit, title)
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(labels))
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = [
            (LEFT + slot * (i + 0.5), TOP + plot_h * (1 - value / top))
            for i, value in enumerate(values)
            if value is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
        parts.append(
            f'<text x="{LEFT + 8 + 90 * n}" y="{TOP + 10}" font-size="12" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value above is a number or escaped
