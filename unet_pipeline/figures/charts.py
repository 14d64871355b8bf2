"""Charts of the report, drawn with matplotlib as inline SVG (no files, no pyplot state)."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.figure import Figure

WIDTH_IN, HEIGHT_IN = 7.0, 3.0  # inches; the report scales charts to the page width


def line_chart(series: dict[str, tuple[list[float], list[float]]], x_label: str, y_label: str, title: str,
               markers: bool = False) -> str:
    """An inline SVG line chart of named (x, y) series with labelled axes, ticks and a legend; a note
    instead when no series has data."""
    series = {name: (np.asarray(x, float), np.asarray(y, float)) for name, (x, y) in series.items() if len(x)}
    if not series:
        return f"<p>{title}: no data.</p>"
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), layout="constrained")
    axes = figure.subplots()
    for name, (x, y) in series.items():
        axes.plot(x, y, label=name, marker="o" if markers or len(x) < 20 else None, markersize=3, linewidth=1.2)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title, fontsize=10)
    axes.grid(True, linewidth=0.4, alpha=0.5)
    axes.legend(fontsize=8)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "unet-pipeline"}):  # text stays text;
        figure.savefig(buffer, format="svg", metadata={"Date": None})  # the same chart, the same bytes
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]  # without the XML prolog and doctype: the page holds it inline
