"""The sizes a valid spec would build, checked before anything builds it.

No weight tensor and no whole model may go beyond ``MAX_ELEMENTS`` elements (2**40, about 1.1e12),
so ``summary``, ``train`` and the UI never meet a size that overflows (torch's "Storage size
calculation overflowed") or cannot be allocated; the loader reports it as a problem instead.

Blocks are built one distinct configuration at a time on the meta device (shapes only, no memory
and no arithmetic), so the check needs no size formula per block type and also covers plugin
blocks. A configuration used by several layers counts once per layer (shared weights included:
an upper bound is what the check needs).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from hybridlab.blocks.base import LayerContext
from hybridlab.blocks.registry import get_block
from hybridlab.specs.limits import MAX_ELEMENTS, MAX_LAYER_CONFIGS
from hybridlab.composer.spec import LayerSpec, ModelConfig

LIMIT_TEXT = f"2**{MAX_ELEMENTS.bit_length() - 1} (about {MAX_ELEMENTS:.2g})"


@dataclass(frozen=True)
class SizeProblem:
    path: tuple          # the field to point at
    message: str
    hint: str = ""


def check_sizes(model: ModelConfig, layers: list[LayerSpec]) -> list[SizeProblem]:
    """Problems (empty when every tensor and the total stay within ``MAX_ELEMENTS``)."""
    d = model.d_model
    embedding = model.vocab_size * d
    if embedding > MAX_ELEMENTS:
        return [SizeProblem(("model", "vocab_size"),
                            f"the embedding would hold vocab_size x d_model = {embedding:.3g} "
                            f"elements, beyond the limit of {LIMIT_TEXT}",
                            "check model.vocab_size and model.d_model")]
    if model.meta_tokens * d > MAX_ELEMENTS:
        return [SizeProblem(("model", "meta_tokens"),
                            f"meta tokens would hold {model.meta_tokens * d:.3g} elements, beyond "
                            f"the limit of {LIMIT_TEXT}")]
    per_config: dict[tuple, int | None] = {}        # (type, repr(config)) -> parameters
    problems: list[SizeProblem] = []
    total = embedding * (1 if model.tie_embeddings else 2) + model.meta_tokens * d
    for layer in layers:
        key = (layer.type, repr(layer.config))
        if key not in per_config:
            if len(per_config) >= MAX_LAYER_CONFIGS:
                return [SizeProblem(("overrides",), f"more than {MAX_LAYER_CONFIGS} distinct layer "
                                    "configurations (blocks and overrides)",
                                    "give layers that differ their own block, or share settings")]
            per_config[key] = _block_parameters(layer, model, len(layers), problems)
            if problems:
                return problems
        total += per_config[key] or 0
    if total > MAX_ELEMENTS:
        return [SizeProblem(("model",), f"the model would have {total:.3g} parameters, beyond "
                                        f"the limit of {LIMIT_TEXT}",
                            "check d_model, the number of layers and the block sizes")]
    return []


def _block_parameters(layer: LayerSpec, model: ModelConfig, n_layers: int,
                      problems: list[SizeProblem]) -> int | None:
    """Parameters of one layer's block, built on the meta device; None (and a problem) when it
    cannot be built. An abstract class (no forward/step yet) is not checked."""
    cls = get_block(layer.type)
    if inspect.isabstract(cls):
        return None
    where = ("blocks", layer.name)
    who = f"layer {layer.index} ('{layer.name}': {layer.type})"
    ctx = LayerContext(index=layer.index, name=layer.name, d_model=model.d_model,
                       n_layers=n_layers, shared={}, init_std=model.init.std,
                       n_meta=model.meta_tokens)
    try:
        with torch.device("meta"):
            block = cls(layer.config, ctx)
    except Exception as e:          # a config its validate() let through, or absurd sizes
        text = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if isinstance(e, (OverflowError, MemoryError)) or "overflow" in text.lower():
            problems.append(SizeProblem(where, f"{who} cannot be built: a tensor size "
                                               "overflows", "check its sizes and model.d_model"))
        else:
            problems.append(SizeProblem(where, f"{who} cannot be built with these settings: "
                                               f"{type(e).__name__}: {text}"))
        return None
    biggest = max((t.numel() for t in [*block.parameters(), *block.buffers()]), default=0)
    if biggest > MAX_ELEMENTS:
        problems.append(SizeProblem(where, f"{who} would hold a tensor of {biggest:.3g} elements, "
                                           f"beyond the limit of {LIMIT_TEXT}",
                                    "check its sizes and model.d_model"))
        return None
    return sum(p.numel() for p in block.parameters())
