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

``structure: zamba2`` builds the block as transformers' Zamba2 "hybrid" layer instead: the core
reads [x, embeddings] (raw stream, no layer norm before it), projects back to d_model in the
attention's output (scores scaled by 1/sqrt(head_dim / 2)), runs its gated MLP at d_model with a
per-use LoRA on gate_up, and a per-use linear maps the result T into the layer's own Mamba-2:
    T = proj(mlp(n2(attn(n1([x, emb])))));  out = mamba(norm(x + T))     (the layer adds x)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hybridlab.errors import Problem, SpecError

from .attention import Attention, AttentionConfig
from .base import Block, ForwardContext, LayerContext
from .mamba2 import Mamba2, Mamba2Config
from .mlp import ACTIVATIONS, FeedForward, hidden_size
from .norms import RMSNorm
from .registry import register_block

_ATTENTION_FIELDS = AttentionConfig.field_names()
STRUCTURES = ("hybridlab", "zamba2")
ZAMBA2_GATES = {"swiglu": F.silu, "geglu": F.gelu}      # Zamba2's MLP is gated: act(gate) * up


@dataclass
class SharedAttentionConfig(AttentionConfig):
    """Fields (YAML keys) and defaults. The attention fields are those of ``attention``; every use
    of one block name must agree on them (only ``adapter_rank`` may differ per use).

    n_heads: 8, n_kv_heads: None, head_dim: None, rope: True, rope_theta: 10000.0,
    rope_fraction: 1.0, window: None, qkv_bias: False
                            the shared core's attention (head_dim defaults to core width / n_heads)
    mlp_hidden_mult: 4.0    the core MLP's hidden width = round(mult * core width)
    mlp_activation: "swiglu"  swiglu | gelu | relu2
    adapter_rank: 0         per-use LoRA rank on q/k/v (zamba2: and the MLP's gate_up); 0 = none
    concat_embeddings: False  feed [x, token embeddings] (core width 2*d_model), project back per use
    norm_eps: 1e-5          eps of the core's RMSNorms (and zamba2's Mamba input norm)
    structure: "hybridlab"  hybridlab | zamba2 (transformers' Zamba2 hybrid layer, see the module
                            docstring: needs concat_embeddings, mlp_activation swiglu | geglu,
                            MLP width = round(mult * d_model))
    mamba: {}               zamba2: the layer's own Mamba-2 (mamba2 fields)
    """

    # the attention fields are inherited from AttentionConfig
    mlp_hidden_mult: float = 4.0
    mlp_activation: str = "swiglu"
    adapter_rank: int = 0
    concat_embeddings: bool = False
    norm_eps: float = 1e-5
    structure: str = "hybridlab"
    mamba: dict = field(default_factory=dict)

    @property
    def zamba2(self) -> bool:
        return self.structure == "zamba2"

    def core_width(self, d_model: int) -> int:
        return 2 * d_model if self.concat_embeddings else d_model

    def mlp_width(self, d_model: int) -> int:
        """The core MLP's input width: the core width, or d_model in the zamba2 structure."""
        return d_model if self.zamba2 else self.core_width(d_model)

    def mamba_config(self) -> Mamba2Config:
        return Mamba2Config(**self.mamba)

    def attention_config(self) -> AttentionConfig:
        return AttentionConfig(**{name: getattr(self, name) for name in _ATTENTION_FIELDS})

    def core_key(self) -> tuple:
        """Everything the shared weights depend on (all fields but the per-use adapter rank and
        the zamba2 layer's own Mamba)."""
        return tuple((k, v) for k, v in vars(self).items() if k not in ("adapter_rank", "mamba"))

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        problems = super().validate(self.core_width(d_model))
        if self.mlp_hidden_mult <= 0:
            problems.append(("mlp_hidden_mult", f"must be > 0, got {self.mlp_hidden_mult}"))
        problems += self._structure_problems(d_model)
        if self.adapter_rank < 0:
            problems.append(("adapter_rank", f"must be >= 0, got {self.adapter_rank}"))
        if self.share_kv:
            problems.append(("share_kv", "shared attention keeps its own keys and values; "
                                         "share_kv is for attention blocks"))
        return problems

    def _structure_problems(self, d_model: int) -> list[tuple[str, str]]:
        if self.structure not in STRUCTURES:
            return [("structure", f"unknown structure {self.structure!r}; expected one of "
                                  f"{', '.join(STRUCTURES)}")]
        gates = ZAMBA2_GATES if self.zamba2 else ACTIVATIONS
        problems = [] if self.mlp_activation in gates else [
            ("mlp_activation", f"unknown activation {self.mlp_activation!r}"
                               f"{' for structure zamba2' if self.zamba2 else ''}; expected one "
                               f"of {', '.join(gates)}")]
        if self.norm_eps <= 0:
            problems.append(("norm_eps", f"must be > 0, got {self.norm_eps}"))
        if not self.zamba2:
            if self.mamba:
                problems.append(("mamba", "a layer's own Mamba is for structure: zamba2"))
            return problems
        if not self.concat_embeddings:
            problems.append(("concat_embeddings", "structure zamba2 reads [x, embeddings]: set "
                                                  "concat_embeddings: true"))
        if not isinstance(self.mamba, dict):
            return problems + [("mamba", "must be a mapping of mamba2 fields")]
        unknown = sorted(set(self.mamba) - set(Mamba2Config.field_names()))
        if unknown:
            return problems + [(f"mamba.{k}", "unknown field for Mamba2Config") for k in unknown]
        return problems + [(f"mamba.{k}", m) for k, m in self.mamba_config().validate(d_model)]

    def kv_source(self, d_model: int) -> dict:
        return super().kv_source(self.core_width(d_model))   # its core leaves them, at core width


