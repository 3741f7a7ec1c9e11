"""Causal softmax self-attention: MHA / GQA / MQA, RoPE or NoPE, optional sliding window.

Training runs through ``F.scaled_dot_product_attention`` (flash/memory-efficient kernels where
available). Decoding keeps a KV cache: the whole context for full attention, or a ring buffer of
``window`` slots for sliding-window attention (RoPE is applied before caching, so slot order
does not matter and only the last ``window`` keys are ever needed).

Cross-layer KV sharing (Hymba, ``share_kv``): a layer leaves its (post-RoPE) keys and values, or
its KV cache when decoding, in ``ForwardContext.scratch``; a sharing layer attends its own queries
over them and owns no K/V weights or cache. The composer checks that the two layers agree.

Meta tokens (Hymba): when the model prepends ``n_meta`` learned tokens, a sliding window also
always sees them, as in Hymba, so they act as a global memory in every layer. Their keys sit in
``n_meta`` fixed cache slots in front of the ring.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import Block, BlockConfig, ForwardContext, LayerContext, dtype_bytes
from .registry import register_block
from .rope import Rotary, rotary_dim

# An optional hook adding per-use corrections to q, k, v (shared attention's LoRA adapters):
# x (..., d_in) -> (dq, dk, dv), each shaped like the projection it corrects.
QKVDelta = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
KV_KEY = "attention_kv"      # ForwardContext.scratch: the keys and values a later layer may share


@dataclass
class AttentionConfig(BlockConfig):
    """Fields (YAML keys) and defaults:

    n_heads: 8            query heads
    n_kv_heads: None      key/value heads; None = n_heads (MHA), 1 = MQA, in between = GQA
    head_dim: None        None = d_model // n_heads
    rope: True            rotary position embedding; False = NoPE
    rope_theta: 10000.0   RoPE base
    rope_fraction: 1.0    share of each head's dims that rotate (the rest carry no position)
    window: None          sliding window: a token sees itself and the window-1 tokens before it
    qkv_bias: False       bias on the q/k/v projections (Qwen-style)
    share_kv: False       reuse the keys and values of the nearest earlier attention layer
                          (Hymba's cross-layer KV sharing): no K/V projections, no KV cache; that
                          layer must have the same kv heads, head_dim, window and rope
    """

    n_heads: int = 8
    n_kv_heads: int | None = None
    head_dim: int | None = None
    rope: bool = True
    rope_theta: float = 10000.0
    rope_fraction: float = 1.0
    window: int | None = None
    qkv_bias: bool = False
    share_kv: bool = False

    def kv_source(self, d_model: int) -> dict:
        return {"n_kv_heads": self.kv_heads, "head_dim": self.dim_per_head(d_model), "window": self.window,
                "rope": self.rope, "rope_theta": self.rope_theta, "rope_fraction": self.rope_fraction}

    def shares_kv(self) -> str | None:
        return "share_kv" if self.share_kv else None

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        problems = []
        if self.n_heads < 1:
            problems.append(("n_heads", f"must be >= 1, got {self.n_heads}"))
        elif self.head_dim is None and d_model % self.n_heads:
            problems.append(("n_heads", f"n_heads={self.n_heads} must divide d_model={d_model} "
                                        "(or set head_dim)"))
        n_kv = self.kv_heads
        if self.n_kv_heads is not None and n_kv < 1:
            problems.append(("n_kv_heads", f"must be >= 1, got {n_kv}"))
        elif self.n_heads >= 1 and n_kv >= 1 and self.n_heads % n_kv:
            problems.append(("n_kv_heads", f"n_kv_heads={n_kv} must divide n_heads={self.n_heads}"))
        if self.head_dim is not None and self.head_dim < 1:
            problems.append(("head_dim", f"must be >= 1, got {self.head_dim}"))
        if self.window is not None and self.window < 1:
            problems.append(("window", f"must be >= 1 (or null for full attention), got {self.window}"))
        if not 0.0 <= self.rope_fraction <= 1.0:
            problems.append(("rope_fraction", f"must be in [0, 1], got {self.rope_fraction}"))
        elif self.rope and not problems and rotary_dim(self.dim_per_head(d_model), self.rope_fraction) == 0:
            problems.append(("rope_fraction", "rotates no dimension; raise it or set rope: false"))
        if self.rope_theta <= 0:
            problems.append(("rope_theta", f"must be > 0, got {self.rope_theta}"))
        return problems

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    def dim_per_head(self, d_model: int) -> int:
        return self.head_dim if self.head_dim is not None else d_model // self.n_heads


def sliding_window_mask(length: int, window: int, device=None, n_meta: int = 0) -> torch.Tensor:
    """(L, L) bool, True where query i may attend key j: i - window < j <= i, or j <= i is one of
    the n_meta leading meta tokens."""
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    return (j <= i) & ((j > i - window) | (j < n_meta))


@register_block("attention")
class Attention(Block):
    Config = AttentionConfig
    kind = "mixer"
    megatron_symbol = "*"
    hf_layer_type = "full_attention"

    def __init__(self, cfg: AttentionConfig, ctx: LayerContext):
        super().__init__(cfg, ctx)
        d = ctx.d_model
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.kv_heads
        self.head_dim = cfg.dim_per_head(d)
        self.window = cfg.window
        self.share_kv = cfg.share_kv
        self.n_meta = ctx.n_meta
        # cache slots a sliding window ever needs: the meta tokens' and the window's
        self.window_slots = None if cfg.window is None else cfg.window + ctx.n_meta
        if cfg.window is not None:
            self.hf_layer_type = "sliding_attention"
        self.q_size, self.kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        out = self.q_size if cfg.share_kv else self.q_size + 2 * self.kv_size
        self.wqkv = nn.Linear(d, out, bias=cfg.qkv_bias)
        self.wo = nn.Linear(self.q_size, d, bias=False)
        self.rotary = Rotary(self.head_dim, cfg.rope_fraction, cfg.rope_theta) if cfg.rope else None

        nn.init.normal_(self.wqkv.weight, std=ctx.init_std)
        nn.init.normal_(self.wo.weight, std=ctx.init_std * ctx.residual_scale)
        if self.wqkv.bias is not None:
            nn.init.zeros_(self.wqkv.bias)

    # -- shared pieces ---------------------------------------------------------------------
    def _heads(self, x: torch.Tensor, positions: torch.Tensor, qkv_delta: QKVDelta | None):
        """x: (B, L, d) -> q (B, H, L, hd), k and v (B, Hkv, L, hd), RoPE applied
        (k and v None for a layer that shares another's)."""
        B, L, _ = x.shape
        if self.share_kv:
            q = self.wqkv(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
            return (self.rotary(q, positions) if self.rotary is not None else q), None, None
        q, k, v = self.wqkv(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if qkv_delta is not None:
            dq, dk, dv = qkv_delta(x)
            q, k, v = q + dq, k + dk, v + dv
        q = q.view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        return q, k, v

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, L, hd) -> (B, L, d) through the output projection."""
        B, _, L, _ = y.shape
        return self.wo(y.transpose(1, 2).reshape(B, L, self.q_size))

    # -- compute ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, ctx: ForwardContext, qkv_delta: QKVDelta | None = None):
        L = x.shape[1]
        q, k, v = self._heads(x, torch.arange(L, device=x.device), qkv_delta)
        if self.share_kv:
            k, v = self._shared(ctx)
        else:
            ctx.scratch[KV_KEY] = (k, v)
        gqa = self.n_heads != self.n_kv_heads
        if self.window is None or self.window >= L:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            mask = sliding_window_mask(L, self.window, x.device, self.n_meta)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self._merge(y)

    def _shared(self, ctx: ForwardContext):
        if KV_KEY not in ctx.scratch:
            raise RuntimeError("share_kv: no earlier attention layer left keys and values in this call")
        return ctx.scratch[KV_KEY]

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None):
        if self.share_kv:
            return {}                            # it reads the cache of the layer it shares
        slots = max_len if self.window is None else min(max_len, self.window_slots)
        device = device or self.wo.weight.device
        dtype = dtype or self.wo.weight.dtype
        shape = (batch_size, self.n_kv_heads, slots, self.head_dim)
        return {"k": torch.zeros(shape, device=device, dtype=dtype),
                "v": torch.zeros(shape, device=device, dtype=dtype)}

    def step(self, x_t: torch.Tensor, state, ctx: ForwardContext, qkv_delta: QKVDelta | None = None):
        pos = ctx.position
        q, k, v = self._heads(x_t[:, None], torch.tensor([pos], device=x_t.device), qkv_delta)
        if self.share_kv:
            keys, values, filled = self._shared(ctx)
            y = F.scaled_dot_product_attention(q, keys[:, :, :filled], values[:, :, :filled],
                                               enable_gqa=self.n_heads != self.n_kv_heads)
            return self._merge(y)[:, 0], state
        slots = state["k"].shape[2]
        if pos >= slots and (self.window is None or slots < self.window_slots):
            raise IndexError(f"KV cache holds {slots} positions; position {pos} is past it "
                             "(raise max_len in init_cache)")
        # meta tokens keep slots 0..n_meta-1; later positions go round a ring of ``window`` slots
        slot = pos if pos < self.n_meta else self.n_meta + (pos - self.n_meta) % (slots - self.n_meta)
        state["k"][:, :, slot] = k[:, :, 0]
        state["v"][:, :, slot] = v[:, :, 0]
        filled = min(pos + 1, slots)            # meta slots, then the ring: all valid once full
        ctx.scratch[KV_KEY] = (state["k"], state["v"], filled)
        y = F.scaled_dot_product_attention(q, state["k"][:, :, :filled], state["v"][:, :, :filled],
                                           enable_gqa=self.n_heads != self.n_kv_heads)
        return self._merge(y)[:, 0], state

    # -- accounting ------------------------------------------------------------------------
    def attended(self, context: int) -> int:
        """Keys one token attends to at this context length."""
        return context if self.window is None else min(context, self.window_slots)

    def kv_bytes(self, context: int, dtype: torch.dtype = torch.bfloat16) -> int:
        if self.share_kv:
            return 0
        return 2 * self.attended(context) * self.n_kv_heads * self.head_dim * dtype_bytes(dtype)

    def flops_per_token(self, context: int) -> int:
        # projections, plus q.k and p.v over the attended keys (2 FLOPs per multiply-add)
        return 2 * self.num_parameters(active=True) + 4 * self.n_heads * self.head_dim * self.attended(context)
