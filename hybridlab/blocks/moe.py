"""Mixture-of-experts feed-forward: top-k router over SwiGLU experts, plus optional shared experts.

Dispatch is vectorised: the (token, expert) assignments are sorted by expert, each expert runs
one matmul over its contiguous group, and the weighted results are scattered back with
``index_add_``. The only Python loop is over experts. That dispatch reads the per-expert counts
on the host, which a CUDA graph cannot hold; while a graph is being captured (the trainer's
graphed step) every expert runs on every token instead, weighted by a routing matrix that is
zero where a token did not pick the expert: the same sum, n_experts / top_k times the matmuls.

Training adds two auxiliary losses, returned by ``aux_loss()`` after each forward:
* load balancing (Switch Transformer): n_experts * sum_i f_i * P_i, with f_i the share of
  assignments routed to expert i and P_i its mean router probability;
* router z-loss (ST-MoE): mean over tokens of logsumexp(router logits)^2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Block, BlockConfig, ForwardContext, LayerContext
from .mlp import ACTIVATIONS, FeedForward, hidden_size
from .registry import register_block

SCORES = ("softmax", "sigmoid")


def capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream (the dense dispatch then)."""
    return torch.cuda.is_current_stream_capturing()


@dataclass
class MoEConfig(BlockConfig):
    """Fields (YAML keys) and defaults:

    n_experts: 8              routed experts
    top_k: 2                  experts per token
    hidden_mult: 4.0          each expert's hidden width = round(hidden_mult * d_model)
    multiple_of: 1            round hidden widths up to a multiple of this
    n_shared_experts: 0       always-on SwiGLU experts added to every token (DeepSeek/Granite)
    shared_hidden_mult: None  shared expert width multiplier; None = hidden_mult
    activation: "swiglu"      experts (routed and shared): swiglu, or relu2 / gelu (not gated,
                              Nemotron-H's experts)
    score: "softmax"          router scores: softmax (Mixtral/Jamba) or sigmoid (DeepSeek-V3)
    normalize_top_k: True     rescale the chosen k scores to sum to 1
    lb_loss_coef: 0.01        weight of the load-balancing loss in aux_loss()
    z_loss_coef: 0.001        weight of the router z-loss in aux_loss()
    """

    n_experts: int = 8
    top_k: int = 2
    hidden_mult: float = 4.0
    multiple_of: int = 1
    n_shared_experts: int = 0
    shared_hidden_mult: float | None = None
    score: str = "softmax"
    activation: str = "swiglu"
    normalize_top_k: bool = True
    lb_loss_coef: float = 0.01
    z_loss_coef: float = 0.001

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        problems = []
        if self.n_experts < 1:
            problems.append(("n_experts", f"must be >= 1, got {self.n_experts}"))
        if self.top_k < 1:
            problems.append(("top_k", f"must be >= 1, got {self.top_k}"))
        elif self.top_k > self.n_experts:
            problems.append(("top_k", f"top_k={self.top_k} exceeds n_experts={self.n_experts}"))
        if self.hidden_mult <= 0:
            problems.append(("hidden_mult", f"must be > 0, got {self.hidden_mult}"))
        if self.multiple_of < 1:
            problems.append(("multiple_of", f"must be >= 1, got {self.multiple_of}"))
        if self.n_shared_experts < 0:
            problems.append(("n_shared_experts", f"must be >= 0, got {self.n_shared_experts}"))
        if self.shared_hidden_mult is not None and self.shared_hidden_mult <= 0:
            problems.append(("shared_hidden_mult", f"must be > 0, got {self.shared_hidden_mult}"))
        if self.activation not in ACTIVATIONS:
            problems.append(("activation", f"unknown activation {self.activation!r}; "
                                           f"expected one of {', '.join(ACTIVATIONS)}"))
        if self.score not in SCORES:
            problems.append(("score", f"unknown score {self.score!r}; expected one of {', '.join(SCORES)}"))
        for name in ("lb_loss_coef", "z_loss_coef"):
            if getattr(self, name) < 0:
                problems.append((name, f"must be >= 0, got {getattr(self, name)}"))
        return problems


