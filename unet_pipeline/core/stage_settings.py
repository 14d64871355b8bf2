"""Check a stage's settings against the types of its keyword arguments, in one place: `checked_stage` wraps
each stage function, so a hand-written `--settings` (or a Python caller) with a wrong type or a value outside
a `Literal` stops at once, naming the key, before any work."""

from __future__ import annotations

import collections.abc
import functools
import inspect
import json
import numbers
import os
import types
import typing
from typing import Any, Callable, TypeVar

from .errors import ConfigError


def matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type hint (JSON arrays stand for lists, tuples and sequences)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(matches(v, item) for v in value)
    if origin is dict or hint is dict:
        item = args[1] if len(args) == 2 else Any
        return isinstance(value, dict) and all(matches(v, item) for v in value.values())
    return True  # a type JSON cannot express: the stage checks it


def describe(hint: Any) -> str:
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))


def check_settings(function: Callable[..., Any], settings: dict[str, Any], stage: str) -> None:
    """Refuse settings whose values do not fit the annotations of `function`, naming every such key."""
    hints = typing.get_type_hints(function)
    wrong = [f"{key} = {json.dumps(value)} (expected {describe(hints[key])})" for key, value in settings.items()
             if key in hints and not matches(value, hints[key])]
    if wrong:
        raise ConfigError(f"settings of {stage}: wrong type of {'; '.join(wrong)}")


Stage = TypeVar("Stage", bound=Callable[..., Any])


def checked_stage(function: Stage) -> Stage:
    """`function` with its keyword-only settings checked against their annotations on every call."""
    names = [name for name, parameter in inspect.signature(function).parameters.items()
             if parameter.kind is inspect.Parameter.KEYWORD_ONLY]

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_settings(function, {key: value for key, value in kwargs.items() if key in names}, function.__name__)
        return function(*args, **kwargs)

    return typing.cast(Stage, wrapper)


STAGES = ("ingest", "preprocess", "weights", "train", "predict", "segment", "evaluate", "report")


RUN_ONLY: dict[str, tuple[str, ...]] = {  # per stage: the settings that change how it runs, not what it writes
    "train": ("threads", "loader_workers", "device"),
    "predict": ("batch_tiles", "memory_budget_mb", "device", "torch_threads", "stall_timeout_s", "cluster_settings"),
    "segment": ("cluster_settings", "stall_timeout_s"),
    "evaluate": ("cluster_settings", "stall_timeout_s"),
}