class Zamba2Attention(Attention):
    """transformers' Zamba2 attention: scores scaled by 1/sqrt(head_dim / 2) -- here queries times
    sqrt(2) before the usual 1/sqrt(head_dim) -- and the output projected to d_model."""

    def __init__(self, cfg: AttentionConfig, ctx: LayerContext, d_out: int, out_std: float):
        super().__init__(cfg, ctx)
        self.wo = nn.Linear(self.q_size, d_out, bias=False)
        nn.init.normal_(self.wo.weight, std=out_std)

    def _heads(self, x, positions, qkv_delta):
        q, k, v = super()._heads(x, positions, qkv_delta)
        return q * math.sqrt(2.0), k, v


class SharedCore(nn.Module):
    """The weights every use shares: pre-norms, attention, MLP, all at the core width."""

    def __init__(self, cfg: SharedAttentionConfig, ctx: LayerContext):
        super().__init__()
        width = cfg.core_width(ctx.d_model)
        core_ctx = LayerContext(index=ctx.index, name=ctx.name, d_model=width, n_layers=ctx.n_layers,
                                init_std=ctx.init_std, residual_scale=ctx.residual_scale, n_meta=ctx.n_meta)
        self.key = cfg.core_key()
        out_std = ctx.init_std * ctx.residual_scale
        mlp_width = cfg.mlp_width(ctx.d_model)
        self.norm_attn = RMSNorm(width, cfg.norm_eps)
        self.attn = Zamba2Attention(cfg.attention_config(), core_ctx, ctx.d_model, out_std) \
            if cfg.zamba2 else Attention(cfg.attention_config(), core_ctx)
        self.norm_mlp = RMSNorm(mlp_width, cfg.norm_eps)
        self.mlp = FeedForward(mlp_width, hidden_size(mlp_width, cfg.mlp_hidden_mult),
                               "swiglu" if cfg.zamba2 else cfg.mlp_activation,
                               init_std=ctx.init_std, out_std=out_std)


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
        self.proj = nn.Linear(ctx.d_model if cfg.zamba2 else width, ctx.d_model, bias=False) \
            if cfg.concat_embeddings else None
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=ctx.init_std * ctx.residual_scale)
        self.mlp_adapter = self.mamba = self.mamba_norm = None
        if cfg.zamba2:
            self.pre_norm = False        # the builder hands this block the raw residual stream
            mlp = core.mlp
            if cfg.adapter_rank:         # LoRA on the MLP's gate_up (Zamba2's per-use adapter)
                self.mlp_adapter = nn.Sequential(
                    nn.Linear(mlp.w_in.in_features, cfg.adapter_rank, bias=False),
                    nn.Linear(cfg.adapter_rank, mlp.w_in.out_features, bias=False))
                for lin in self.mlp_adapter:
                    nn.init.normal_(lin.weight, std=ctx.init_std)
            self.mamba_norm = RMSNorm(ctx.d_model, cfg.norm_eps)
            self.mamba = Mamba2(cfg.mamba_config(), dataclasses.replace(ctx, name=f"{ctx.name}.mamba"))

    def _input(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if not self.cfg.concat_embeddings:
            return x
        if ctx.embeddings is None:
            raise ValueError("shared_attention with concat_embeddings needs ForwardContext.embeddings")
        return torch.cat([x, ctx.embeddings.to(x.dtype)], dim=-1)

    def _output(self, u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = a + self.core.mlp(self.core.norm_mlp(u + a))
        return self.proj(h) if self.proj is not None else h

    def _zamba2_update(self, a: torch.Tensor) -> torch.Tensor:
        """T = proj(mlp(n2(a))), the MLP's gate_up with this use's adapter."""
        core, h = self.core, self.core.norm_mlp(a)
        gate_up = core.mlp.w_in(h)
        if self.mlp_adapter is not None:
            gate_up = gate_up + self.mlp_adapter(h)
        gate, up = gate_up.chunk(2, dim=-1)
        return self.proj(core.mlp.w_out(ZAMBA2_GATES[self.cfg.mlp_activation](gate) * up))

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        u = self._input(x, ctx)
        a = self.core.attn(self.core.norm_attn(u), ctx, qkv_delta=self.adapter)
        if self.mamba is not None:
            return self.mamba(self.mamba_norm(x + self._zamba2_update(a)), ctx)
        return self._output(u, a)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None):
        state = self.core.attn.init_state(batch_size, max_len, device, dtype)
        if self.mamba is None:
            return state
        return {"attention": state,
                "mamba": self.mamba.init_state(batch_size, max_len, device, dtype)}

    def step(self, x_t: torch.Tensor, state, ctx: ForwardContext):
        u = self._input(x_t, ctx)
        if self.mamba is None:
            a, state = self.core.attn.step(self.core.norm_attn(u), state, ctx,
                                           qkv_delta=self.adapter)
            return self._output(u, a), state
        a, state["attention"] = self.core.attn.step(self.core.norm_attn(u), state["attention"],
                                                    ctx, qkv_delta=self.adapter)
        y, state["mamba"] = self.mamba.step(self.mamba_norm(x_t + self._zamba2_update(a)),
                                            state["mamba"], ctx)
        return y, state

    # -- accounting ------------------------------------------------------------------------
    def _own_parameters(self) -> int:
        return sum(p.numel() for m in (self.adapter, self.proj, self.mlp_adapter, self.mamba,
                                       self.mamba_norm) if m is not None for p in m.parameters())

    def _core_parameters(self) -> int:
        return sum(p.numel() for p in self.core.parameters())

    def num_parameters(self, active: bool = False) -> int:
        """The shared core counts at its first use only, so per-layer counts sum to the model's."""
        return self._own_parameters() + (self._core_parameters() if self.layer.use_index == 0 else 0)

    def kv_bytes(self, context: int, dtype: torch.dtype = torch.bfloat16) -> int:
        return self.core.attn.kv_bytes(context, dtype)

    def state_bytes(self, dtype: torch.dtype = torch.bfloat16) -> int:
        return self.mamba.state_bytes(dtype) if self.mamba is not None else 0

    def flops_per_token(self, context: int) -> int:
        # every use runs the whole core, whoever owns its weights
        attn_scores = 4 * self.core.attn.n_heads * self.core.attn.head_dim * self.core.attn.attended(context)
        if self.mamba is None:
            return 2 * (self._core_parameters() + self._own_parameters()) + attn_scores
        mamba = sum(p.numel() for p in self.mamba.parameters())
        return 2 * (self._core_parameters() + self._own_parameters() - mamba) + attn_scores + \
            self.mamba.flops_per_token(context)
