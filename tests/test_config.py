"""The config schema, the stage settings it feeds, and the CLI's handling of bad settings."""

import copy
import json
import subprocess
import sys

import jsonschema
import pytest
import yaml
from conftest import REPO
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from unet_pipeline import cli
from unet_pipeline.core.errors import ConfigError
from unet_pipeline.core.stage_settings import STAGES
from unet_pipeline.workflow.stage_config import PER_VOLUME, export_settings, run_settings, stage_settings

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def default_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    return config


def test_every_stage_gets_exactly_its_function_arguments():
    config = default_config()
    stages = cli._stages()
    export, export_paths = stages.pop("export")  # the workflow's export rule, with settings of its own
    assert sorted(export_settings(config)) == sorted(cli.setting_names(export, export_paths))
    assert set(stages) == set(STAGES)
    for stage, (function, positionals) in stages.items():
        shaping, run = stage_settings(config, stage, "train" if stage in PER_VOLUME else None), \
            run_settings(config, stage)
        assert not set(shaping) & set(run), stage
        assert sorted({**shaping, **run}) == sorted(cli.setting_names(function, positionals)), stage


def test_schema_fills_defaults_for_a_minimal_config():
    config = {"name": "x", "volumes": {"v": {"synthetic": {}}}}
    validate(config, str(SCHEMA))
    assert config["train"]["iterations"] == 300 and config["storage"]["chunks"] == [1, 128, 128]
    assert config["volumes"]["v"]["synthetic"] == {"shape": [16, 256, 256], "seed": 0,
                                                   "voxel_size": [50.0, 4.0, 4.0], "labels": True}
    assert config["training"] == config["validation"] == [] and config["evaluation"] is config["process"] is None


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: c["train"].update(iterations=0), "iterations"),
        (lambda c: c["model"].update(depthh=3), "depthh"),
        (lambda c: c["storage"].update(chunks=[1, 2]), "chunks"),
        (lambda c: c["volumes"]["train"].update(raw="x.tif"), "not valid under any"),  # raw or synthetic
        (lambda c: c["volumes"].update({"a.b": {"raw": "x.tif"}}), "does not match"),  # names: no dots
        (lambda c: c.update(name=".."), "does not match"),  # would write outside results_dir
        (lambda c: c.update(name="."), "does not match"),  # would write into results_dir itself
        (lambda c: c.update(results_dir="/"), "does not match"),  # the file system's root
        (lambda c: c.update(results_dir=""), "does not match"),
        (lambda c: c["training"][0].update(sections=[0]), "is too short"),
        (lambda c: c["storage"].update(shards=[1, 64, 64]), "'0.5' was expected"),  # shards need NGFF 0.5
        (lambda c: c["volumes"]["train"].update(roi={"start": [0, 0], "shape": [1, 8, 8]}), "is too short"),
        (lambda c: c["volumes"]["train"].update(roi={"start": [0, 0, 0], "shape": [0, 8, 8]}), "less than the minimum"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(change, message):
    config = copy.deepcopy(default_config())
    change(config)
    with pytest.raises(WorkflowError, match=message):
        validate(config, str(SCHEMA))


def test_a_volume_roi_and_in_place_reach_the_ingest_of_that_volume_alone():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    roi = {"start": [2, 0, 16], "shape": [8, 64, 64]}
    config["volumes"]["train"].update(roi=roi, in_place=False)
    validate(config, str(SCHEMA))
    assert {key: stage_settings(config, "ingest", "train")[key] for key in ("roi", "in_place")} == {
        "roi": roi, "in_place": False}
    others = [name for name in config["volumes"] if name != "train"]
    assert others and all(stage_settings(config, "ingest", name)["roi"] is None for name in others)


def test_readme_documents_every_config_key():
    readme = (REPO / "config" / "README.md").read_text()
    schema = yaml.safe_load(SCHEMA.read_text())

    def keys(node, prefix=""):
        for name, sub in node.get("properties", {}).items():
            yield prefix + name
            yield from keys(sub, prefix + name + ".")

    missing = [key for key in keys(schema) if f"`{key}`" not in readme]
    assert not missing, f"config/README.md does not explain {missing}"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "unet_pipeline.cli", *args], capture_output=True, text=True)


