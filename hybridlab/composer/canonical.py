"""Deterministic forms of a loaded spec: a canonical dict and hash, and a YAML round trip.

* ``canonical_dict(spec)``: what the model *is*: the model settings plus, per layer, its block
  type, its full config and which block it belongs to. Left out on purpose: the spec's name and
  the block names themselves (``M`` vs ``mamba`` builds the same model), and pipeline stages (they
  change how a model is split across GPUs, not the model). Block names are replaced by their order
  of first appearance, because layers that share a name may share weights (shared_attention).
* ``spec_hash(spec)``: sha256 of the canonical dict as compact JSON with sorted keys; the search
  uses it to skip architectures it has already trained.
* ``dump_spec_yaml(spec)``: a self-contained YAML spec (every field written out) that loads back
  to an equal ``ModelSpec``; used to store and export specs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import yaml

from hybridlab.composer.spec import ModelSpec


def canonical_dict(spec: ModelSpec) -> dict:
    groups: dict[str, int] = {}
    layers = []
    for layer in spec.layers:
        group = groups.setdefault(layer.name, len(groups))
        layers.append({"type": layer.type, "block": group, "config": config_fields(layer.config)})
    return _normalised({"model": dataclasses.asdict(spec.model), "layers": layers})


def spec_hash(spec: ModelSpec) -> str:
    text = json.dumps(canonical_dict(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_fields(config) -> dict:
    """The YAML-settable fields of a block Config, by name."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}


def dump_spec_yaml(spec: ModelSpec) -> str:
    """Every block used, with all its fields; per-layer differences become ``overrides``."""
    bases = _base_configs(spec)
    blocks = {name: {"type": type_name, **config_fields(config)}
              for name, (type_name, config) in bases.items()}
    doc: dict = {"name": spec.name, "model": dataclasses.asdict(spec.model)}
    if spec.plugins:
        doc["plugins"] = list(spec.plugins)
    doc["blocks"] = blocks
    doc["pattern"] = spec.pattern
    overrides = _overrides(spec, bases)
    if overrides:
        doc["overrides"] = overrides
    header = "# hybridlab spec, written out in full: loads back to the same model\n"
    return header + yaml.dump(_plain(doc), Dumper=_SpecDumper, sort_keys=False,
                              allow_unicode=True, width=100)


class _SpecDumper(yaml.SafeDumper):
    """SafeDumper that writes short lists of plain values on one line: at: [0, 4]."""


def _represent_list(dumper: yaml.SafeDumper, items: list):
    flat = all(isinstance(v, (int, float, str, bool)) or v is None for v in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat or None)


_SpecDumper.add_representer(list, _represent_list)


def _base_configs(spec: ModelSpec) -> dict[str, tuple[str, object]]:
    """Per block name: its type and the config most of its layers use (first one on a tie)."""
    seen: dict[str, list[list]] = {}           # name -> [[config, count], ...]
    types: dict[str, str] = {}
    for layer in spec.layers:
        types.setdefault(layer.name, layer.type)
        variants = seen.setdefault(layer.name, [])
        for variant in variants:
            if variant[0] == layer.config:
                variant[1] += 1
                break
        else:
            variants.append([layer.config, 1])
    return {name: (types[name], max(variants, key=lambda v: v[1])[0])
            for name, variants in seen.items()}


def _overrides(spec: ModelSpec, bases) -> list[dict]:
    """Layers whose config differs from their block's: grouped by identical changes."""
    groups: dict[str, dict] = {}
    for layer in spec.layers:
        base = config_fields(bases[layer.name][1])
        changed = {k: v for k, v in config_fields(layer.config).items() if base[k] != v}
        if not changed:
            continue
        key = json.dumps([layer.name, _plain(changed)], sort_keys=True, default=str)
        groups.setdefault(key, {"at": [], "set": changed})["at"].append(layer.index)
    return list(groups.values())


def _plain(value):
    """YAML/JSON-friendly copy: tuples -> lists, dataclasses -> dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _normalised(value):
    """_plain, plus whole floats written as ints (2.0 and 2 describe the same model)."""
    value = _plain(value)
    if isinstance(value, dict):
        return {str(k): _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value
