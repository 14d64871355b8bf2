"""Job resources from the config: one source for a stage's threads, and a placeholder shape that says so."""

from __future__ import annotations

import copy
import re

import pytest
from conftest import REPO
from test_config import default_config

from unet_pipeline.workflow import job_resources
from unet_pipeline.workflow.job_resources import PLACEHOLDER_SHAPE, stage_resources, stage_threads, volume_shape


@pytest.mark.parametrize("kind", ["local", "slurm"])
def test_a_stage_asks_slurm_for_the_threads_its_rule_runs(kind):
    config = default_config()
    config["cluster"].update(kind=kind, workers=3, threads_per_worker=2)
    config["predict"]["torch_threads"] = 2
    expected = {"predict": 12 if kind == "local" else 1, "segment": 6 if kind == "local" else 1,
                "evaluate": 6 if kind == "local" else 1, "train": config["train"]["threads"], "preprocess": 1}
    for stage, threads in expected.items():
        assert stage_threads(config, stage) == threads == stage_resources(config, stage)["cpus_per_task"], stage
    for stage in ("predict", "segment", "evaluate", "train"):  # the rules take them from the same function
        rule = (REPO / "workflow" / "rules" / f"{stage}.smk").read_text()
        assert re.search(rf'^    threads: threads_of\("{stage}"\)$', rule, re.M), stage


def test_an_unreadable_raw_gets_a_placeholder_shape_and_says_so(tmp_path, capsys):
    config = copy.deepcopy(default_config())
    config["volumes"]["scored"] = {"raw": str(tmp_path / "elsewhere.tif"), "labels": None}
    job_resources._source_shape.cache_clear()
    assert volume_shape(config, "scored") == PLACEHOLDER_SHAPE
    assert volume_shape(config, "train") == (16, 256, 256)
    message = capsys.readouterr().err
    assert "elsewhere.tif" in message and "assume a volume of 1 x 1024 x 1024" in message
