"""Where a run's outputs go: one folder per volume, one for the model, one report.

    <results_dir>/<name>/volumes/<volume>/{raw,labels,weights,probabilities,segmentation}.ome.zarr
    <results_dir>/<name>/volumes/<volume>/intensity.json: the statistics that normalise its raw
    <results_dir>/<name>/volumes/<volume>/metrics.json (and metrics_sections.csv), where it has labels
    <results_dir>/<name>/volumes/<volume>/synthetic/{raw,labels}.ome.zarr, for a synthetic volume
    <results_dir>/<name>/model/checkpoint.pt, train_log.csv
    <results_dir>/<name>/report.html, logs/
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Layout:
    """The output paths of one run (relative to the working directory, as Snakemake sees them)."""

    root: str  # <results_dir>/<name>

    @classmethod
    def of(cls, config: dict[str, Any]) -> "Layout":
        return cls(f"{config['results_dir']}/{config['name']}")

    def result(self, name: str) -> str:
        """A run-wide output, e.g. 'report.html'."""
        return f"{self.root}/{name}"

    def volume(self, volume: str, name: str) -> str:
        """An output of one volume, e.g. volume('isbi', 'segmentation.ome.zarr')."""
        return f"{self.root}/volumes/{volume}/{name}"

    def model(self, name: str) -> str:
        """A file of the model trained in this run, e.g. 'checkpoint.pt'."""
        return f"{self.root}/model/{name}"

    def log(self, rule: str, volume: str | None = None) -> str:
        return f"{self.root}/logs/{rule}.log" if volume is None else f"{self.root}/logs/{volume}/{rule}.log"
