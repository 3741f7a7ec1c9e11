"""The ``overrides:`` section: per-layer copies of a block's Config with some fields set,
type-checked per layer, then validated; a complaint blames the override that set the field."""
from __future__ import annotations

import dataclasses
from typing import Any

from hybridlab.blocks.registry import get_block
from hybridlab.composer.read.context import Reading
from hybridlab.composer.spec import LayerSpec
from hybridlab.specs.limits import MAX_OVERRIDES
from hybridlab.specs.problems import did_you_mean, join_ints, plural
from hybridlab.specs.typecheck import Mismatch, convert, describe, init_fields, is_int, type_hints

OVERRIDE_KEYS = ("at", "set")


def apply_overrides(r: Reading, overrides,
                    layers: list[LayerSpec] | None) -> list[LayerSpec] | None:
    """``layers`` with the overrides applied (None when any is invalid, with problems)."""
    if overrides is None:
        return layers
    if not isinstance(overrides, list):
        r.problem(("overrides",), f"overrides must be a list, got {describe(overrides)}",
                  "overrides: [{at: [0, 5], set: {window: null}}]")
        return None
    if layers is None:          # no layer list to apply them to (already reported)
        return None
    if r.problems.too_many(("overrides",), overrides, MAX_OVERRIDES, "overrides",
                           "one override may list many layers under at:", key=True):
        return None
    n_before = len(r.problems)
    set_by: dict[int, dict[str, int]] = {}     # layer -> field -> override that set it last
    for k, entry in enumerate(overrides):
        for index, values in _read_override(r, k, entry, layers):
            layer = layers[index]
            try:
                config = dataclasses.replace(layer.config, **values)
            except Exception as e:
                r.problem(("overrides", k, "set"), f"layer {index}: invalid settings: {e}")
                continue
            layers[index] = dataclasses.replace(layer, config=config)
            set_by.setdefault(index, {}).update({name: k for name in values})
    _validate_overridden(r, layers, set_by)
    return layers if len(r.problems) == n_before else None


def _read_override(r: Reading, k: int, entry, layers: list[LayerSpec]):
    """Yields (layer index, converted values) for one override entry, reporting problems."""
    path = ("overrides", k)
    if not isinstance(entry, dict):
        r.problem(path, f"an override is a mapping {{at: [...], set: {{...}}}}, got "
                        f"{describe(entry)}")
        return
    r.check_keys(path, entry, OVERRIDE_KEYS, "an override")
    for key in OVERRIDE_KEYS:
        if key not in entry:
            r.problem(path, f"missing required key '{key}'", key=True)
    indices = _override_indices(r, path, entry.get("at"), len(layers))
    values = entry.get("set")
    if values is not None and (not isinstance(values, dict) or not values):
        r.problem(path + ("set",), "set must be a non-empty mapping of field -> value")
        return
    if not indices or not values:
        return
    per_layer, missing = [], {}
    for index in indices:
        checked = _override_values(r, path + ("set",), values, layers[index])
        if checked is None:
            continue
        converted, unknown = checked
        for field in unknown:
            missing.setdefault(field, []).append(index)
        if not unknown:
            per_layer.append((index, converted))
    for field, where in missing.items():
        kinds = sorted({f"'{layers[i].name}': {layers[i].type}" for i in where})
        fields = init_fields(get_block(layers[where[0]].type).Config)
        hint = did_you_mean(field, list(fields)) or "fields: " + ", ".join(fields)
        r.problem(path + ("set", field),
                  f"{plural('layer', where)} {join_ints(where)} ({', '.join(kinds)}) "
                  f"{'has' if len(where) == 1 else 'have'} no field '{field}'", hint, key=True)
    yield from per_layer


def _override_indices(r: Reading, path: tuple, at, n_layers: int) -> list[int]:
    if at is None:
        return []
    items = [(at, path + ("at",))] if not isinstance(at, list) else \
        [(v, path + ("at", i)) for i, v in enumerate(at)]
    if not items:
        r.problem(path + ("at",), "at must list at least one layer index")
    out = []
    for value, where in items:
        if not is_int(value):
            r.problem(where, f"a layer index must be an integer, got {describe(value)}")
        elif not 0 <= value < n_layers:
            r.problem(where, f"layer index {value} is out of range: the model has "
                             f"{n_layers} layers (0..{n_layers - 1})",
                      "indices count every layer of the expanded pattern, FFN layers included")
        else:
            out.append(value)
    return sorted(set(out))


def _override_values(r: Reading, path: tuple, values: dict, layer: LayerSpec):
    """(converted values, fields the layer's Config lacks), or None after a type problem."""
    cls = type(layer.config)
    fields = init_fields(cls)
    hints = type_hints(cls)
    out, unknown = {}, []
    for key, value in values.items():
        if key == "type":
            r.problem(path + (key,), "an override cannot change the block type",
                      "define another block and use it in the pattern", key=True)
            return None
        if key not in fields:
            unknown.append(key)
            continue
        try:
            out[key] = convert(value, hints.get(key, Any))
        except Mismatch as m:
            r.type_problem(path + (key,), m)
            return None
    return out, unknown


def _validate_overridden(r: Reading, layers: list[LayerSpec],
                         set_by: dict[int, dict[str, int]]) -> None:
    """Validate each overridden layer; blame the override that set the field (or the last)."""
    found: dict[tuple, list[int]] = {}
    for index, fields in sorted(set_by.items()):
        last = max(fields.values())

        def report(field, message, fields=fields, last=last, index=index):
            parts = tuple(field.split(".")) if field else ()
            if parts and parts[0] in fields:
                where = ("overrides", fields[parts[0]], "set") + parts
            else:
                where = ("overrides", last, "set")
            named = not field or parts[0] in fields      # the path already names the field
            text = message if named else f"{field}: {message}"
            found.setdefault((where, text), []).append(index)
        r.run_validate(layers[index].config, report)
    for (where, text), indices in found.items():
        r.problem(where, f"{plural('layer', indices)} {join_ints(indices)}: {text}")