def test_cli_rejects_settings_with_unknown_or_missing_keys(tmp_path):
    result = run_cli("segment", "a", "b", "--settings", json.dumps({"threshold": 0.5, "colour": 1}))
    assert result.returncode == 2
    assert "unknown keys ['colour']" in result.stderr and "missing keys ['agglomeration', 'block'" in result.stderr


def test_cli_names_a_missing_input(tmp_path):
    config = default_config()
    shaping = stage_settings(config, "segment", "train")
    result = run_cli("segment", str(tmp_path / "nope.ome.zarr"), str(tmp_path / "out"), "--settings",
                     json.dumps(shaping), "--run", json.dumps(run_settings(config, "segment")))
    assert result.returncode == 2
    assert "nope.ome.zarr: no such OME-Zarr image" in result.stderr
    assert not (tmp_path / "out").exists()


def test_schema_itself_is_valid():
    jsonschema.Draft202012Validator.check_schema(yaml.safe_load(SCHEMA.read_text()))


def test_info_prints_provenance_of_images_checkpoints_and_metrics(tmp_path):
    import numpy as np
    import torch
    from conftest import write_image

    from unet_pipeline.nn.checkpoint import save_checkpoint
    from unet_pipeline.nn.model_config import ModelConfig
    from unet_pipeline.nn.unet import UNet
    from unet_pipeline.storage import ome_zarr

    image = write_image(tmp_path / "raw.ome.zarr", np.zeros((2, 8, 8), np.uint8), (1, 8, 8))
    ome_zarr.set_attrs(image, provenance={"stage": "ingest", "git_commit": "abc"})
    shown = json.loads(run_cli("info", str(image)).stdout)
    assert shown["shape"] == [2, 8, 8] and shown["provenance"]["stage"] == "ingest"
    assert [axis["name"] for axis in shown["axes"]] == ["z", "y", "x"]
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", UNet(ModelConfig(depth=1, base_features=2)), provenance={"stage": "train"})
    assert json.loads(run_cli("info", str(tmp_path / "m.pt")).stdout)["provenance"]["stage"] == "train"
    missing = run_cli("info", str(tmp_path / "nope.ome.zarr"))
    assert missing.returncode == 2 and "nope.ome.zarr: no such OME-Zarr image" in missing.stderr


