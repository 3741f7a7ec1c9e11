"""Convert a spec's layer stack to Megatron and Hugging Face notations, and back from Megatron.

* ``to_megatron(spec)``: the ``--hybrid-layer-pattern`` string, one character per layer from
  each block class's ``megatron_symbol`` (M Mamba, * attention, - MLP, E MoE), with ``|`` at
  stage boundaries. Megatron's M is Mamba-2: layers of another type with symbol M are written
  as M anyway and reported by ``megatron_notes``.
* ``to_hf(spec)``: layer types in the HF transformers v5 vocabulary (``ALLOWED_ATTN_LAYER_TYPES``
  / ``ALLOWED_MLP_LAYER_TYPES``), from each block class's ``hf_layer_type``:
  - when every mixer is followed by exactly one FFN (Jamba, Qwen3-Next, Kimi style: an HF decoder
    layer is mixer + FFN): ``{"layer_types": [one per mixer], "mlp_layer_types": [dense|sparse]}``;
  - otherwise (Nemotron-H style, mixers and FFNs are separate layers): one list,
    ``{"layer_types": [...]}``, with ``mlp`` / ``moe`` for the FFN layers.
  An attention layer whose config sets a sliding ``window`` is ``sliding_attention``. HF has no
  pipeline stages, so ``|`` is dropped.
* ``from_megatron(text)``: a YAML spec with the default blocks (M mamba2, * attention, - mlp,
  E moe) and default model settings; it is validated before it is returned.

Reading a transformers config.json into a spec, and a class's own layout fields for ``--to hf``,
belong to the Hugging Face side: ``hybridlab.export.hf_config`` and ``hybridlab.export.hf_classes``.

Layers that a notation cannot express (``parallel``, ``shared_attention`` have no Megatron
symbol) raise a SpecError naming them, pointing at the block's ``type`` in the spec file when the
spec came from one.
"""
from __future__ import annotations

import os

import yaml

from hybridlab.blocks.registry import get_block
from hybridlab.composer.spec import LayerSpec, ModelSpec
from hybridlab.specs.source import UNKNOWN, Position, parse_yaml, read_text_file
from hybridlab.errors import Problem, SpecError

#: What each Megatron symbol reads back as.
MEGATRON_TYPES = {"M": "mamba2", "*": "attention", "-": "mlp", "E": "moe"}
_DENSE, _SPARSE = ("dense", "mlp"), ("sparse", "moe")


def to_megatron(spec: ModelSpec) -> str:
    out, stage = [], 0
    missing: dict[str, list[LayerSpec]] = {}
    for layer in spec.layers:
        if layer.stage != stage:
            out.append("|")
            stage = layer.stage
        symbol = get_block(layer.type).megatron_symbol
        if not symbol:
            missing.setdefault(layer.name, []).append(layer)
        out.append(symbol)
    if missing:
        raise _cannot_express(spec, missing, "Megatron", "Megatron patterns have M (Mamba-2), "
                              "* (attention), - (MLP) and E (MoE); try --to hf")
    return "".join(out)


def megatron_notes(spec: ModelSpec) -> list[str]:
    """Layers written with a Megatron symbol that reads back as a different block type."""
    notes = []
    for symbol, canonical in MEGATRON_TYPES.items():
        for type_name in sorted({layer.type for layer in spec.layers
                                 if get_block(layer.type).megatron_symbol == symbol}):
            if type_name != canonical:
                notes.append(f"{type_name} layers are written as '{symbol}', which Megatron "
                             f"reads as {canonical}")
    sharing = [layer.index for layer in spec.layers if layer.config.shares_kv()]
    if sharing:
        notes.append(f"layer(s) {', '.join(map(str, sharing))} share an earlier layer's keys and values "
                     "(share_kv); Megatron patterns have no notation for that")
    return notes


def to_hf(spec: ModelSpec) -> dict:
    kinds = [get_block(layer.type).kind for layer in spec.layers]
    types, missing = [], {}
    for layer in spec.layers:
        hf = _hf_type(layer)
        if not hf:
            missing.setdefault(layer.name, []).append(layer)
        types.append(hf)
    if missing:
        raise _cannot_express(spec, missing, "Hugging Face",
                              "the block class sets no hf_layer_type")
    paired = len(kinds) % 2 == 0 and all(
        k == ("mixer" if i % 2 == 0 else "ffn") for i, k in enumerate(kinds))
    if paired:
        return {"layer_types": types[0::2],
                "mlp_layer_types": ["sparse" if t in _SPARSE else "dense" for t in types[1::2]]}
    return {"layer_types": [_flat_ffn_name(t, k) for t, k in zip(types, kinds)]}


def from_megatron(text: str, name: str = "from-megatron", d_model: int = 256,
                  vocab_size: int = 256) -> str:
    """Megatron hybrid_layer_pattern -> YAML spec text (validated)."""
    pattern = "".join(text.split())
    problems = []
    for i, ch in enumerate(text):
        if ch.isspace() or ch in MEGATRON_TYPES or ch == "|":
            continue
        hint = "supported symbols: M (mamba2), * (attention), - (mlp), E (moe), | (stage break)"
        if ch == "/":
            hint = "multi-token prediction ('/') is not supported; " + hint
        problems.append(Problem(f"Megatron symbol '{ch}' has no hybridlab block", file="<megatron>",
                                line=1, col=i + 1, hint=hint))
    if not pattern:
        problems.append(Problem("the Megatron pattern is empty", file="<megatron>", line=1, col=1))
    if problems:
        raise SpecError(problems)
    used = [s for s in MEGATRON_TYPES if s in pattern]
    doc = {"name": name,
           "model": {"d_model": d_model, "vocab_size": vocab_size},
           "blocks": {s: {"type": MEGATRON_TYPES[s]} for s in used},
           "pattern": pattern}
    text_out = (f"# converted from the Megatron hybrid_layer_pattern {pattern!r}\n"
                + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    from hybridlab.composer.loader import load_spec   # loader imports this package's modules
    load_spec(text_out, source="<from-megatron>")
    return text_out


# -- helpers -------------------------------------------------------------------------------------

def _hf_type(layer: LayerSpec) -> str:
    hf = get_block(layer.type).hf_layer_type
    if hf == "full_attention" and getattr(layer.config, "window", None):
        return "sliding_attention"
    return hf


def _flat_ffn_name(hf: str, kind: str) -> str:
    if kind != "ffn":
        return hf
    return "moe" if hf in _SPARSE else "mlp" if hf in _DENSE else hf


def _cannot_express(spec: ModelSpec, missing: dict, notation: str, hint: str) -> SpecError:
    problems = []
    for name, layers in missing.items():
        indices = ", ".join(str(layer.index) for layer in layers)
        label = "layer" if len(layers) == 1 else "layers"
        pos = _locate(spec, ("blocks", name, "type"))
        problems.append(Problem(f"{label} {indices} ('{name}': {layers[0].type}) cannot be "
                                f"expressed in {notation} notation", file=spec.source or "<spec>",
                                line=pos.line, col=pos.col, field=f"blocks.{name}", hint=hint))
    return SpecError(problems)


def _locate(spec: ModelSpec, path: tuple) -> Position:
    """Where ``path`` is written in the spec's file (for a default block: the pattern)."""
    if not spec.source or not os.path.isfile(spec.source):
        return UNKNOWN
    try:
        _, smap = parse_yaml(read_text_file(spec.source, spec.source), spec.source)
    except SpecError:
        return UNKNOWN
    for candidate in (path, ("pattern",), ("layout",)):
        if smap.has(candidate):
            return smap.value(candidate)
    return UNKNOWN
