"""The volumes of a run and what each one is for, checked against each other before any work.

A run names its volumes (`volumes:`) and says which of them (and which
sections) the model trains on (`training:`), validates on (`validation:`),
which are scored (`evaluation:`) and which are predicted and segmented
(`process:`). `Plan` is that config read once, with every cross-reference
checked: an entry naming an unknown volume, a scored volume without labels,
a checkpoint given while training is asked for, stop here with the key,
the volume and the config file named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from ..core.errors import ConfigError

Sections = tuple[int, int] | None  # [first, last) sections; None: the whole volume


@dataclass(frozen=True)
class Entry:
    """A volume (and sections) named by `training`, `validation`, `evaluation` or `segment.tune`."""

    volume: str
    sections: Sections = None
    weight: float | None = None  # training: the share of tiles drawn from it; None: by its voxels

    @classmethod
    def of(cls, entry: dict[str, Any]) -> "Entry":
        sections = entry.get("sections")
        return cls(entry["volume"], tuple(sections) if sections else None, entry.get("weight"))

    def as_settings(self) -> dict[str, Any]:
        return {"volume": self.volume, "sections": list(self.sections) if self.sections else None,
                "weight": self.weight}


@dataclass(frozen=True)
class Plan:
    """What a run does with each of its volumes."""

    volumes: dict[str, dict[str, Any]]
    training: tuple[Entry, ...]
    validation: tuple[Entry, ...]
    evaluation: tuple[Entry, ...]  # one per scored volume
    processed: tuple[str, ...]  # predicted and segmented, in config order
    tune: Entry | None  # where segment's merge threshold 'auto' is chosen; None: no tuning
    checkpoint: str | None  # an existing model; None: trained here

    def labeled(self, volume: str) -> bool:
        return has_labels(self.volumes[volume])

    def evaluated(self, volume: str) -> Entry | None:
        return next((entry for entry in self.evaluation if entry.volume == volume), None)

    @property
    def trains(self) -> bool:
        return self.checkpoint is None


def has_labels(volume: dict[str, Any]) -> bool:
    synthetic = volume.get("synthetic")
    return bool(synthetic.get("labels", True)) if synthetic is not None else volume.get("labels") is not None


def tuned(segment: dict[str, Any]) -> bool:
    """Whether segment chooses its merge threshold on labeled sections ('auto', agglomerate only)."""
    return segment["method"] == "agglomerate" and segment["merge_threshold"] == "auto"


def plan(config: dict[str, Any], config_files: Sequence[str] = ()) -> Plan:
    """The run's plan from a config the schema has validated; `config_files` only name where it came from."""
    where = f" (in {', '.join(map(str, config_files))})" if config_files else ""
    volumes = config["volumes"]

    def entries(key: str, items: list[dict[str, Any]], labeled: bool, single: bool = False) -> tuple[Entry, ...]:
        found = []
        for index, item in enumerate(items):
            entry = Entry.of(item)
            name = f"{key}.volume" if single else f"{key}[{index}].volume"
            if entry.volume not in volumes:
                raise ConfigError(f"{name}: no volume {entry.volume!r} in volumes ({', '.join(volumes)}){where}")
            if labeled and not has_labels(volumes[entry.volume]):
                raise ConfigError(f"{name}: volume {entry.volume!r} has no labels, which {key} needs{where}")
            if entry.sections and entry.sections[0] >= entry.sections[1]:
                where_sections = name.removesuffix(".volume") + ".sections"
                raise ConfigError(f"{where_sections} {list(entry.sections)} of volume {entry.volume!r}: expected "
                                  f"[first, last) with first < last{where}")
            found.append(entry)
        return tuple(found)

    process = config["process"]
    for index, name in enumerate(process or ()):
        if name not in volumes:
            raise ConfigError(f"process[{index}]: no volume {name!r} in volumes ({', '.join(volumes)}){where}")
    if process is not None and len(set(process)) != len(process):
        raise ConfigError(f"process names a volume twice: {process}{where}")
    processed = [name for name in volumes if process is None or name in process]
    training = entries("training", config["training"], labeled=True)
    validation = entries("validation", config["validation"], labeled=True)
    checkpoint = config["model"]["checkpoint"]
    if checkpoint is not None and training:
        raise ConfigError(f"model.checkpoint is {checkpoint!r} and training names {len(training)} entries: a run "
                          f"either trains (training) or uses a trained model (model.checkpoint), not both{where}")
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise ConfigError(f"model.checkpoint: no such file {checkpoint!r} (relative to {os.getcwd()}){where}")
    if checkpoint is None and not training:
        raise ConfigError(f"training is empty and model.checkpoint is null: name the volumes to train on, or a "
                          f"checkpoint to process with{where}")
    given = config["evaluation"]
    evaluation = entries("evaluation", given, labeled=True) if given is not None else tuple(
        Entry(name) for name in processed if has_labels(volumes[name]))
    if len({entry.volume for entry in evaluation}) != len(evaluation):
        raise ConfigError(f"evaluation names a volume twice: each volume has one metrics.json{where}")
    tune = None
    if tuned(config["segment"]):
        given_tune = config["segment"]["tune"]
        found = entries("segment.tune", [given_tune], labeled=True, single=True) if given_tune else validation[:1]
        if not found:
            raise ConfigError(f"segment.merge_threshold is 'auto' but there is nothing to tune it on: set "
                              f"segment.tune (a labeled volume) or validation, or a number{where}")
        tune = found[0]
    scored_or_tuned = [entry.volume for entry in evaluation] + ([tune.volume] if tune else [])
    processed += [name for name in scored_or_tuned if name not in processed]  # they need a segmentation
    return Plan(volumes, training, validation, evaluation, tuple(processed), tune, checkpoint)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loading that refuses a mapping with a key twice (PyYAML would keep the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"{node.start_mark.name}: line {key_node.start_mark.line + 1}: {key!r} is given twice "
                              f"(first on line {seen[key] + 1}); two volumes (or keys) cannot share a name")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def check_unique_keys(path: str) -> None:
    """Refuse a config file in which a mapping (e.g. `volumes`) names a key twice."""
    with open(path) as handle:
        yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