@register_block("moe")
class MoE(Block):
    Config = MoEConfig
    kind = "ffn"
    megatron_symbol = "E"
    hf_layer_type = "sparse"

    def __init__(self, cfg: MoEConfig, ctx: LayerContext):
        super().__init__(cfg, ctx)
        d, E = ctx.d_model, cfg.n_experts
        self.hidden = hidden_size(d, cfg.hidden_mult, cfg.multiple_of)
        self.router = nn.Linear(d, E, bias=False)
        # expert weights stacked: w_in[e] = [gate | up] (d, 2h), w_out[e] (h, d)
        gated = 2 if cfg.activation == "swiglu" else 1
        self.w_in = nn.Parameter(torch.empty(E, d, gated * self.hidden))
        self.w_out = nn.Parameter(torch.empty(E, self.hidden, d))
        self.shared = None
        if cfg.n_shared_experts:
            # n shared SwiGLU experts summed == one SwiGLU of n times the width
            shared_h = hidden_size(d, cfg.shared_hidden_mult or cfg.hidden_mult, cfg.multiple_of)
            self.shared = FeedForward(d, cfg.n_shared_experts * shared_h, cfg.activation,
                                      init_std=ctx.init_std, out_std=ctx.init_std * ctx.residual_scale)
        nn.init.normal_(self.router.weight, std=ctx.init_std)
        nn.init.normal_(self.w_in, std=ctx.init_std)
        nn.init.normal_(self.w_out, std=ctx.init_std * ctx.residual_scale)
        self._aux: torch.Tensor | None = None

    # -- routing ---------------------------------------------------------------------------
    def route(self, x: torch.Tensor):
        """x: (T, d) -> weights (T, k), experts (T, k) long, router logits (T, E).

        Routing math runs in float32 (float64 for float64 inputs) so ties and near-ties
        resolve the same way in forward and step.
        """
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        logits = F.linear(x.to(acc), self.router.weight.to(acc))
        scores = logits.softmax(-1) if self.cfg.score == "softmax" else logits.sigmoid()
        weights, experts = scores.topk(self.cfg.top_k, dim=-1)
        if self.cfg.normalize_top_k:
            weights = weights / weights.sum(-1, keepdim=True)
        return weights, experts, logits

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        """The experts' activation on their first projection (gate | up for swiglu)."""
        if self.cfg.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            return F.silu(gate) * up
        return F.gelu(h) if self.cfg.activation == "gelu" else F.relu(h).square()

    def experts_forward(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor):
        """Run every (token, expert) assignment, grouped by expert; returns (T, d)."""
        if x.is_cuda and capturing():
            return self.experts_forward_dense(x, weights, experts)
        T, k = experts.shape
        flat_experts = experts.reshape(-1)                        # (T*k,)
        order = flat_experts.argsort(stable=True)                 # assignments grouped by expert
        token_of = order // k                                     # token of each sorted assignment
        counts = torch.bincount(flat_experts, minlength=self.cfg.n_experts).tolist()
        groups = x[token_of].split(counts)
        outs = []
        for e, xe in enumerate(groups):                           # loop over experts, not tokens
            outs.append(self._act(xe @ self.w_in[e]) @ self.w_out[e])
        y = torch.cat(outs) * weights.reshape(-1)[order, None].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token_of, y)

    def experts_forward_dense(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor):
        """Every expert on every token, with no data-dependent shape or host read: (T, d)."""
        y = torch.matmul(self._act(torch.matmul(x.unsqueeze(0), self.w_in)), self.w_out)  # (E, T, d)
        route = torch.zeros(x.shape[0], self.cfg.n_experts, dtype=weights.dtype, device=x.device)
        route = route.scatter(1, experts, weights)                                # (T, E)
        return torch.einsum("etd,te->td", y, route.to(y.dtype)).to(x.dtype)

    def aux_losses(self, logits: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        E = self.cfg.n_experts
        probs = logits.softmax(-1) if self.cfg.score == "softmax" else \
            logits.sigmoid() / logits.sigmoid().sum(-1, keepdim=True)
        flat = experts.reshape(-1)         # assignment counts by scatter: bincount reads the host
        counts = torch.zeros(E, dtype=probs.dtype, device=flat.device).scatter_add_(
            0, flat, torch.ones_like(flat, dtype=probs.dtype))
        f = counts / experts.numel()
        load_balance = E * (f * probs.mean(0)).sum()
        z_loss = torch.logsumexp(logits, dim=-1).square().mean()
        return self.cfg.lb_loss_coef * load_balance + self.cfg.z_loss_coef * z_loss

    # -- compute ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, ctx: ForwardContext | None = None) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, experts, logits = self.route(flat)
        y = self.experts_forward(flat, weights, experts)
        if self.shared is not None:
            y = y + self.shared(flat)
        self._aux = self.aux_losses(logits, experts)
        return y.reshape(shape)

    def step(self, x_t: torch.Tensor, state, ctx: ForwardContext):
        return self.forward(x_t, ctx), state

    def aux_loss(self) -> torch.Tensor | None:
        return self._aux

    # -- accounting ------------------------------------------------------------------------
    def num_parameters(self, active: bool = False) -> int:
        if not active:
            return super().num_parameters()
        per_expert = (self.w_in.numel() + self.w_out.numel()) // self.cfg.n_experts
        shared = sum(p.numel() for p in self.shared.parameters()) if self.shared is not None else 0
        return self.router.weight.numel() + self.cfg.top_k * per_expert + shared
