"""`unet-pipeline <stage>`: one subcommand per pipeline stage.

Each stage takes its input and output paths as arguments and its settings as
JSON objects whose keys are the stage function's keyword arguments: those
that shape the output in `--settings`, those that only shape the run
(threads, device, cluster, timeouts) in `--run`; every key in one of the two.
The Snakemake rules build both from the config (see `workflow.stage_config`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .core.errors import ConfigError, PipelineError, storage_error

VERIFY_HELP = ("Decode every chunk of an image's level 0 again and compare it with the hashes its writer "
               "recorded (content.json); for a checkpoint, hash its weights again. With OTHER, also say whether "
               "the two hold identical values. Exit status: 0 intact (and identical), 1 intact but different, "
               "2 missing, damaged or changed chunks.")


def _stages() -> dict[str, tuple[Callable[..., Any], tuple[str, ...]]]:
    """stage -> (function, its path arguments in order). Imported lazily: torch is slow to load."""
    from .stages.evaluate import evaluate
    from .stages.ingest import ingest
    from .stages.predict import predict
    from .stages.preprocess import preprocess
    from .stages.report import report
    from .stages.segment import segment
    from .stages.train import train
    from .stages.weights import weights
    from .zoo.export import export

    return {
        "ingest": (ingest, ("kind", "source", "output")),
        "preprocess": (preprocess, ("raw_path", "output")),
        "weights": (weights, ("labels_path", "output")),
        "train": (train, ("checkpoint_path", "train_log_path")),
        "predict": (predict, ("image_path", "checkpoint_path", "output")),
        "segment": (segment, ("probabilities_path", "output")),
        "evaluate": (evaluate, ("segmentation_path", "probabilities_path", "labels_path", "output")),
        "report": (report, ("output",)),
        "export": (export, ("checkpoint", "output")),
    }


def setting_names(function: Callable[..., Any], paths: Sequence[str]) -> list[str]:
    """The keys a stage's --settings object must have: its keyword arguments beyond the paths."""
    return [name for name in inspect.signature(function).parameters if name not in paths]


