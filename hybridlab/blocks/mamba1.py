"""Mamba-1 mixer (selective SSM), as mamba-ssm's ``Mamba`` (modules/mamba_simple.py).

    xz = in_proj(h); x, z = split(xz)                  D = expand * d_model channels each
    x  = silu(causal_conv1d(x))                         depthwise, width d_conv
    dt_raw, B, C = split(x_proj(x))                     dt_rank, d_state, d_state
    (dt_raw, B, C = rmsnorm each, with dt_bc_norm: Jamba's dt/B/C layernorms)
    y  = selective_scan(x, dt_proj.weight @ dt_raw, A=-exp(A_log), B, C, D, z,
                        delta_bias=dt_proj.bias, delta_softplus=True)
    out = out_proj(y)

Parameter names match mamba-ssm, so checkpoints map one to one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hybridlab.kernels import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update
from .base import Block, BlockConfig, ForwardContext, LayerContext, dtype_bytes
from .norms import RMSNorm
from .registry import register_block



@dataclass
class Mamba1Config(BlockConfig):
    """YAML keys of a ``mamba1`` block (defaults are mamba-ssm's)."""

    d_state: int = 16             # N, SSM state size per channel
    d_conv: int = 4               # width of the depthwise causal conv
    expand: float = 2             # inner channels D = int(expand * d_model)
    dt_rank: int | str = "auto"   # rank of the dt projection; "auto" = ceil(d_model / 16)
    dt_min: float = 1e-3          # initial dt drawn log-uniform in [dt_min, dt_max]
    dt_max: float = 0.1
    dt_init: str = "random"       # dt_proj.weight init: "random" U(+-dt_rank^-0.5 * dt_scale) or "constant"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4   # lower clamp of the initial dt
    conv_bias: bool = True        # bias in the causal conv
    bias: bool = False            # bias in in_proj / out_proj
    dt_bc_norm: bool = False      # RMSNorm on dt_raw, B and C before the scan (Jamba)
    dt_bc_norm_eps: float = 1e-6  # their eps (Jamba uses the model's rms_norm_eps)

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        errs = []
        if not isinstance(self.d_state, int) or self.d_state <= 0:
            errs.append(("d_state", f"must be a positive integer, got {self.d_state!r}"))
        if not isinstance(self.d_conv, int) or self.d_conv < 1:
            errs.append(("d_conv", f"must be an integer >= 1, got {self.d_conv!r}"))
        if not isinstance(self.expand, (int, float)) or self.expand <= 0:
            errs.append(("expand", f"must be > 0, got {self.expand!r}"))
        elif int(self.expand * d_model) < 1:
            errs.append(("expand", f"expand * d_model = {self.expand * d_model} gives no channels"))
        if self.dt_rank != "auto" and (isinstance(self.dt_rank, bool) or not isinstance(self.dt_rank, int)
                                       or self.dt_rank <= 0):
            errs.append(("dt_rank", f"must be 'auto' or a positive integer, got {self.dt_rank!r}"))
        if not (self.dt_min > 0 and self.dt_max >= self.dt_min):
            errs.append(("dt_max", f"need 0 < dt_min <= dt_max, got {self.dt_min} and {self.dt_max}"))
        if self.dt_init not in ("random", "constant"):
            errs.append(("dt_init", f"must be 'random' or 'constant', got {self.dt_init!r}"))
        if self.dt_init_floor <= 0:
            errs.append(("dt_init_floor", f"must be > 0, got {self.dt_init_floor}"))
        if self.dt_bc_norm_eps <= 0:
            errs.append(("dt_bc_norm_eps", f"must be > 0, got {self.dt_bc_norm_eps}"))
        return errs

    def inner(self, d_model: int) -> tuple[int, int]:
        """(D, dt_rank) for a given d_model."""
        rank = math.ceil(d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)
        return int(self.expand * d_model), rank


def _f32(t: torch.Tensor) -> torch.Tensor:
    """SSM parameters go into the scan in fp32 (fp64 stays fp64, for tests)."""
    return t if t.dtype == torch.float64 else t.float()


def _keep(p: torch.Tensor) -> torch.Tensor:
    p._no_reinit = True          # the model builder leaves these inits alone
    return p


@register_block("mamba1")
class Mamba1(Block):
    """Mamba-1 selective-SSM mixer. Decode state: conv window + SSM state (see ``init_state``)."""

    Config = Mamba1Config
    kind = "mixer"
    megatron_symbol = "M"
    hf_layer_type = "linear_attention"

    def __init__(self, cfg: Mamba1Config, ctx: LayerContext):
        super().__init__(cfg, ctx)
        dm = ctx.d_model
        D, R = cfg.inner(dm)
        N, W = cfg.d_state, cfg.d_conv
        self.d_inner, self.dt_rank, self.d_state, self.d_conv = D, R, N, W

        self.in_proj = nn.Linear(dm, 2 * D, bias=cfg.bias)
        self.conv1d = nn.Conv1d(D, D, W, groups=D, padding=W - 1, bias=cfg.conv_bias)
        self.x_proj = nn.Linear(D, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, D, bias=True)
        self.out_proj = nn.Linear(D, dm, bias=cfg.bias)
        # S4D-real: A = -[1..N] for every channel, kept as log in fp32.
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(D))
        if cfg.dt_bc_norm:      # named as in transformers' JambaMambaMixer
            self.dt_layernorm = RMSNorm(R, cfg.dt_bc_norm_eps)
            self.b_layernorm = RMSNorm(N, cfg.dt_bc_norm_eps)
            self.c_layernorm = RMSNorm(N, cfg.dt_bc_norm_eps)
        self._init_weights(ctx)

    def _init_weights(self, ctx: LayerContext) -> None:
        cfg = self.cfg
        std = ctx.init_std
        nn.init.normal_(self.in_proj.weight, std=std)
        nn.init.normal_(self.x_proj.weight, std=std)
        nn.init.normal_(self.out_proj.weight, std=std * ctx.residual_scale)
        for lin in (self.in_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        # conv keeps nn.Conv1d's default (kaiming-uniform) init, as mamba-ssm.
        _keep(self.conv1d.weight)
        if self.conv1d.bias is not None:
            _keep(self.conv1d.bias)
        # dt_proj: weight ~ U(+-rank^-0.5 * scale); bias = softplus^-1(dt), dt log-uniform.
        w = self.dt_rank ** -0.5 * cfg.dt_scale
        with torch.no_grad():
            if cfg.dt_init == "constant":
                self.dt_proj.weight.fill_(w)
            else:
                self.dt_proj.weight.uniform_(-w, w)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min))
                           + math.log(cfg.dt_min)).clamp(min=cfg.dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        for p in (self.dt_proj.weight, self.dt_proj.bias, self.A_log, self.D):
            _keep(p)

    # -- compute ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        # Projections as W @ x^T give (B, channels, L) with time contiguous: the layout the conv
        # and scan kernels read in coalesced tiles (as mamba-ssm does).
        R, N = self.dt_rank, self.d_state
        xz = torch.matmul(self.in_proj.weight, x.transpose(1, 2))          # (B, 2D, L)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        xs, z = xz.chunk(2, dim=1)
        xs = causal_conv1d(xs, self.conv1d.weight[:, 0], self.conv1d.bias, activation="silu",
                           seq_idx=ctx.seq_idx)
        dt_raw, B, C = torch.matmul(self.x_proj.weight, xs).split([R, N, N], dim=1)
        if self.cfg.dt_bc_norm:        # the norms act on the channel dim: (B, ch, L) -> ... -> back
            dt_raw, B, C = (n(t.transpose(1, 2)).transpose(1, 2) for n, t in
                            ((self.dt_layernorm, dt_raw), (self.b_layernorm, B),
                             (self.c_layernorm, C)))
        dt = torch.matmul(self.dt_proj.weight, dt_raw)                     # (B, D, L), no bias
        y = selective_scan(xs, dt, -torch.exp(_f32(self.A_log)), B, C, _f32(self.D), z,
                           _f32(self.dt_proj.bias), delta_softplus=True, seq_idx=ctx.seq_idx)
        return self.out_proj(y.transpose(1, 2))

    def _state_dtypes(self, dtype: torch.dtype) -> tuple[torch.dtype, torch.dtype]:
        """conv window in the activation dtype; SSM state at least fp32 (it accumulates
        over the whole context, bf16 would drift)."""
        return dtype, torch.promote_types(dtype, torch.float32)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None) -> dict[str, Any]:
        dtype = dtype or self.in_proj.weight.dtype
        device = device or self.in_proj.weight.device
        conv_dt, ssm_dt = self._state_dtypes(dtype)
        return {
            "conv_state": torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=conv_dt),
            "ssm_state": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dt),
        }

    def step(self, x_t: torch.Tensor, state: dict[str, Any], ctx: ForwardContext):
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)                       # (B, D)
        xs = causal_conv1d_update(xs, state["conv_state"], self.conv1d.weight[:, 0],
                                  self.conv1d.bias, activation="silu")
        dt_raw, B, C = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.cfg.dt_bc_norm:
            dt_raw, B, C = self.dt_layernorm(dt_raw), self.b_layernorm(B), self.c_layernorm(C)
        dt = dt_raw @ self.dt_proj.weight.t()                               # bias goes in the update
        y = selective_state_update(state["ssm_state"], xs, dt, -torch.exp(_f32(self.A_log)),
                                   B, C, _f32(self.D), z, _f32(self.dt_proj.bias), dt_softplus=True)
        return self.out_proj(y), state

    # -- training --------------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """mamba-ssm's ``_no_weight_decay``: A_log (a (D, N) matrix the 1-D default would decay)
        and D; the default adds dt_proj.bias, conv1d.bias and any projection biases."""
        return super().no_weight_decay() | {"A_log", "D"}

    # -- accounting ------------------------------------------------------------------------
    def state_bytes(self, dtype: torch.dtype = torch.bfloat16) -> int:
        conv_dt, ssm_dt = self._state_dtypes(dtype)
        return (self.d_inner * (self.d_conv - 1) * dtype_bytes(conv_dt)
                + self.d_inner * self.d_state * dtype_bytes(ssm_dt))

    def flops_per_token(self, context: int) -> int:
        """2 per multiply-add, 1 per other elementwise op (exp, softplus, silu count 1)."""
        dm, D, R, N, W = self.layer.d_model, self.d_inner, self.dt_rank, self.d_state, self.d_conv
        proj = 2 * (dm * 2 * D + D * (R + 2 * N) + R * D + D * dm)
        conv = 2 * D * W + D * (1 if self.cfg.conv_bias else 0) + 2 * D      # + silu (~2)
        # per (channel, state): dt*A, exp, (dt*u)*B, h = a*h + bu (2), y += C*h (2)
        # per channel: +bias, softplus, dt*u, +D*u (2), silu(z), *gate
        scan = 7 * D * N + 7 * D
        bias = (2 * D + dm) if self.cfg.bias else 0
        return proj + conv + scan + bias
