"""report.html: one self-contained page with metrics, the training curve and overlays."""

from __future__ import annotations

import base64
import csv
import html
import io as stdio
import json
import os
from typing import Any

import numpy as np
from PIL import Image

from . import io
from .segment import CELL_CHANNEL, as_probability


def section_panels(raw: np.ndarray, cell_probability: np.ndarray, segmentation: np.ndarray,
                   truth: np.ndarray) -> np.ndarray:
    """One RGB strip (y, 4x, 3): raw | cell probability | segment borders on raw | errors."""
    gray = np.repeat(_to_uint8(raw)[..., None], 3, axis=-1)
    prob = np.repeat((np.clip(cell_probability, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    borders = gray.copy()
    edge = _edges(segmentation)
    borders[edge] = (255, 40, 40)
    errors = gray // 2
    predicted, actual = segmentation > 0, truth > 0
    errors[predicted & ~actual] = (255, 60, 60)  # called cell, is membrane
    errors[~predicted & actual] = (60, 120, 255)  # called membrane, is cell
    return np.concatenate([gray, prob, borders, errors], axis=1)


def weight_panels(raw: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One RGB strip: raw | cells (white) and membrane (black) | weight map (dark = 0, bright = max)."""
    gray = _to_uint8(raw)
    cells = np.where(labels > 0, 255, 0).astype(np.uint8)
    heat = (np.clip(weights / max(float(weights.max()), 1e-6), 0, 1) * 255).astype(np.uint8)
    strip = np.concatenate([gray, cells, heat], axis=1)
    return np.repeat(strip[..., None], 3, axis=-1)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (0.5, 99.5))
    return (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def _edges(segmentation: np.ndarray) -> np.ndarray:
    edge = np.zeros(segmentation.shape, dtype=bool)
    edge[:, 1:] |= segmentation[:, 1:] != segmentation[:, :-1]
    edge[1:, :] |= segmentation[1:, :] != segmentation[:-1, :]
    return edge


def png_data_uri(rgb: np.ndarray) -> str:
    buffer = stdio.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_curve_svg(iterations: list[int], losses: list[float], width: int = 640, height: int = 240) -> str:
    """An inline SVG line plot of the training loss."""
    if not losses:
        return "<p>No training log.</p>"
    x = np.asarray(iterations, dtype=float)
    y = np.asarray(losses, dtype=float)
    pad = 40
    sx = (width - 2 * pad) / max(x.max() - x.min(), 1)
    sy = (height - 2 * pad) / max(y.max() - y.min(), 1e-12)
    points = " ".join(f"{pad + (a - x.min()) * sx:.1f},{height - pad - (b - y.min()) * sy:.1f}" for a, b in zip(x, y))
    return (
        f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect width="100%" height="100%" fill="white" stroke="#ccc"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>'
        f'<text x="{pad}" y="{height - 10}" font-size="12">iteration {int(x.min())} .. {int(x.max())}</text>'
        f'<text x="{pad}" y="20" font-size="12">loss {y.max():.3g} (top) .. {y.min():.3g} (bottom)</text></svg>'
    )


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [("model (U-Net)", metrics["model"]), ("baseline: best raw threshold", metrics["baseline_raw_threshold"])]
    keys = ["pixel_error", "rand_error", "rand_split", "rand_merge"]
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{values[k]:.4f}</td>" for k in keys) + "</tr>"
        for name, values in rows
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def report(raw_path: str | os.PathLike, probabilities_path: str | os.PathLike,
           segmentation_path: str | os.PathLike, labels_path: str | os.PathLike, weights_path: str | os.PathLike,
           metrics_path: str | os.PathLike, train_log: str | os.PathLike, output: str | os.PathLike,
           sections: int) -> None:
    """Write the self-contained HTML report."""
    metrics = json.loads(open(metrics_path).read())
    with open(train_log, newline="") as handle:
        log = list(csv.DictReader(handle))
    raw, probs = io.open_image(raw_path), io.open_image(probabilities_path)
    segmentation, labels = io.open_image(segmentation_path), io.open_image(labels_path)
    first, last = metrics["sections"]
    shown = sorted(set(np.linspace(first, last - 1, num=min(sections, last - first)).round().astype(int)))
    figures = "".join(
        f'<figure><img src="{png_data_uri(section_panels(raw[z], as_probability(probs[CELL_CHANNEL, z]), segmentation[z], labels[z]))}"'
        f' alt="section {z}"/><figcaption>section {z}: raw | cell probability | segment borders | errors '
        f"(red: false cell, blue: false membrane)</figcaption></figure>"
        for z in shown
    )
    weights = io.open_image(weights_path)
    z = shown[0]
    weight_figure = (f'<figure><img src="{png_data_uri(weight_panels(raw[z], labels[z], weights[z]))}" '
                     f'alt="weight map of section {z}"/><figcaption>section {z}: raw | labels | weight map '
                     f"(max {float(weights[z].max()):.2f})</figcaption></figure>")
    curve = loss_curve_svg([int(r["iteration"]) for r in log], [float(r["loss"]) for r in log])
    provenance = html.escape(json.dumps(metrics.get("provenance", {}), indent=2))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>unet-pipeline report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style></head>
<body><h1>unet-pipeline report</h1>
<h2>Metrics on sections {first}..{last - 1}</h2>{_metrics_table(metrics)}
<h2>Training loss</h2>{curve}
<h2>Weight map</h2>{weight_figure}
<h2>Sections</h2>{figures}
<h2>Provenance</h2><pre>{provenance}</pre>
</body></html>
"""
    with io.atomic_output(output) as partial:
        partial.write_text(page)