def _json_object(text: str, option: str, stage: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{option} for {stage} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ConfigError(f"{option} for {stage} must be a JSON object")
    return value


def _parse_settings(text: str, run_text: str, stage: str, expected: list[str]) -> dict[str, Any]:
    """The keyword arguments of a stage from its --settings and --run objects (each key in exactly one)."""
    settings, run = _json_object(text, "--settings", stage), _json_object(run_text, "--run", stage)
    both = set(settings) & set(run)
    if both:
        raise ConfigError(f"--settings and --run for {stage} both set {sorted(both)}")
    given = {**settings, **run}
    missing, unknown = set(expected) - set(given), set(given) - set(expected)
    if missing or unknown:
        raise ConfigError(f"--settings and --run for {stage}: missing keys {sorted(missing)}, unknown keys "
                          f"{sorted(unknown)}; expected exactly {expected}")
    return given


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unet-pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--on-busy", choices=["refuse", "wait"], default="refuse",
                        help="when another live run is writing the same output: refuse at once (default) or "
                             "wait for it and take over (what the Snakemake rules do)")
    sub = parser.add_subparsers(dest="stage", required=True)
    synth = sub.add_parser("synth", help="write a synthetic EM-like volume (raw + labels) as OME-Zarr")
    synth.add_argument("output", help="folder that receives raw.ome.zarr and labels.ome.zarr")
    synth.add_argument("--shape", default="16,256,256", help="Z,Y,X (default %(default)s)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--chunks", default="1,256,256", help="Z,Y,X chunk shape (default %(default)s)")
    synth.add_argument("--voxel-size", default="50,4,4", help="Z,Y,X in nanometres (default %(default)s)")
    synth.add_argument("--compression", default="{}",
                       help="JSON object as the config's storage.compression (keys left out: its defaults)")
    info = sub.add_parser("info", help="print what made an output: its provenance and, for images, shape and axes")
    info.add_argument("path", help="an OME-Zarr image, a checkpoint (.pt) or metrics.json")
    verify = sub.add_parser("verify", help="check an output against its recorded hashes, and whether two are identical",
                            description=VERIFY_HELP)
    verify.add_argument("path", help="an OME-Zarr image this pipeline wrote, or a checkpoint (.pt)")
    verify.add_argument("other", nargs="?", help="a second output of the same kind: are the two identical?")
    for stage, (function, paths) in _stages().items():
        names = setting_names(function, paths)
        doc = (function.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(stage, help=doc, description=f"{doc}\n\n--settings keys: {', '.join(names)}")
        for path in paths:
            command.add_argument(path, **({"choices": ["raw", "labels", "mask"]} if path == "kind" else {}))
        command.add_argument("--settings", required=True, help="JSON object of the settings that shape the output")
        command.add_argument("--run", default="{}", help="JSON object of the settings that only shape the run "
                             f"(every key of {', '.join(names)} is in one of the two)")
    return parser


def _synth(args: argparse.Namespace) -> None:
    from .stages.synth import synthetic_volume
    from .storage import chunk_hashes, ome_zarr, outputs, pyramid_writer

    shape, chunks, voxel = (tuple(_numbers(text, kind)) for text, kind in
                            ((args.shape, int), (args.chunks, int), (args.voxel_size, float)))
    raw, labels = synthetic_volume(shape, args.seed)
    compression = {**ome_zarr.DEFAULT_COMPRESSION, **_json_object(args.compression, "--compression", "synth")}
    for name, volume in (("raw", raw), ("labels", labels)):
        with outputs.atomic_output(Path(args.output) / f"{name}.ome.zarr") as partial:
            array = ome_zarr.create_image(partial, shape, volume.dtype, chunks, compression, voxel, "nanometer", name,
                                          labels=name == "labels")
            array[:] = volume
            pyramid_writer.write_pyramid(partial)
            digest = chunk_hashes.write_manifest(partial, chunk_hashes.chunk_hashes(volume, (0, 0, 0), array.chunks),
                                                 array)
            ome_zarr.set_attrs(partial, synthetic={"shape": list(shape), "seed": args.seed, "version": __version__},
                               provenance={"content_sha256": digest})


def _info(path: str) -> None:
    """Print an output's provenance (and an image's shape, dtype, chunks, axes and scale) as JSON."""
    from .storage import ome_zarr

    target = Path(path)
    if target.suffix == ".pt":
        import torch

        checkpoint = torch.load(target, map_location="cpu", weights_only=True)
        summary = {"model_config": checkpoint["model_config"], "weights_sha256": checkpoint.get("weights_sha256"),
                   "provenance": checkpoint.get("provenance")}
    elif target.suffix == ".zip":
        from .zoo.package import summary as package_summary

        summary = package_summary(target)
    elif target.suffix == ".json":
        summary = {"provenance": json.loads(target.read_text()).get("provenance")}
    else:
        array = ome_zarr.open_image(target)
        attrs = ome_zarr.image_attrs(target)
        multiscale = attrs["multiscales"][0]
        summary = {"shape": list(array.shape), "dtype": str(array.dtype), "chunks": list(array.chunks),
                   "axes": multiscale["axes"], "datasets": multiscale["datasets"],
                   "provenance": attrs.get("provenance")}
    print(json.dumps(summary, indent=2, default=str))


def _numbers(text: str, kind: type) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",")]
    except ValueError as err:
        raise ConfigError(f"expected three comma-separated numbers like 16,256,256, got {text!r}") from err
    if len(values) != 3 or min(values) <= 0:
        raise ConfigError(f"expected three positive numbers Z,Y,X, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .storage.outputs import set_on_busy

    set_on_busy(args.on_busy)
    try:
        if args.stage == "synth":
            _synth(args)
        elif args.stage == "info":
            _info(args.path)
        elif args.stage == "verify":
            from .stages.verify import verify

            return verify(args.path, args.other)
        else:
            function, paths = _stages()[args.stage]
            settings = _parse_settings(args.settings, args.run, args.stage, setting_names(function, paths))
            function(*(getattr(args, path) for path in paths), **settings)
    except PipelineError as err:  # the user can act on these; anything else is a bug and keeps its traceback
        print(f"unet-pipeline {args.stage}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        output = getattr(args, "output", None) or getattr(args, "checkpoint_path", None)
        if (storage := storage_error(err, output)) is None:
            raise
        print(f"unet-pipeline {args.stage}: error: {storage.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
