"""report.html: one self-contained page with metrics, the training curve and overlays."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from typing import Any

import numpy as np
from PIL import Image

from ..core.probabilities import CELL_CHANNEL, as_probability
from ..core.stage_settings import checked_stage
from ..figures.charts import line_chart
from ..segmentation.cells import cell_mask
from ..storage import ome_zarr, outputs
from ..storage.tables import SECTION_FIELDS, sections_table_path


def section_panels(raw: np.ndarray, cell_probability: np.ndarray, segmentation: np.ndarray,
                   truth: np.ndarray, threshold: float) -> np.ndarray:
    """One RGB strip (y, 4x, 3): raw | cell probability | segment borders on raw | pixel errors of the cell
    probability at `threshold` (what the pixel error counts)."""
    gray = np.repeat(_to_uint8(raw)[..., None], 3, axis=-1)
    prob = np.repeat((np.clip(cell_probability, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    borders = gray.copy()
    edge = _edges(segmentation)
    borders[edge] = (255, 40, 40)
    errors = gray // 2
    predicted, actual = cell_probability > threshold, cell_mask(truth)  # the classes the pixel error compares
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
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    head = "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in keys)  # spaces let headers wrap
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(k))}</td>" for k in keys) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("" if value is None else str(value))


METRIC_KEYS = ["pixel_error", "rand_error", "rand_split", "rand_merge", "info_error", "variation_of_information",
               "warping_error", "v_rand_thinned", "rand_error_best_threshold", "membrane_dice"]


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [{"": "model (U-Net)", **metrics["model"]}]
    if "baseline_raw_threshold" in metrics:
        rows.append({"": "baseline: best raw threshold", **metrics["baseline_raw_threshold"]})
    return _table(rows, ["", *[k for k in METRIC_KEYS if k in metrics["model"]]])


@checked_stage
def report(raw_path: str | os.PathLike, probabilities_path: str | os.PathLike,
           segmentation_path: str | os.PathLike, labels_path: str | os.PathLike, weights_path: str | os.PathLike,
           metrics_path: str | os.PathLike, train_log_path: str | os.PathLike, output: str | os.PathLike, *,
           sections: int, config: dict[str, Any]) -> None:
    """Write the self-contained HTML report.

    Args:
        sections: how many of the evaluated sections to show.
        config: the config to show (without what only shapes runs).
    """
    metrics = json.loads(open(metrics_path).read())
    with open(train_log_path, newline="") as handle:
        log = list(csv.DictReader(handle))
    with open(sections_table_path(metrics_path), newline="") as handle:
        per_section = [{k: float(v) if k != "section" and v else v for k, v in row.items()}
                       for row in csv.DictReader(handle)]
    first, last = metrics["sections"]
    shown = [int(z) for z in sorted(set(np.linspace(first, last - 1, num=min(sections, last - first)).round()))]
    # open what is drawn: the chunks of the shown sections are checked, not every chunk of five volumes
    raw, probs = ome_zarr.open_input(raw_path, shown), ome_zarr.open_input(probabilities_path, shown)
    segmentation, labels = ome_zarr.open_input(segmentation_path, shown), ome_zarr.open_input(labels_path, shown)
    weights = ome_zarr.open_input(weights_path, shown[:1])
    threshold = metrics["threshold"]
    def panels(z: int) -> str:
        cell = as_probability(probs[CELL_CHANNEL, z])
        return png_data_uri(section_panels(raw[z], cell, segmentation[z], labels[z], threshold))

    figures = "".join(
        f'<figure><img src="{panels(z)}" alt="section {z}"/>'
        f"<figcaption>section {z}: raw | cell probability | segment borders | pixel errors "
        f"at cell probability {threshold} (red: false cell, blue: false membrane)</figcaption></figure>"
        for z in shown
    )
    z = shown[0]
    weight_figure = (f'<figure><img src="{png_data_uri(weight_panels(raw[z], labels[z], weights[z]))}" '
                     f'alt="weight map of section {z}"/><figcaption>section {z}: raw | labels | weight map '
                     f"(max {float(weights[z].max()):.2f})</figcaption></figure>")
    iterations = [int(r["iteration"]) for r in log]
    validated = [r for r in log if r.get("val_rand_error")]
    checked = [int(r["iteration"]) for r in validated]
    training = line_chart({"training loss": (iterations, [float(r["loss"]) for r in log]),
                           "validation loss": (checked, [float(r["val_loss"]) for r in validated])},
                          "iteration", "weighted cross-entropy", "Loss")
    validation = line_chart({"pixel error": (checked, [float(r["val_pixel_error"]) for r in validated]),
                             "Rand error": (checked, [float(r["val_rand_error"]) for r in validated])},
                            "iteration", "error (fraction, 0 = perfect)", "Validation errors")
    sweep = metrics.get("sweep", [])
    sweep_plot = line_chart({"V_Rand": ([p["threshold"] for p in sweep], [p["v_rand"] for p in sweep]),
                             "V_Info": ([p["threshold"] for p in sweep], [p["v_info"] for p in sweep])},
                            "cell-probability threshold", "score (1 = perfect)",
                            f"Foreground-restricted scores of threshold + components, sections {first}..{last - 1}",
                            markers=True)
    provenance = {name: ome_zarr.image_attrs(path).get("provenance", {}) for name, path in
                  (("probabilities", probabilities_path), ("segmentation", segmentation_path))}
    provenance["metrics"] = metrics.get("provenance", {})
    name = html.escape(str(config.get("name", "")))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>unet-pipeline report: {name}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;margin:1em 0;max-width:100%;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{overflow-wrap:anywhere}}
img,svg{{max-width:100%;height:auto}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>unet-pipeline report: {name}</h1>
<h2>Metrics on sections {first}..{last - 1} (pooled)</h2>{_metrics_table(metrics)}
<h3>Per section</h3>{_table(per_section, [k for k in SECTION_FIELDS if per_section and k in per_section[0]])}
<h3>Threshold sweep</h3>{sweep_plot}
<h2>Training</h2>{training}{validation}
<h2>Weight map</h2>{weight_figure}
<h2>Sections</h2>{figures}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
<h2>Provenance</h2><pre>{html.escape(json.dumps(provenance, indent=2))}</pre>
</body></html>
"""
    with outputs.atomic_output(output) as partial:
        partial.write_text(page)
