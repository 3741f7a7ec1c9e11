"""Mamba-2 mixer (SSD), mamba-ssm's ``Mamba2`` layout and defaults.

    in_proj(x) -> [z, x, B, C, dt]
    xBC = silu(causal_conv1d(xBC))                  (seq_idx from the ForwardContext)
    y = ssd(x, dt, A, B, C, D, dt_bias, softplus, dt_limit)
    y = rmsnorm_gated(y, z)   (or y * silu(z) inside ssd when rmsnorm=False)
    out = out_proj(y)

Parameter names match mamba-ssm (in_proj, conv1d, dt_bias, A_log, D, norm, out_proj).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hybridlab.kernels import causal_conv1d as _causal_conv1d
from hybridlab.kernels import causal_conv1d_update as _causal_conv1d_update
from hybridlab.kernels import rmsnorm_gated as _rmsnorm_gated
from hybridlab.kernels import ssd as _ssd
from hybridlab.kernels import ssd_state_update as _ssd_state_update
from .base import Block, BlockConfig, ForwardContext, LayerContext, dtype_bytes
from .registry import register_block



def _as_dt_limit(v) -> tuple[float, float]:
    """YAML has no inf: accept null (no limit), [lo, hi] with hi null meaning inf, or a tuple."""
    if v is None:
        return (0.0, math.inf)
    lo, hi = v
    return (0.0 if lo is None else float(lo), math.inf if hi is None else float(hi))


@dataclass
class Mamba2Config(BlockConfig):
    """Mamba-2 mixer settings (the YAML keys). Defaults are mamba-ssm's ``Mamba2``."""

    d_state: int = 128                 # N, state size per head
    d_conv: int = 4                    # short causal conv width
    expand: int = 2                    # d_inner = expand * d_model
    d_ssm: int | None = None           # d_inner set directly (FalconH1's mamba_d_ssm); None: expand
    headdim: int = 64                  # P; nheads = d_inner / headdim
    ngroups: int = 1                   # G, heads share B/C within a group
    A_init_range: tuple = (1.0, 16.0)  # A = -U(lo, hi), stored as A_log
    D_has_hdim: bool = False           # D per (head, channel) instead of per head
    dt_min: float = 1e-3               # dt_bias init: softplus^-1 of log-uniform(dt_min, dt_max)
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_limit: Any = (0.0, math.inf)    # clamp of Δ; YAML: null or [lo, hi] (hi null = inf)
    rmsnorm: bool = True               # gated RMSNorm on the output (else y * silu(z))
    norm_before_gate: bool = False     # False: norm(y * silu(z)); True: norm(y) * silu(z)
    norm_eps: float = 1e-5
    bias: bool = False                 # bias in in_proj / out_proj
    conv_bias: bool = True
    chunk_size: int = 256              # SSD chunk length (speed knob, same result)

    def __post_init__(self):
        self.dt_limit = _as_dt_limit(self.dt_limit)
        self.A_init_range = tuple(float(v) for v in self.A_init_range)

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        errs = []
        for f in ("d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size"):
            if int(getattr(self, f)) <= 0:
                errs.append((f, f"must be > 0, got {getattr(self, f)}"))
        if errs:
            return errs
        if self.d_ssm is not None and (isinstance(self.d_ssm, bool) or not isinstance(self.d_ssm, int)
                                       or self.d_ssm <= 0):
            return [("d_ssm", f"must be a positive integer or null, got {self.d_ssm!r}")]
        d_inner = self.inner(d_model)
        if d_inner % self.headdim:
            width = "d_ssm" if self.d_ssm is not None else "expand*d_model"
            errs.append(("headdim", f"must divide {width} = {d_inner}, got {self.headdim}"))
        elif (d_inner // self.headdim) % self.ngroups:
            errs.append(("ngroups", f"must divide nheads = {d_inner // self.headdim}, got {self.ngroups}"))
        lo, hi = self.A_init_range
        if not 0 < lo <= hi:
            errs.append(("A_init_range", f"need 0 < lo <= hi, got {self.A_init_range}"))
        if not 0 < self.dt_min <= self.dt_max:
            errs.append(("dt_min", f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}"))
        lo, hi = self.dt_limit
        if not 0 <= lo < hi:
            errs.append(("dt_limit", f"need 0 <= lo < hi, got {self.dt_limit}"))
        return errs

    def inner(self, d_model: int) -> int:
        """The SSM width d_inner (nheads * headdim)."""
        return self.d_ssm if self.d_ssm is not None else self.expand * d_model


def _keep(p: nn.Parameter) -> nn.Parameter:
    p._no_reinit = True          # the model builder leaves these inits alone
    return p


class GatedRMSNorm(nn.Module):
    """Group RMSNorm with silu(z) gate; a module so the weight is named ``norm.weight`` as in mamba-ssm."""

    def __init__(self, d: int, eps: float, group_size: int, norm_before_gate: bool):
        super().__init__()
        self.weight = _keep(nn.Parameter(torch.ones(d)))
        self.eps, self.group_size, self.norm_before_gate = eps, group_size, norm_before_gate

    def forward(self, y, z):
        return _rmsnorm_gated(y, self.weight, z, eps=self.eps, group_size=self.group_size,
                                     norm_before_gate=self.norm_before_gate)


@register_block("mamba2")
class Mamba2(Block):
    Config = Mamba2Config
    kind = "mixer"
    megatron_symbol = "M"
    hf_layer_type = "linear_attention"

    def __init__(self, cfg: Mamba2Config, ctx: LayerContext):
        super().__init__(cfg, ctx)
        d_model = ctx.d_model
        self.d_inner = cfg.inner(d_model)
        self.nheads = self.d_inner // cfg.headdim
        self.conv_dim = self.d_inner + 2 * cfg.ngroups * cfg.d_state
        d_in_proj = 2 * self.d_inner + 2 * cfg.ngroups * cfg.d_state + self.nheads

        self.in_proj = nn.Linear(d_model, d_in_proj, bias=cfg.bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.d_conv, groups=self.conv_dim,
                                padding=cfg.d_conv - 1, bias=cfg.conv_bias)   # default (kaiming) init, as mamba-ssm
        _keep(self.conv1d.weight)
        if cfg.conv_bias:
            _keep(self.conv1d.bias)

        # dt_bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
        dt = torch.exp(torch.rand(self.nheads) * (math.log(cfg.dt_max) - math.log(cfg.dt_min))
                       + math.log(cfg.dt_min)).clamp(min=cfg.dt_init_floor)
        self.dt_bias = _keep(nn.Parameter(dt + torch.log(-torch.expm1(-dt))))
        lo, hi = cfg.A_init_range
        self.A_log = _keep(nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(lo, hi))))
        self.D = _keep(nn.Parameter(torch.ones(self.d_inner if cfg.D_has_hdim else self.nheads)))
        if cfg.rmsnorm:
            self.norm = GatedRMSNorm(self.d_inner, cfg.norm_eps, self.d_inner // cfg.ngroups,
                                     cfg.norm_before_gate)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=cfg.bias)

        nn.init.normal_(self.in_proj.weight, std=ctx.init_std)
        nn.init.normal_(self.out_proj.weight, std=ctx.init_std * ctx.residual_scale)
        for lin in (self.in_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    # -- helpers ---------------------------------------------------------------------------
    def _split_in(self, zxbcdt):
        return torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _split_xbc(self, xbc):
        gn = self.cfg.ngroups * self.cfg.d_state
        return torch.split(xbc, [self.d_inner, gn, gn], dim=-1)

    def _D(self):
        return self.D.view(self.nheads, self.cfg.headdim) if self.cfg.D_has_hdim else self.D

    def _out(self, y, z):
        if self.cfg.rmsnorm:
            y = self.norm(y, z)
        return self.out_proj(y)

    # -- compute ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        c = self.cfg
        b, l, _ = x.shape
        z, xbc, dt = self._split_in(self.in_proj(x))
        xbc = _causal_conv1d(xbc.transpose(1, 2), self.conv1d.weight.squeeze(1),
                                    self.conv1d.bias, activation="silu",
                                    seq_idx=ctx.seq_idx).transpose(1, 2)
        xs, B, C = self._split_xbc(xbc)
        y = _ssd(
            xs.reshape(b, l, self.nheads, c.headdim), dt, -torch.exp(self.A_log.float()),
            B.reshape(b, l, c.ngroups, c.d_state), C.reshape(b, l, c.ngroups, c.d_state),
            c.chunk_size, D=self._D(), z=None if c.rmsnorm else z.reshape(b, l, self.nheads, c.headdim),
            dt_bias=self.dt_bias, dt_softplus=True, dt_limit=c.dt_limit, seq_idx=ctx.seq_idx)
        return self._out(y.reshape(b, l, self.d_inner), z)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None) -> dict[str, Any]:
        """conv: the last d_conv-1 conv inputs (B, conv_dim, d_conv-1); ssm: (B, H, P, N).
        Both in ``dtype`` (default: the in_proj weight dtype), as mamba-ssm; the step math is fp32."""
        w = self.in_proj.weight
        device = device or w.device
        dtype = dtype or w.dtype
        c = self.cfg
        return {
            "conv": torch.zeros(batch_size, self.conv_dim, c.d_conv - 1, device=device, dtype=dtype),
            "ssm": torch.zeros(batch_size, self.nheads, c.headdim, c.d_state, device=device, dtype=dtype),
        }

    def step(self, x_t: torch.Tensor, state: dict[str, Any], ctx: ForwardContext):
        c = self.cfg
        b = x_t.shape[0]
        z, xbc, dt = self._split_in(self.in_proj(x_t))
        xbc = _causal_conv1d_update(xbc, state["conv"], self.conv1d.weight.squeeze(1),
                                           self.conv1d.bias, activation="silu")
        xs, B, C = self._split_xbc(xbc)
        y = _ssd_state_update(
            state["ssm"], xs.reshape(b, self.nheads, c.headdim), dt, -torch.exp(self.A_log.float()),
            B.reshape(b, c.ngroups, c.d_state), C.reshape(b, c.ngroups, c.d_state), D=self._D(),
            z=None if c.rmsnorm else z.reshape(b, self.nheads, c.headdim), dt_bias=self.dt_bias,
            dt_softplus=True, dt_limit=c.dt_limit)
        return self._out(y.reshape(b, self.d_inner), z), state

    # -- training --------------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """mamba-ssm's ``_no_weight_decay``: dt_bias, A_log, D; the default adds the gated norm's
        weight and conv1d.bias."""
        return super().no_weight_decay() | {"dt_bias", "A_log", "D"}

    # -- accounting ------------------------------------------------------------------------
    def state_bytes(self, dtype: torch.dtype = torch.bfloat16) -> int:
        """Bytes of exactly the init_state tensors, both in ``dtype``."""
        c = self.cfg
        return (self.conv_dim * (c.d_conv - 1) + self.nheads * c.headdim * c.d_state) * dtype_bytes(dtype)

    def flops_per_token(self, context: int) -> int:
        """Forward FLOPs per token (2 per multiply-add) of the chunked algorithm:
        projections, conv, and SSD = intra-chunk C·Bᵀ (per group) and scores·X (per head) over the
        causal half of a chunk of min(chunk_size, context), the chunk-state build and the
        state read-out (2·P·N each per head), plus D skip and gate/norm elementwise work."""
        c = self.cfg
        d_model = self.layer.d_model
        H, P, N, G = self.nheads, c.headdim, c.d_state, c.ngroups
        q = max(1, min(c.chunk_size, context))
        proj = 2 * d_model * self.in_proj.out_features + 2 * self.d_inner * d_model
        conv = 2 * self.conv_dim * c.d_conv
        intra = G * N * q + H * P * q            # 2 FLOPs/MAC * q/2 keys on average
        inter = 2 * H * P * N + 2 * H * P * N    # chunk states + state read-out
        elementwise = 2 * self.d_inner + (6 * self.d_inner if c.rmsnorm else 4 * self.d_inner)
        return int(proj + conv + intra + inter + elementwise)
