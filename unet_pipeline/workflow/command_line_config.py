"""Give values set with `snakemake --config` the types the config schema expects.

Snakemake reads `--config key=value`: a top-level number stays a number, but
every value inside a nested mapping (`--config 'train={iterations: 50}'`)
arrives as a string, which the schema would refuse. A string that the schema
does not accept where it stands is read as YAML (`"50"` -> 50,
`["1", "128", "128"]` -> [1, 128, 128]) and kept when the schema accepts that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml


def typed(value: Any, schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """`value` with its command-line strings read as the types `schema` expects (where that makes it valid);
    `defs`: the root schema's `$defs`, which references inside `schema` point to."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {key: typed(item, properties[key], defs) if key in properties else item for key, item in value.items()}
    if _valid(value, schema, defs):
        return value
    parsed = _parsed(value)
    return parsed if _valid(parsed, schema, defs) else value


def type_command_line_values(config: dict[str, Any], schema_path: str | Path) -> None:
    """Retype `config` (Snakemake's, in place) against the schema at `schema_path`; call before validating."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    config.update(typed(config, schema))


def _valid(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator({**schema, "$defs": defs}).is_valid(value)


def _parsed(value: Any) -> Any:
    """Every string inside `value` read as YAML."""
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    if isinstance(value, list):
        return [_parsed(item) for item in value]
    return value
