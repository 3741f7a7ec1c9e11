"""Typed, validated model spec: what the loader produces and everything downstream trusts.

The loader (``hybridlab.composer.loader``) turns YAML into these objects after checking every
field; the builder, summary and converters never re-validate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hybridlab.blocks.base import BlockConfig


@dataclass(frozen=True)
class InitConfig:
    std: float = 0.02                 # normal init std for linear and embedding weights
    residual_scaling: bool = True     # scale output projections by 1/sqrt(2 * n_layers) (GPT-2)


@dataclass(frozen=True)
class ModelConfig:
    d_model: int
    vocab_size: int
    norm: str = "rmsnorm"             # rmsnorm | layernorm
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    meta_tokens: int = 0              # Hymba-style learned tokens prepended to every sequence
    init: InitConfig = field(default_factory=InitConfig)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the expanded stack."""

    index: int
    name: str              # the block name in `blocks` (== pattern symbol for 1-char names)
    type: str              # registered block type, e.g. "mamba2"
    config: BlockConfig    # defaults + block-level settings + overrides, validated
    stage: int = 0         # pipeline stage, from `|` in the pattern


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: ModelConfig
    layers: tuple[LayerSpec, ...]
    plugins: tuple[str, ...] = ()
    source: str | None = None          # file the spec came from, if any
    raw: dict[str, Any] = field(default_factory=dict, compare=False)  # the YAML mapping as loaded

    @property
    def pattern(self) -> str:
        """The expanded layout as one line of names (1-char names joined, `|` at stage breaks)."""
        out, prev_stage = [], 0
        for layer in self.layers:
            if layer.stage != prev_stage:
                out.append("|")
                prev_stage = layer.stage
            out.append(layer.name if len(layer.name) == 1 else f"[{layer.name}]")
        return "".join(out)
