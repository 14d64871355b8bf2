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
from ..storage import ome_zarr, outputs, provenance
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


def segment_panels(raw: np.ndarray, cell_probability: np.ndarray, segmentation: np.ndarray) -> np.ndarray:
    """One RGB strip (y, 4x, 3) of a section without labels: raw | cell probability | segment borders on raw |
    segments in random colours (0, the boundary, black)."""
    gray = np.repeat(_to_uint8(raw)[..., None], 3, axis=-1)
    prob = np.repeat((np.clip(cell_probability, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    borders = gray.copy()
    borders[_edges(segmentation)] = (255, 40, 40)
    return np.concatenate([gray, prob, borders, random_colours(segmentation)], axis=1)


def random_colours(segmentation: np.ndarray) -> np.ndarray:
    """Each id its own colour (a hash of the id: the same id is the same colour in every section), 0 black."""
    ids = segmentation.astype(np.uint64)
    channels = [((ids * np.uint64(m)) >> np.uint64(7)) % np.uint64(200) + np.uint64(55)
                for m in (2654435761, 2246822519, 3266489917)]
    colours = np.stack(channels, axis=-1).astype(np.uint8)
    colours[segmentation == 0] = 0
    return colours


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


def _shown(first: int, last: int, count: int) -> list[int]:
    """`count` sections spread evenly over [first, last)."""
    return [int(z) for z in sorted(set(np.linspace(first, last - 1, num=min(count, last - first)).round()))]


def _read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _scored_section(volume: dict[str, Any], count: int) -> tuple[str, list[int], float]:
    """A scored volume's metrics (pooled and per section, its threshold sweep), the sections to show and the
    threshold its pixel errors are drawn at."""
    metrics = json.loads(open(volume["metrics"]).read())
    per_section = [{k: float(v) if k != "section" and v else v for k, v in row.items()}
                   for row in _read_rows(sections_table_path(volume["metrics"]))]
    first, last = metrics["sections"]
    sweep = metrics.get("sweep", [])
    sweep_plot = line_chart({"V_Rand": ([p["threshold"] for p in sweep], [p["v_rand"] for p in sweep]),
                             "V_Info": ([p["threshold"] for p in sweep], [p["v_info"] for p in sweep])},
                            "cell-probability threshold", "score (1 = perfect)",
                            f"{volume['volume']}: foreground-restricted scores of threshold + components, "
                            f"sections {first}..{last - 1}", markers=True)
    name = html.escape(volume["volume"])
    text = (f"<h3>{name}: metrics on sections {first}..{last - 1} (pooled)</h3>{_metrics_table(metrics)}"
            f"<h4>Per section</h4>"
            f"{_table(per_section, [k for k in SECTION_FIELDS if per_section and k in per_section[0]])}"
            f"<h4>Threshold sweep</h4>{sweep_plot}")
    return text, _shown(first, last, count), metrics["threshold"]


def _volume_figures(volume: dict[str, Any], shown: list[int], threshold: float | None) -> str:
    """The section strips of a volume: with its pixel errors where it is scored, its segments in random
    colours where it is not. Only the chunks of the shown sections are opened and checked."""
    raw, probs = ome_zarr.open_input(volume["raw"], shown), ome_zarr.open_input(volume["probabilities"], shown)
    segmentation = ome_zarr.open_input(volume["segmentation"], shown)
    labels = ome_zarr.open_input(volume["labels"], shown) if threshold is not None else None
    name = html.escape(volume["volume"])
    figures = []
    for z in shown:
        cell = as_probability(probs[CELL_CHANNEL, z])
        if labels is not None:
            strip = section_panels(raw[z], cell, segmentation[z], labels[z], threshold)
            caption = (f"raw | cell probability | segment borders | pixel errors at cell probability {threshold} "
                       "(red: false cell, blue: false membrane)")
        else:
            strip, caption = segment_panels(raw[z], cell, segmentation[z]), \
                "raw | cell probability | segment borders | segments (random colours)"
        figures.append(f'<figure><img src="{png_data_uri(strip)}" alt="{name} section {z}"/>'
                       f"<figcaption>{name}, section {z}: {caption}</figcaption></figure>")
    return "".join(figures)


def _training(train_log: str | None, checkpoint: Any) -> str:
    """The loss and validation curves of the training run, or where the model came from."""
    if train_log is None:
        return f"<p>No training in this run: the model is the checkpoint {html.escape(str(checkpoint))}.</p>"
    log = _read_rows(train_log)
    iterations = [int(r["iteration"]) for r in log]
    validated = [r for r in log if r.get("val_rand_error")]
    checked = [int(r["iteration"]) for r in validated]
    training = line_chart({"training loss": (iterations, [float(r["loss"]) for r in log]),
                           "validation loss": (checked, [float(r["val_loss"]) for r in validated])},
                          "iteration", "weighted cross-entropy", "Loss")
    per_volume = {f"Rand error, {key.removeprefix('val_rand_error_')}": (checked, [float(r[key]) for r in validated])
                  for key in (log[0] if log else {}) if key.startswith("val_rand_error_")}  # several volumes
    validation = line_chart({"pixel error": (checked, [float(r["val_pixel_error"]) for r in validated]),
                             "Rand error": (checked, [float(r["val_rand_error"]) for r in validated]), **per_volume},
                            "iteration", "error (fraction, 0 = perfect)", "Validation errors (pooled over volumes)")
    return training + validation


def _tuning(tuned: str | None, volumes: list[dict[str, Any]]) -> str:
    """The merge-threshold tuning curve that chose every segmentation's threshold (that of `tuned`, the
    segmentation of one of `volumes`)."""
    if tuned is None:
        return "<p>The merge threshold was set, not tuned.</p>"
    tuning = provenance.recorded_tuning(tuned)
    curve = tuning["curve"]
    first, last = tuning["tune_sections"]
    chosen = tuning["merge_threshold"]
    chart = line_chart({"Rand error": ([p["merge_threshold"] for p in curve], [p["rand_error"] for p in curve]),
                        "information error": ([p["merge_threshold"] for p in curve],
                                              [p["info_error"] for p in curve])},
                       "merge threshold", "error (0 = perfect)",
                       f"Merge threshold tuning on sections {first}..{last - 1} (chosen: {chosen})", markers=True)
    where = html.escape(next(volume["volume"] for volume in volumes if volume["segmentation"] == tuned))
    return f"<p>Chosen on volume {where}, applied to every volume: merge threshold {chosen}.</p>{chart}"


def _summary(scored: list[tuple[str, dict[str, Any]]]) -> str:
    rows = [{"volume": name, "sections": f"{m['sections'][0]}..{m['sections'][1] - 1}", **m["model"]}
            for name, m in scored]
    return _table(rows, ["volume", "sections", *[k for k in METRIC_KEYS if rows and k in rows[0]]])


@checked_stage
def report(output: str | os.PathLike, *, volumes: list[dict[str, Any]], train_log: str | None, tuned: str | None,
           sections: int, config: dict[str, Any]) -> None:
    """Write the self-contained HTML report of every processed volume.

    Args:
        volumes: per volume, a dict of volume (its name), raw, probabilities and
            segmentation (paths), metrics (where it is scored, else None),
            weights (the weight map where it is trained on, else None) and
            labels (where it is scored or trained on, else None).
        train_log: the training log; None when the model came from a checkpoint.
        tuned: the segmentation whose merge threshold was tuned (its curve is shown); None: not tuned.
        sections: how many sections of each volume to show (of the evaluated ones where it is scored).
        config: the config to show (without what only shapes runs).
    """
    scored_text, figures, scored = [], [], []
    for volume in volumes:
        if volume["metrics"] is not None:
            text, shown, threshold = _scored_section(volume, sections)
            scored_text.append(text)
            scored.append((volume["volume"], json.loads(open(volume["metrics"]).read())))
        else:
            depth = ome_zarr.open_image(volume["raw"]).shape[0]
            shown, threshold = _shown(0, depth, sections), None
        figures.append(f"<h3>{html.escape(volume['volume'])}</h3>{_volume_figures(volume, shown, threshold)}")
    weighted = next((volume for volume in volumes if volume["weights"] is not None), None)
    weight_figure = _weight_figure(weighted) if weighted else ""
    made_by = {volume["volume"]: {kind: ome_zarr.image_attrs(volume[kind]).get("provenance", {})
                                     for kind in ("probabilities", "segmentation")} for volume in volumes}
    name = html.escape(str(config.get("name", "")))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>unet-pipeline report: {name}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;margin:1em 0;max-width:100%;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{overflow-wrap:anywhere}}
img,svg{{max-width:100%;height:auto}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>unet-pipeline report: {name}</h1>
<p>Volumes: {html.escape(", ".join(v["volume"] for v in volumes))}; scored: {len(scored)}.</p>
<h2>Metrics</h2>{_summary(scored) if scored else "<p>No volume has labels to score.</p>"}{"".join(scored_text)}
<h2>Merge threshold</h2>{_tuning(tuned, volumes)}
<h2>Training</h2>{_training(train_log, config.get("model", {}).get("checkpoint"))}
{f"<h2>Weight map</h2>{weight_figure}" if weight_figure else ""}
<h2>Sections</h2>{"".join(figures)}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
<h2>Provenance</h2><pre>{html.escape(json.dumps(made_by, indent=2))}</pre>
</body></html>
"""
    with outputs.atomic_output(output) as partial:
        partial.write_text(page)


def _weight_figure(volume: dict[str, Any]) -> str:
    """The weight map of one section of a training volume, beside its raw and labels."""
    weights = ome_zarr.open_image(volume["weights"])
    z = weights.shape[0] // 2
    raw = ome_zarr.open_input(volume["raw"], [z])
    labels, weights = ome_zarr.open_input(volume["labels"], [z]), ome_zarr.open_input(volume["weights"], [z])
    name = html.escape(volume["volume"])
    return (f'<figure><img src="{png_data_uri(weight_panels(raw[z], labels[z], weights[z]))}" '
            f'alt="weight map of {name} section {z}"/><figcaption>{name}, '
            f"section {z}: raw | labels | weight map (max {float(weights[z].max()):.2f})</figcaption></figure>")
