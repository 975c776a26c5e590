"""The HTML page of a report: one self-contained file (images inlined as PNG data).

Sections: a stage table (rows of named scores), a per-class IoU bar chart (inline SVG), notes,
and a grid of examples (image, heat map, pseudo-label, ground truth, ...).
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.files import write_text


@dataclass
class Example:
    """One row of the example grid: a caption and named H×W×3 uint8 RGB pictures."""

    caption: str
    pictures: dict[str, np.ndarray]


@dataclass
class Report:
    """Everything the page shows. ``stages``: rows of {column: value}, scores already in
    percent (floats ≥ 1 print with one decimal); ``per_class_iou``: {series name: {class name:
    IoU in [0, 1] or None}}."""

    title: str
    stages: list[dict] = field(default_factory=list)
    per_class_iou: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)  # more tables: {heading: rows}
    warnings: list[str] = field(default_factory=list)  # shown first, in a box: what went wrong and what to try


EXAMPLE_SIDE = 320  # an example picture's longer side in the page at most (its aspect kept): photos stay light


def _png_data_uri(image: np.ndarray, max_side: int = EXAMPLE_SIDE) -> str:
    """H×W×3 (or H×W) uint8 → a PNG data URI, shrunk (aspect kept) to ``max_side`` when larger."""
    picture = Image.fromarray(image)
    if max(picture.size) > max_side:
        scale = max_side / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.Resampling.BOX)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 1.0 or value == 0.0 else f"{value:.3g}"
    return html.escape("" if value is None else str(value))


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]


def bar_chart_svg(series: dict[str, dict[str, float | None]], width: int = 760, bar_height: int = 9) -> str:
    """Grouped horizontal bars: one group per class, one bar per series, IoU in percent."""
    if not series:
        return ""
    classes = list(dict.fromkeys(c for values in series.values() for c in values))
    label_width, group = 110, bar_height * len(series) + 8
    height = group * len(classes) + 30 + 18 * len(series)
    scale = (width - label_width - 50) / 100.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" font-family="sans-serif">']
    for g, name in enumerate(classes):
        y0 = 10 + g * group
        parts.append(f'<text x="{label_width - 6}" y="{y0 + group / 2}" text-anchor="end">{html.escape(name)}</text>')
        for s, (series_name, values) in enumerate(series.items()):
            value = values.get(name)
            if value is None or np.isnan(value):
                continue
            y = y0 + s * bar_height
            w = max(0.5, 100 * value * scale)
            colour = _COLOURS[s % len(_COLOURS)]
            parts.append(f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="{bar_height - 1}" fill="{colour}"/>')
            parts.append(f'<text x="{label_width + w + 3:.1f}" y="{y + bar_height - 2}" font-size="9">{100 * value:.1f}</text>')
    y = 10 + group * len(classes) + 10
    for s, series_name in enumerate(series):
        colour = _COLOURS[s % len(_COLOURS)]
        parts.append(f'<rect x="{label_width}" y="{y + 18 * s}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{label_width + 18}" y="{y + 18 * s + 10}">{html.escape(series_name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f0f0f0; }
.grid td { text-align: center; vertical-align: top; font-size: 11px; border: none; }
.grid img { image-rendering: pixelated; width: 160px; }
.warn { border: 2px solid #c0392b; background: #fdecea; padding: 0 1em; margin: 1em 0; }
"""


def render_html(report: Report) -> str:
    """The page as one HTML string."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(report.title)}</h1>"]
    if report.warnings:
        parts.append("<div class='warn'><h2>Warnings</h2><ul>"
                     + "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings) + "</ul></div>")
    if report.stages:
        parts.append("<h2>Stages</h2><p>Scores in percent, on the same images.</p>" + _table(report.stages))
    if report.per_class_iou:
        parts.append("<h2>Per-class IoU</h2>" + bar_chart_svg(report.per_class_iou))
    for heading, rows in report.tables.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>" + _table(rows))
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    if report.examples:
        names = list(dict.fromkeys(k for e in report.examples for k in e.pictures))
        head = "".join(f"<th>{html.escape(n)}</th>" for n in ["image id", *names])
        rows = []
        for example in report.examples:
            cells = "".join(
                f"<td><img src='{_png_data_uri(example.pictures[n])}'></td>" if n in example.pictures else "<td></td>"
                for n in names
            )
            rows.append(f"<tr><td>{html.escape(example.caption)}</td>{cells}</tr>")
        parts.append(f"<h2>Examples</h2><table class='grid'><tr>{head}</tr>{''.join(rows)}</table>")
    parts.append("</body></html>")
    return "".join(parts)


def write_html(path: str | os.PathLike, report: Report) -> Path:
    """Write the HTML page atomically; returns its path."""
    return write_text(path, render_html(report))
