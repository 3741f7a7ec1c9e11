"""The one interface every block implements.

A *block* is the residual branch of one layer: the model computes ``x + block(norm(x))``.
The composer only ever talks to blocks through this interface:

* ``forward(x, ctx)``            parallel (training) forward, x: (B, L, D) -> (B, L, D)
* ``init_state(batch, max_len)`` allocate the decode cache/state for one block (dict of tensors)
* ``step(x_t, state, ctx)``      one new token per sequence, x_t: (B, D) -> ((B, D), state)
* ``state_bytes(dtype)``         recurrent-state bytes per sequence (SSM state, conv window ...)
* ``kv_bytes(context, dtype)``   KV-cache bytes per sequence at a given context length
* ``flops_per_token(context)``   forward FLOPs per token (2 per multiply-add), at a context length
* ``aux_loss()``                 auxiliary training loss of the last forward (MoE), or None
* ``num_parameters(active)``     parameters; ``active=True`` counts only what one token uses (MoE)
* ``no_weight_decay()``          names of the parameters AdamW must not decay (default: 1-D ones)

Each block type has a ``Config`` dataclass whose fields are the YAML keys, with documented
defaults, and a ``validate`` hook for cross-field checks.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from hybridlab.errors import UserError


@dataclass
class BlockConfig:
    """Base for block configs. Subclasses add fields (the YAML keys) with defaults."""

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        """Cross-field checks. Returns (field, message) pairs; empty when valid."""
        return []

    # cross-layer KV sharing (Hymba): the composer checks these across the layer stack
    def kv_source(self, d_model: int) -> dict | None:
        """What this layer's attention leaves for later layers that share its keys and values
        (n_kv_heads, head_dim, window, rope...): they must match it. None: no attention here."""
        return None

    def shares_kv(self) -> str | None:
        """The field (dotted) that makes this layer reuse the nearest earlier attention layer's
        keys and values instead of its own; None when it does not."""
        return None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass
class LayerContext:
    """What a block learns about where it sits, at construction time."""

    index: int                 # position in the expanded layer stack
    name: str                  # block name in the spec (the pattern symbol for 1-char names)
    d_model: int
    n_layers: int
    use_index: int = 0         # how many earlier layers used the same block name
    shared: dict = field(default_factory=dict)   # model-wide store for weight sharing (per block name)
    init_std: float = 0.02
    residual_scale: float = 1.0  # multiply output-projection init by this (depth scaling)
    n_meta: int = 0            # leading meta-token positions (Hymba): sliding windows always see them


@dataclass
class ForwardContext:
    """Per-call information handed to every block."""

    embeddings: torch.Tensor | None = None   # (B, L, D) or (B, D) in step: the token embeddings
    position: int = 0                        # step(): absolute position of the new token
    seq_idx: torch.Tensor | None = None      # (B, L) int32 packed-sequence ids, optional
    scratch: dict = field(default_factory=dict)   # what a layer leaves for later layers of this call


class Block(nn.Module, metaclass=abc.ABCMeta):
    """Base class; see module docstring for the contract. ``forward`` and ``step`` are abstract:
    a block that lacks either cannot be instantiated."""

    Config: ClassVar[type[BlockConfig]] = BlockConfig
    #: "mixer" (sequence mixing: SSM, attention, parallel), "ffn" (per-token: mlp, moe)
    kind: ClassVar[str] = "mixer"
    #: Megatron hybrid_layer_pattern symbol and HF v5 layer type, for `hybridlab convert`
    megatron_symbol: ClassVar[str] = ""
    hf_layer_type: ClassVar[str] = ""

    def __init__(self, cfg: BlockConfig, ctx: LayerContext):
        super().__init__()
        self.cfg = cfg
        self.layer = ctx

    # -- compute ---------------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """Parallel forward: x (B, L, D) -> (B, L, D)."""

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def step(self, x_t: torch.Tensor, state: dict[str, Any], ctx: ForwardContext):
        """One token per sequence: x_t (B, D) -> ((B, D), state)."""

    def aux_loss(self) -> torch.Tensor | None:
        return None

    # -- accounting ------------------------------------------------------------------------
    def state_bytes(self, dtype: torch.dtype = torch.bfloat16) -> int:
        return 0

    def kv_bytes(self, context: int, dtype: torch.dtype = torch.bfloat16) -> int:
        return 0

    def flops_per_token(self, context: int) -> int:
        """Default: 2 FLOPs per weight (every weight used once per token)."""
        return 2 * self.num_parameters(active=True)

    def num_parameters(self, active: bool = False) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- training --------------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Names, as ``named_parameters()`` gives them, of the parameters the optimizer must not
        decay. Default: every 1-D parameter (norm weights, biases), and for a block nested
        inside this one, whatever its own hook names. Override to add what is not 1-D but must
        not shrink towards zero (Mamba-1's A_log, per-head biases, per-channel scales)."""
        return _default_no_weight_decay(self)


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """The parameters of any module tree (a whole model) exempt from weight decay, by name
    (duplicates of shared weights under every name they have). A module with a
    ``no_weight_decay()`` method (every Block) decides for its own parameters; elsewhere -- the
    model's layer norms, final norm, embedding, meta tokens, head -- 1-D parameters are exempt
    and matrices decay, as in Megatron-LM and nanoGPT."""
    hook = getattr(module, "no_weight_decay", None)
    if not callable(hook):
        return _default_no_weight_decay(module)
    names = set(hook())
    known = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    if names - known:
        cls = type(module)
        raise UserError(
            f"{cls.__module__}.{cls.__qualname__}.no_weight_decay() names "
            f"{', '.join(sorted(names - known))}: not parameters of the module; return names "
            f"as its named_parameters() gives them ({', '.join(sorted(known)) or 'it has none'})")
    return names


def _default_no_weight_decay(module: nn.Module) -> set[str]:
    out = {name for name, p in module.named_parameters(recurse=False) if p.ndim < 2}
    for child_name, child in module.named_children():
        out |= {f"{child_name}.{n}" for n in no_weight_decay_names(child)}
    return out


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype, device="meta").element_size()
