"""Checkpoints of a U-Net: saved with the model's own config (`ModelConfig`), so predict can rebuild the
network from the file alone; a hash of the weights alone; the device to run on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import torch

from ..core.errors import ConfigError, InputError
from .model_config import ModelConfig
from .unet import UNet


def save_checkpoint(path: str | os.PathLike, model: UNet, **extra: Any) -> None:
    """Save the model's config and weights (with `weights_sha256`, see `weights_hash`) and `extra`."""
    torch.save({"model_config": dataclasses.asdict(model.config), "state_dict": model.state_dict(),
                "weights_sha256": weights_hash(model.state_dict()), **extra}, path)


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights alone (names, dtypes, shapes and values): equal for bit-identical weights,
    whatever else the checkpoint file holds (timestamps, provenance)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def training_state(checkpoint: str | os.PathLike) -> Path:
    """The folder where the training run that writes `checkpoint` keeps its resumable state (its last and best
    saves), beside it."""
    return Path(checkpoint).parent / "state"


def read_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a checkpoint file holds, its tensors on `device`; a missing, truncated or foreign file is named."""
    with _readable(path):
        return torch.load(path, map_location=device, weights_only=True)


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> UNet:
    """Rebuild a model from a checkpoint alone, in eval mode on `device`."""
    checkpoint = read_checkpoint(path, device)
    with _readable(path):
        model = UNet(ModelConfig.from_dict(checkpoint["model_config"]))
        model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def load_weights(network: UNet, path: str | os.PathLike, key: str) -> str:
    """Load the weights of the checkpoint at `path` (named by config `key` in errors) into `network`, which must
    have the same architecture (a difference names the model keys, a weight of another shape the layer);
    returns their `weights_hash`."""
    checkpoint = read_checkpoint(path)
    with _readable(path):
        theirs, state = checkpoint["model_config"], checkpoint["state_dict"]
    ours = dataclasses.asdict(network.config)
    differs = [f"{name} ({theirs.get(name)!r} there, {value!r} here)" for name, value in ours.items()
               if theirs.get(name) != value]
    if differs:
        raise ConfigError(f"{key} {path}: its model differs from the config's model block in {', '.join(differs)}")
    mine = network.state_dict()
    wrong = [f"{name} {tuple(state[name].shape)} there, {tuple(tensor.shape)} here" for name, tensor in mine.items()
             if name in state and state[name].shape != tensor.shape]
    wrong += [f"{name} missing" for name in sorted(set(mine) - set(state))]
    wrong += [f"{name} not in the model" for name in sorted(set(state) - set(mine))]
    if wrong:
        raise InputError(f"{path}: its weights do not fit the model: {'; '.join(wrong)}")
    network.load_state_dict(state)
    return weights_hash(state)


@contextlib.contextmanager
def _readable(path: str | os.PathLike) -> Iterator[None]:
    """Turn what reading a checkpoint can raise into an InputError naming the file and what is wrong."""
    try:
        yield
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such checkpoint") from err
    except (OSError, EOFError) as err:  # a truncated, empty or unreadable file
        raise InputError(f"{path}: the checkpoint cannot be read, it is truncated or damaged ({err}); "
                         "retrain or restore it") from err
    except (KeyError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        raise InputError(f"{path}: not a checkpoint of a compatible unet-pipeline model ({err})") from err


def select_device(preferred: str = "auto") -> torch.device:
    """CUDA when asked for or available ('auto'), else CPU."""
    if preferred == "cuda" or (preferred == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was requested but torch sees no CUDA device: set the device to 'auto' "
                              "or 'cpu', or run where a GPU is visible (CUDA_VISIBLE_DEVICES)")
        return torch.device("cuda")
    return torch.device("cpu")
