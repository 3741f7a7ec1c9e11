"""Spec loader: YAML file, YAML text or dict -> validated ``ModelSpec``.

This is the edge of the product: everything downstream trusts what it returns. Every problem
found is collected (not just the first) and raised together as one ``SpecError`` whose problems
point at file:line:col of the offending key, value, or pattern symbol.

Steps, each in its module under ``composer/read/``: read the YAML (bounded:
``hybridlab.specs``) -> check the top-level keys -> ``plugins``, ``name`` and ``model``
(``model``) -> ``blocks`` (each entry becomes its block's ``Config`` dataclass, type-checked,
then ``Config.validate(d_model)``: ``blocks``) -> ``pattern`` or ``layout`` -> one layer per
name (``layers``, ``layout``) -> ``overrides`` (per-layer copies of the Config: ``overrides``)
-> checks on the whole model (shared keys and values; the sizes it would build: ``sizes``) ->
``ModelSpec``.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

from hybridlab.composer.canonical import dump_spec_yaml  # noqa: F401  (re-exported: load/dump pair)
from hybridlab.composer.read.blocks import read_blocks
from hybridlab.composer.read.context import Reading
from hybridlab.composer.read.layers import make_layers, read_layer_names
from hybridlab.composer.read.model import import_plugins, read_model, read_name
from hybridlab.composer.read.overrides import apply_overrides
from hybridlab.composer.sizes import check_sizes
from hybridlab.composer.spec import LayerSpec, ModelSpec
from hybridlab.errors import SpecError
from hybridlab.specs.source import SourceMap, SpecKind, parse_yaml, read_text_file
from hybridlab.specs.typecheck import describe

TOP_KEYS = ("name", "model", "blocks", "pattern", "layout", "overrides", "plugins")
#: a file read as a model spec must have one of these top-level keys, or it is reported as
#: "not a hybridlab model spec" without quoting it (``name`` alone is too common elsewhere)
MODEL_SPEC = SpecKind("model spec", ("model", "blocks", "pattern", "layout", "overrides",
                                     "plugins"),
                      "a model spec is a YAML mapping with model: and pattern: (or layout:); "
                      "see docs/spec-format.md")
_SHAPE = "a spec is a mapping with name, model, blocks and pattern (or layout)"


def load_spec(spec, source: str | None = None, *, allow_plugins: bool = False) -> ModelSpec:
    """Path, YAML text, dict or ModelSpec -> validated ``ModelSpec``. Raises ``SpecError``.

    ``source`` names the input in error messages (and becomes ``ModelSpec.source``); it defaults
    to the path, or ``<text>`` / ``<dict>``. ``allow_plugins``: import the modules the spec lists
    under ``plugins:`` (this runs their code); by default a spec naming a module that is not
    imported already is refused (``hybridlab.composer.plugins``).
    """
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        file = source or "<dict>"
        reading = Reading(SourceMap.empty(file), source, None, from_text=False,
                          allow_plugins=allow_plugins)
        return _read(reading, copy.deepcopy(spec))
    if isinstance(spec, (str, Path)) and not _looks_like_yaml_text(spec):
        file = source or str(spec)
        text = read_text_file(spec, shown_as=file)
        data, smap = parse_yaml(text, file, kind=MODEL_SPEC)
        return _read(Reading(smap, file, Path(spec), allow_plugins=allow_plugins), data)
    if isinstance(spec, str):
        file = source or "<text>"
        data, smap = parse_yaml(spec, file)
        return _read(Reading(smap, source, None, allow_plugins=allow_plugins), data)
    raise TypeError(f"load_spec expects a path, YAML text, dict or ModelSpec, "
                    f"got {type(spec).__name__}")


def _looks_like_yaml_text(spec) -> bool:
    if isinstance(spec, Path):
        return False
    return "\n" in spec or (":" in spec and not os.path.exists(spec))


def _read(r: Reading, top) -> ModelSpec:
    """The steps, in order; the ModelSpec, or a SpecError with every problem found."""
    if top is None:
        r.fail((), "the spec is empty", _SHAPE)
    if not isinstance(top, dict):
        r.fail((), f"the top level of a spec must be a mapping, got {describe(top)}", _SHAPE)
    r.problems.duplicates(lambda key: (
        f"duplicate key '{key}'",
        "YAML would silently keep only the last one; remove or rename one"))
    r.check_keys((), top, TOP_KEYS, "the spec")
    plugins = import_plugins(r, top.get("plugins"))
    name = read_name(r, top)
    model = read_model(r, top)
    read_blocks(r, top.get("blocks"))
    slots = read_layer_names(r, top)
    layers = apply_overrides(r, top.get("overrides"), make_layers(r, slots))
    if not r.problems and layers is not None:
        _check_kv_sharing(r, layers)
    if not r.problems and layers is not None and model is not None:
        for size in check_sizes(model, layers):
            r.problem(size.path, size.message, size.hint, key=True)
    if r.problems or model is None or layers is None:
        raise SpecError(r.problems.sorted())
    return ModelSpec(name=name, model=model, layers=tuple(layers), plugins=plugins,
                     source=r.source, raw=top)


def _check_kv_sharing(r: Reading, layers: list[LayerSpec]) -> None:
    """A layer that shares keys and values (``Config.shares_kv``) needs an earlier attention
    layer (``Config.kv_source``) whose heads, head_dim, window and rope match its own."""
    source = None                                    # (index, what it leaves)
    for layer in layers:
        here = layer.config.kv_source(r.d_model)
        field = layer.config.shares_kv()
        if field:
            path = ("blocks", layer.name) + tuple(field.split("."))
            if source is None:
                r.problem(path, f"layer {layer.index}: no earlier attention layer to share "
                                "keys and values with",
                          "put an attention layer (share_kv false) before it")
            else:
                differ = [f"{k} {here[k]!r} vs {source[1][k]!r}" for k in here
                          if here[k] != source[1][k]]
                if differ:
                    r.problem(path, f"layer {layer.index} shares the keys and values of layer "
                                    f"{source[0]}, which differ: {', '.join(differ)}",
                              "give both layers the same n_kv_heads, head_dim, window and rope")
        if here is not None:
            source = (layer.index, here)