def test_nested_command_line_overrides_get_the_schema_types(tmp_path):
    """`--config 'train={iterations: 50}'` hands every nested value over as a string; they reach the stages
    as the numbers and lists the schema expects (a real dry run, commands printed)."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--printshellcmds", "--cores", "2",
                             "--directory", str(tmp_path),
                             "--config", "train={iterations: 50, tile: 60}",
                             "segment={merge_threshold: 0.3, block: [2, 512, 512]}", "name=typed"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert '"iterations": 50,' in result.stdout and '"tile": 60,' in result.stdout
    assert '"merge_threshold": 0.3,' in result.stdout and '"block": [2, 512, 512]' in result.stdout


def test_command_line_strings_are_typed_only_where_the_schema_wants_another_type():
    from unet_pipeline.workflow.command_line_config import typed

    schema = yaml.safe_load(SCHEMA.read_text())
    given = {"name": "123", "train": {"iterations": "50", "device": "cpu"},
             "segment": {"merge_threshold": "auto", "tune": "null"}, "predict": {"tile": ["1", "64", "64"]}}
    assert typed(given, schema) == {"name": "123", "train": {"iterations": 50, "device": "cpu"},
                                    "segment": {"merge_threshold": "auto", "tune": None},
                                    "predict": {"tile": [1, 64, 64]}}
    assert typed({"train": {"iterations": "fifty"}}, schema) == {"train": {"iterations": "fifty"}}  # schema names it


def test_every_run_only_setting_comes_from_a_run_only_config_key():
    """What `--run` carries is exactly the cluster and Slurm blocks and the run-only keys of train, predict,
    segment and evaluate, each of which the workflow test changes in turn."""
    from test_workflow import RUN_ONLY_CHANGES

    from unet_pipeline.core.stage_settings import RUN_ONLY
    from unet_pipeline.workflow.stage_config import RUN_ONLY_CONFIG

    config = default_config()
    changed = {(block, key) for block, key, _ in RUN_ONLY_CHANGES}
    for block in RUN_ONLY_CONFIG:
        assert {(block, key) for key in config[block]} <= changed, block
    for stage in RUN_ONLY:
        assert {(stage, key) for key in RUN_ONLY[stage] if key in config[stage]} <= changed, stage


def test_a_user_config_gets_the_schema_defaults_not_the_demo_values(tmp_path):
    """A --configfile without sections: evaluate scores every section and training draws from every section,
    as config/README.md says (the demo config would give [12, 16] and [0, 10])."""
    user = {"name": "user", "volumes": {"v": {"synthetic": {"shape": [20, 64, 64]}}}, "training": [{"volume": "v"}],
            "validation": [{"volume": "v"}]}
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(user))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--printshellcmds", "--cores", "2",
                             "--directory", str(tmp_path), "--configfile", str(tmp_path / "user.yaml")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    prefix = "unet-pipeline --on-busy wait "
    commands = {line.split(prefix)[1].split()[0]: line for line in result.stdout.splitlines() if prefix in line}
    evaluate = json.loads(commands["evaluate"].split("--settings ")[1].split(" --run")[0].strip("'"))
    train = json.loads(commands["train"].split("--settings ")[1].split(" --run")[0].strip("'"))
    assert evaluate["sections"] is None
    assert train["training"][0]["sections"] is None and train["training"][0]["image"].endswith("v/raw.ome.zarr")
    assert train["training"][0]["intensity"].endswith("v/intensity.json")


def test_the_cli_turns_only_pipeline_errors_into_exit_2(tmp_path, monkeypatch, capsys):
    """A bad value is a one-line message with exit status 2; a bug (any other exception) keeps its traceback."""
    assert cli.main(["synth", str(tmp_path / "s"), "--shape", "16,256"]) == 2
    assert "expected three positive numbers Z,Y,X, got '16,256'" in capsys.readouterr().err

    def broken(output: str, flag: int) -> None:
        """A stage with a bug."""
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(cli, "_stages", lambda: {"ingest": (broken, ("output",))})
    with pytest.raises(ValueError, match="a bug, not bad input"):
        cli.main(["ingest", str(tmp_path / "o"), "--settings", '{"flag": 1}'])


def test_stage_settings_are_keyword_only_and_checked_on_every_call(tmp_path):
    """Every stage takes its settings by keyword, and a value outside its type or Literal is refused before any
    work, from Python as from the command line."""
    import inspect

    from unet_pipeline.stages.weights import weights

    for stage, (function, paths) in cli._stages().items():
        parameters = inspect.signature(function).parameters
        assert [name for name, p in parameters.items() if p.kind is not p.KEYWORD_ONLY] == list(paths), stage
        assert "Args:" in (function.__doc__ or ""), stage
    with pytest.raises(ConfigError, match=r'settings of weights: wrong type of mode = "4d" \(expected Literal'):
        weights(tmp_path / "labels.ome.zarr", tmp_path / "w.ome.zarr", w0=10.0, sigma=5.0, class_balance="none",
                mode="4d", tolerance=1e-3, compression={})
    assert not (tmp_path / "w.ome.zarr").exists()


def test_extension_tables_hold_what_the_schema_allows():
    """The registries the README's "Extending" section names agree with the schema's enums."""
    from unet_pipeline.distributed import cluster
    from unet_pipeline.stages import segment
    from unet_pipeline.storage import sources

    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    assert set(segment.METHODS) == set(schema["segment"]["properties"]["method"]["enum"])
    assert set(cluster.KINDS) == set(schema["cluster"]["properties"]["kind"]["enum"])
    assert list(sources.FORMATS)[-1] == "zarr"  # the catch-all stays last whatever is registered
    assert all(name in (REPO / "README.md").read_text() for name in ("`METHODS`", "`KINDS`", "`register_format("))


BAD_VOLUMES = [  # (a change of a valid config, what the error names)
    ({"training": [{"volume": "nope"}]}, "training[0].volume: no volume 'nope' in volumes (v, u)"),
    ({"validation": [{"volume": "u"}]}, "validation[0].volume: volume 'u' has no labels"),
    ({"evaluation": [{"volume": "u"}]}, "evaluation[0].volume: volume 'u' has no labels"),
    ({"process": ["v", "w"]}, "process[1]: no volume 'w' in volumes (v, u)"),
    ({"model": {"checkpoint": "m.pt"}}, "model.checkpoint is 'm.pt' and training names 1 entries"),
    ({"training": []}, "training is empty and model.checkpoint is null"),
    ({"validation": []}, "segment.merge_threshold is 'auto' but there is nothing to tune it on"),
    ({"segment": {"tune": {"volume": "x"}}}, "segment.tune.volume: no volume 'x'"),
    ({"training": [{"volume": "v", "sections": [4, 2]}]}, "training[0].sections [4, 2] of volume 'v'"),
]


@pytest.mark.parametrize("change,message", BAD_VOLUMES, ids=[m.split(":")[0] for _, m in BAD_VOLUMES])
def test_bad_volume_references_stop_before_any_work_naming_key_volume_and_file(tmp_path, change, message):
    config = {"name": "bad", "volumes": {"v": {"synthetic": {"shape": [4, 32, 32]}},
                                         "u": {"synthetic": {"shape": [4, 32, 32], "labels": False}}},
              "training": [{"volume": "v", "sections": [0, 2]}], "validation": [{"volume": "v", "sections": [2, 4]}],
              **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", "--directory",
                             str(tmp_path), "--configfile", str(path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"unet-pipeline: config error: {message}" in result.stderr and f"(in {path})" in result.stderr
    assert not (tmp_path / "results").exists()


def test_two_volumes_of_one_name_are_refused_not_merged(tmp_path):
    """YAML keeps the last of two equal keys silently; the workflow names the line of each."""
    path = tmp_path / "twice.yaml"
    path.write_text("name: twice\nvolumes:\n  a: {synthetic: {seed: 1}}\n  a: {synthetic: {seed: 2}}\n"
                    "training: [{volume: a}]\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", "--directory",
                             str(tmp_path), "--configfile", str(path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{path}: line 4: 'a' is given twice (first on line 3)" in result.stderr


def test_a_volume_ignore_label_reaches_every_stage_that_reads_its_labels():
    config = default_config()
    config["volumes"]["train"]["ignore_label"] = 255
    assert stage_settings(config, "weights", "train")["ignore_label"] == 255
    assert stage_settings(config, "evaluate", "train")["ignore_label"] == 255
    assert stage_settings(config, "segment", "train")["ignore_label"] == 255  # it tunes on train's labels
    assert stage_settings(config, "segment", "scored")["ignore_label"] is None  # it applies the tuned value
    assert stage_settings(config, "evaluate", "scored")["ignore_label"] is None
    train = stage_settings(config, "train")
    assert [entry["ignore_label"] for entry in train["training"] + train["validation"]] == [255, 255]


def test_a_missing_checkpoint_stops_before_any_work_naming_it(tmp_path):
    config = {"name": "apply", "volumes": {"v": {"synthetic": {"shape": [2, 32, 32]}}},
              "model": {"checkpoint": "missing.pt"}, "segment": {"merge_threshold": 0.5}}
    path = tmp_path / "apply.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", "--directory",
                             str(tmp_path), "--configfile", str(path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert f"model.checkpoint: no such file 'missing.pt' (relative to {tmp_path})" in result.stderr
