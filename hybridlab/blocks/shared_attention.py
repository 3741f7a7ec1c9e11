"""Zamba2-style shared attention: one transformer block (attention + MLP) reused at many depths.

Every layer that names the same block gets the *same* core module (created by the first use and
kept in ``LayerContext.shared``), so ``model.parameters()`` lists its weights once and gradients
from all uses accumulate in one tensor. What differs per use:

* optional LoRA adapters of rank ``adapter_rank`` on q, k and v (Zamba2's per-invocation adapters);
* with ``concat_embeddings``, the input is ``[x, token embeddings]`` (width 2*d_model, so the core
  works at twice the width) and a per-use linear maps the result back to d_model;
* its own KV cache.

The block is a residual branch, so it returns the core's update rather than the updated stream:
    u = norm(x) [ ++ embeddings ];  a = attn(n1(u));  m = mlp(n2(u + a));  out = [proj](a + m)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hybridlab.errors import Problem, SpecError

from .attention import Attention, AttentionConfig
from .base import Block, ForwardContext, LayerContext
from .mlp import ACTIVATIONS, FeedForward, hidden_size
from .norms import RMSNorm
from .registry import register_block

_ATTENTION_FIELDS = AttentionConfig.field_names()


@dataclass
class SharedAttentionConfig(AttentionConfig):
    """Fields (YAML keys) and defaults. The attention fields are those of ``attention``; every use
    of one block name must agree on them (only ``adapter_rank`` may differ per use).

    n_heads: 8, n_kv_heads: None, head_dim: None, rope: True, rope_theta: 10000.0,
    rope_fraction: 1.0, window: None, qkv_bias: False
                            the shared core's attention (head_dim defaults to core width / n_heads)
    mlp_hidden_mult: 4.0    the core MLP's hidden width = round(mult * core width)
    mlp_activation: "swiglu"  swiglu | gelu | relu2
    adapter_rank: 0         per-use LoRA rank on q/k/v; 0 = no adapters
    concat_embeddings: False  feed [x, token embeddings] (core width 2*d_model), project back per use
    """

    # the attention fields are inherited from AttentionConfig
    mlp_hidden_mult: float = 4.0
    mlp_activation: str = "swiglu"
    adapter_rank: int = 0
    concat_embeddings: bool = False

    def core_width(self, d_model: int) -> int:
        return 2 * d_model if self.concat_embeddings else d_model

    def attention_config(self) -> AttentionConfig:
        return AttentionConfig(**{name: getattr(self, name) for name in _ATTENTION_FIELDS})

    def core_key(self) -> tuple:
        """Everything the shared weights depend on (all fields but the per-use adapter rank)."""
        return tuple((k, v) for k, v in vars(self).items() if k != "adapter_rank")

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        problems = super().validate(self.core_width(d_model))
        if self.mlp_hidden_mult <= 0:
            problems.append(("mlp_hidden_mult", f"must be > 0, got {self.mlp_hidden_mult}"))
        if self.mlp_activation not in ACTIVATIONS:
            problems.append(("mlp_activation", f"unknown activation {self.mlp_activation!r}; "
                                               f"expected one of {', '.join(ACTIVATIONS)}"))
        if self.adapter_rank < 0:
            problems.append(("adapter_rank", f"must be >= 0, got {self.adapter_rank}"))
        if self.share_kv:
            problems.append(("share_kv", "shared attention keeps its own keys and values; "
                                         "share_kv is for attention blocks"))
        return problems

    def kv_source(self, d_model: int) -> dict:
        return super().kv_source(self.core_width(d_model))   # its core leaves them, at core width


class SharedCore(nn.Module):
    """The weights every use shares: pre-norms, attention, MLP, all at the core width."""

    def __init__(self, cfg: SharedAttentionConfig, ctx: LayerContext):
        super().__init__()
        width = cfg.core_width(ctx.d_model)
        core_ctx = LayerContext(index=ctx.index, name=ctx.name, d_model=width, n_layers=ctx.n_layers,
                                init_std=ctx.init_std, residual_scale=ctx.residual_scale, n_meta=ctx.n_meta)
        self.key = cfg.core_key()
        self.norm_attn = RMSNorm(width)
        self.attn = Attention(cfg.attention_config(), core_ctx)
        self.norm_mlp = RMSNorm(width)
        self.mlp = FeedForward(width, hidden_size(width, cfg.mlp_hidden_mult), cfg.mlp_activation,
                               init_std=ctx.init_std, out_std=ctx.init_std * ctx.residual_scale)


class QKVAdapter(nn.Module):
    """Per-use LoRA on q, k, v: x -> (x A_q B_q, x A_k B_k, x A_v B_v), A and B both random so
    every adapter weight gets a gradient from the first step."""

    def __init__(self, width: int, rank: int, sizes: tuple[int, int, int], std: float):
        super().__init__()
        self.down = nn.ModuleList(nn.Linear(width, rank, bias=False) for _ in sizes)
        self.up = nn.ModuleList(nn.Linear(rank, n, bias=False) for n in sizes)
        for lin in [*self.down, *self.up]:
            nn.init.normal_(lin.weight, std=std)

    def forward(self, x: torch.Tensor):
        return tuple(up(down(x)) for down, up in zip(self.down, self.up))


@register_block("shared_attention")
class SharedAttention(Block):
    Config = SharedAttentionConfig
    kind = "mixer"
    megatron_symbol = ""            # Megatron has no shared-block symbol
    hf_layer_type = "hybrid"        # Zamba2's name for a layer that calls the shared block

    def __init__(self, cfg: SharedAttentionConfig, ctx: LayerContext):
        super().__init__(cfg, ctx)
        core = ctx.shared.get(ctx.name)
        if core is None:
            core = ctx.shared[ctx.name] = SharedCore(cfg, ctx)
        elif core.key != cfg.core_key():
            raise SpecError(Problem(
                f"layer {ctx.index} uses shared block {ctx.name!r} with settings that differ from "
                "its first use; shared weights need identical settings (only adapter_rank may vary)",
                field=f"blocks.{ctx.name}"))
        self.core = core                 # the same module instance at every use
        width = cfg.core_width(ctx.d_model)
        attn = core.attn
        self.adapter = QKVAdapter(width, cfg.adapter_rank, (attn.q_size, attn.kv_size, attn.kv_size),
                                  ctx.init_std) if cfg.adapter_rank else None
        self.proj = nn.Linear(width, ctx.d_model, bias=False) if cfg.concat_embeddings else None
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=ctx.init_std * ctx.residual_scale)

    def _input(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if not self.cfg.concat_embeddings:
            return x
        if ctx.embeddings is None:
            raise ValueError("shared_attention with concat_embeddings needs ForwardContext.embeddings")
        return torch.cat([x, ctx.embeddings.to(x.dtype)], dim=-1)

    def _output(self, u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = a + self.core.mlp(self.core.norm_mlp(u + a))
        return self.proj(h) if self.proj is not None else h

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        u = self._input(x, ctx)
        a = self.core.attn(self.core.norm_attn(u), ctx, qkv_delta=self.adapter)
        return self._output(u, a)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None):
        return self.core.attn.init_state(batch_size, max_len, device, dtype)

    def step(self, x_t: torch.Tensor, state, ctx: ForwardContext):
        u = self._input(x_t, ctx)
        a, state = self.core.attn.step(self.core.norm_attn(u), state, ctx, qkv_delta=self.adapter)
        return self._output(u, a), state

    # -- accounting ------------------------------------------------------------------------
    def _own_parameters(self) -> int:
        return sum(p.numel() for m in (self.adapter, self.proj) if m is not None for p in m.parameters())

    def _core_parameters(self) -> int:
        return sum(p.numel() for p in self.core.parameters())

    def num_parameters(self, active: bool = False) -> int:
        """The shared core counts at its first use only, so per-layer counts sum to the model's."""
        return self._own_parameters() + (self._core_parameters() if self.layer.use_index == 0 else 0)

    def kv_bytes(self, context: int, dtype: torch.dtype = torch.bfloat16) -> int:
        return self.core.attn.kv_bytes(context, dtype)

    def flops_per_token(self, context: int) -> int:
        # every use runs the whole core, whoever owns its weights
        attn_scores = 4 * self.core.attn.n_heads * self.core.attn.head_dim * self.core.attn.attended(context)
        return 2 * (self._core_parameters() + self._own_parameters()) + attn_scores
