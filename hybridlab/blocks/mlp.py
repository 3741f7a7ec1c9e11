"""Dense feed-forward block: SwiGLU (default), GELU or squared-ReLU (Nemotron-H)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Block, BlockConfig, ForwardContext, LayerContext
from .registry import register_block

ACTIVATIONS = ("swiglu", "gelu", "relu2")


def hidden_size(d_model: int, mult: float, multiple_of: int = 1) -> int:
    """round(mult * d_model), rounded up to a multiple of ``multiple_of``."""
    h = round(mult * d_model)
    return multiple_of * math.ceil(h / multiple_of)


class FeedForward(nn.Module):
    """d -> hidden -> d. SwiGLU: silu(x W_gate) * (x W_up) W_down (gate and up fused in w_in)."""

    def __init__(self, d_model: int, hidden: int, activation: str = "swiglu", bias: bool = False,
                 init_std: float = 0.02, out_std: float = 0.02):
        super().__init__()
        self.activation = activation
        gated = 2 if activation == "swiglu" else 1
        self.w_in = nn.Linear(d_model, gated * hidden, bias=bias)
        self.w_out = nn.Linear(hidden, d_model, bias=bias)
        nn.init.normal_(self.w_in.weight, std=init_std)
        nn.init.normal_(self.w_out.weight, std=out_std)
        for lin in (self.w_in, self.w_out):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w_in(x)
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.activation == "gelu":
            h = F.gelu(h)
        else:  # relu2
            h = F.relu(h).square()
        return self.w_out(h)


@dataclass
class MLPConfig(BlockConfig):
    """Fields (YAML keys) and defaults:

    activation: "swiglu"  swiglu | gelu | relu2 (squared ReLU, Nemotron-H)
    hidden_mult: 4.0      hidden width = round(hidden_mult * d_model) (8/3 ~ 2.667 matches a
                          4x GELU MLP's parameters with SwiGLU)
    multiple_of: 1        round the hidden width up to a multiple of this (e.g. 64 for kernels)
    bias: False           biases on both projections
    """

    activation: str = "swiglu"
    hidden_mult: float = 4.0
    multiple_of: int = 1
    bias: bool = False

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        problems = []
        if self.activation not in ACTIVATIONS:
            problems.append(("activation", f"unknown activation {self.activation!r}; "
                                           f"expected one of {', '.join(ACTIVATIONS)}"))
        if self.hidden_mult <= 0:
            problems.append(("hidden_mult", f"must be > 0, got {self.hidden_mult}"))
        if self.multiple_of < 1:
            problems.append(("multiple_of", f"must be >= 1, got {self.multiple_of}"))
        return problems


@register_block("mlp")
class MLP(Block):
    Config = MLPConfig
    kind = "ffn"
    megatron_symbol = "-"
    hf_layer_type = "dense"

    def __init__(self, cfg: MLPConfig, ctx: LayerContext):
        super().__init__(cfg, ctx)
        self.hidden = hidden_size(ctx.d_model, cfg.hidden_mult, cfg.multiple_of)
        self.ffn = FeedForward(ctx.d_model, self.hidden, cfg.activation, cfg.bias,
                               init_std=ctx.init_std, out_std=ctx.init_std * ctx.residual_scale)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self.ffn(x)

    def step(self, x_t: torch.Tensor, state, ctx: ForwardContext):
        return self.ffn(x_t), state
