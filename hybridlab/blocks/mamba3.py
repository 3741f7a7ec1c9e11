"""Mamba-3 mixer (Lahoti et al., ICLR 2026): exponential-trapezoidal SSM with data-dependent
rotary angles, QK-normed B/C with per-head biases, optional MIMO of rank R. No conv, no A_log.

``in_proj`` (no bias) -> [z: d_inner, x: d_inner, B: N*G*R, C: N*G*R, dd_dt: H, dd_A: H, trap: H,
angles: S] with S = (floor(N * rope_fraction) rounded down to even) / 2 rotated pairs.

* dt = softplus(dd_dt + dt_bias);  A = -max(f(dd_A), A_floor);  lam = sigmoid(trap) (in the kernel).
* B, C: RMSNorm over N (learnable weight, eps 1e-5) in this block; the kernel adds the per-head
  biases B_bias, C_bias (H, R, N), initialised to 1, after the norm.
* y = SSM(x) + D x, gated by silu(z) (or per-head RMSNorm(y) * w * silu(z) with is_outproj_norm),
  then out_proj (no bias). MIMO: per-channel W_x, W_z, W_o (H, R, P), init 1/R, 1, 1/R.

A activation, ``a_activation``: **default "softplus"**, the activation of the released Mamba-3
code and of the paper's experiments (and FLA), so results and converted checkpoints match the
published ones. "heavy_tail" (f(x) = 1 + x for x >= 0, 1 / (1 - x) below; mamba-ssm #962) is the
newer upstream choice; it is available as an option because it costs nothing here.

Decode state (all float32 whatever the model dtype, since the recurrence accumulates over the
whole context): angle (B, H, S), ssm (B, H, P, N), k (B, H, N) SISO or (B, R, H, N) MIMO (last
rotated k), v (B, H, P) (last x). ``state_bytes`` is exactly their size.

Packed sequences (``ForwardContext.seq_idx``) are not supported by this block: it raises.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hybridlab.blocks.base import Block, BlockConfig, ForwardContext, LayerContext
from hybridlab.blocks.registry import register_block

from hybridlab.kernels import mamba3 as _mamba3
from hybridlab.kernels import mamba3_state_update as _mamba3_state_update
from hybridlab.kernels import rmsnorm_gated as _rmsnorm_gated


A_ACTIVATIONS = ("softplus", "heavy_tail")


@dataclass
class Mamba3Config(BlockConfig):
    d_state: int = 128            # N, state size per head (QK dim)
    expand: int = 2               # d_inner = expand * d_model
    headdim: int = 64             # P
    ngroups: int = 1              # G, B/C groups shared by H/G heads
    rope_fraction: float = 0.5    # share of N rotated by the data-dependent angles (0 disables)
    dt_min: float = 1e-3          # dt_bias init: softplus^-1 of log-uniform [dt_min, dt_max]
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    A_floor: float = 1e-4         # A = -max(f(dd_A), A_floor)
    is_outproj_norm: bool = False  # per-head RMSNorm of y before the silu(z) gate
    mimo_rank: int = 1            # R; 1 = SISO, > 1 = MIMO
    chunk_size: int = 64          # kernel chunk length (64 / R is a good MIMO choice)
    a_activation: str = "softplus"  # "softplus" (released) or "heavy_tail" (mamba-ssm #962)

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        errs = []
        if self.d_state <= 0:
            errs.append(("d_state", "must be > 0"))
        elif self.rope_fraction > 0 and self.d_state % 2:
            errs.append(("d_state", "must be even when rope_fraction > 0 (rotary pairs)"))
        if not 0.0 <= self.rope_fraction <= 1.0:
            errs.append(("rope_fraction", "must be in [0, 1]"))
        if self.expand <= 0:
            errs.append(("expand", "must be > 0"))
        if self.headdim <= 0:
            errs.append(("headdim", "must be > 0"))
        elif self.expand > 0 and (self.expand * d_model) % self.headdim:
            errs.append(("headdim", f"must divide expand * d_model = {self.expand * d_model}"))
        elif self.expand > 0 and self.ngroups > 0 and ((self.expand * d_model) // self.headdim) % self.ngroups:
            errs.append(("ngroups", f"must divide the number of heads {(self.expand * d_model) // self.headdim}"))
        if self.ngroups <= 0:
            errs.append(("ngroups", "must be > 0"))
        if not 0 < self.dt_min <= self.dt_max:
            errs.append(("dt_min", "need 0 < dt_min <= dt_max"))
        if self.dt_init_floor < 0:
            errs.append(("dt_init_floor", "must be >= 0"))
        if self.A_floor <= 0:
            errs.append(("A_floor", "must be > 0 (keeps every mode decaying)"))
        if self.mimo_rank < 1 or self.mimo_rank & (self.mimo_rank - 1):
            errs.append(("mimo_rank", "must be a power of two >= 1 (1 = SISO; the Triton kernels tile ranks)"))
        if self.chunk_size < 1 or self.chunk_size & (self.chunk_size - 1):
            errs.append(("chunk_size", "must be a power of two"))
        if self.a_activation not in A_ACTIVATIONS:
            errs.append(("a_activation", f"must be one of {', '.join(A_ACTIVATIONS)}"))
        return errs


def heavy_tail(x: torch.Tensor) -> torch.Tensor:
    """1 + x for x >= 0, 1 / (1 - x) for x < 0: positive, C^1, polynomial tail."""
    return torch.where(x >= 0, 1 + x, 1 / (1 - x.clamp(max=0)))


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = x.to(acc)
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.to(acc)).to(x.dtype)


@register_block("mamba3")
class Mamba3(Block):
    Config = Mamba3Config
    kind = "mixer"
    megatron_symbol = "M"
    hf_layer_type = "linear_attention"

    def __init__(self, cfg: Mamba3Config, ctx: LayerContext):
        super().__init__(cfg, ctx)
        d = ctx.d_model
        self.d_inner = cfg.expand * d
        self.nheads = self.d_inner // cfg.headdim
        self.R = cfg.mimo_rank
        N, G, H, R, P = cfg.d_state, cfg.ngroups, self.nheads, self.R, cfg.headdim
        self.n_angles = (int(N * cfg.rope_fraction) // 2 * 2) // 2
        self.split = [self.d_inner, self.d_inner, N * G * R, N * G * R, H, H, H, self.n_angles]
        self.in_proj = nn.Linear(d, sum(self.split), bias=False)
        self.out_proj = nn.Linear(self.d_inner, d, bias=False)
        nn.init.normal_(self.in_proj.weight, std=ctx.init_std)
        nn.init.normal_(self.out_proj.weight, std=ctx.init_std * ctx.residual_scale)

        dt = torch.exp(torch.rand(H) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=cfg.dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))   # inverse softplus
        self.B_norm_weight = nn.Parameter(torch.ones(N))
        self.C_norm_weight = nn.Parameter(torch.ones(N))
        self.B_bias = nn.Parameter(torch.ones(H, R, N))
        self.C_bias = nn.Parameter(torch.ones(H, R, N))
        self.D = nn.Parameter(torch.ones(H))
        ssm_params = [self.dt_bias, self.B_norm_weight, self.C_norm_weight, self.B_bias, self.C_bias, self.D]
        if R > 1:
            self.W_x = nn.Parameter(torch.full((H, R, P), 1.0 / R))
            self.W_z = nn.Parameter(torch.ones(H, R, P))
            self.W_o = nn.Parameter(torch.full((H, R, P), 1.0 / R))
            ssm_params += [self.W_x, self.W_z, self.W_o]
        else:
            self.W_x = self.W_z = self.W_o = None
        if cfg.is_outproj_norm:
            self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
            ssm_params.append(self.norm_weight)
        for p in ssm_params:
            p._no_reinit = True

    # -- shared by forward and step ---------------------------------------------------------
    def _inputs(self, zxbc: torch.Tensor):
        """Projection (..., width) -> kernel inputs with the leading dims kept."""
        cfg = self.cfg
        lead = zxbc.shape[:-1]
        H, P, G, N, R = self.nheads, cfg.headdim, cfg.ngroups, cfg.d_state, self.R
        z, x, B, C, dd_dt, dd_A, trap, ang = torch.split(zxbc, self.split, dim=-1)
        acc = torch.float64 if zxbc.dtype == torch.float64 else torch.float32
        dt = F.softplus(dd_dt.to(acc) + self.dt_bias.to(acc))
        act = F.softplus if cfg.a_activation == "softplus" else heavy_tail
        A = -act(dd_A.to(acc)).clamp(min=cfg.A_floor)
        bshape = (*lead, G, N) if R == 1 else (*lead, R, G, N)
        B = _rmsnorm(B.reshape(bshape), self.B_norm_weight)
        C = _rmsnorm(C.reshape(bshape), self.C_norm_weight)
        bias_b = self.B_bias[:, 0] if R == 1 else self.B_bias
        bias_c = self.C_bias[:, 0] if R == 1 else self.C_bias
        return dict(x=x.reshape(*lead, H, P), dt=dt, A=A, trap=trap, B=B, C=C,
                    angles=ang if self.n_angles else None, B_bias=bias_b, C_bias=bias_c, D=self.D,
                    z=z.reshape(*lead, H, P), W_x=self.W_x, W_z=self.W_z, W_o=self.W_o)

    def _finish(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """With is_outproj_norm the kernel returns ungated (per-rank) y; norm, gate, sum here."""
        cfg = self.cfg
        if cfg.is_outproj_norm:
            P = cfg.headdim
            if self.R > 1:   # y (..., R, H, P); z_r = z * W_z[r]
                zr = z.unsqueeze(-3) * self.W_z.transpose(0, 1).to(z.dtype)
                y = _rmsnorm_gated(y.flatten(-2), self.norm_weight, zr.flatten(-2).to(y.dtype),
                                          group_size=P, norm_before_gate=True)
                y = (y.unflatten(-1, (self.nheads, P)) * self.W_o.transpose(0, 1).to(y.dtype)).sum(-3)
            else:
                y = _rmsnorm_gated(y.flatten(-2), self.norm_weight, z.flatten(-2).to(y.dtype),
                                          group_size=P, norm_before_gate=True)
            return y.flatten(-2) if self.R > 1 else y
        return y.flatten(-2)

    def _kernel_kwargs(self, inp: dict) -> dict:
        if self.cfg.is_outproj_norm:   # gate and rank-sum happen after the norm
            inp = dict(inp, z=None, W_o=None)
        return inp

    # -- Block interface -------------------------------------------------------------------
    def forward(self, x: torch.Tensor, ctx: ForwardContext | None = None) -> torch.Tensor:
        if ctx is not None and ctx.seq_idx is not None:
            raise ValueError("mamba3 block does not support packed sequences (seq_idx)")
        inp = self._inputs(self.in_proj(x))
        z = inp["z"]
        y = _mamba3(**self._kernel_kwargs(inp), chunk_size=self.cfg.chunk_size)
        return self.out_proj(self._finish(y, z).to(x.dtype))

    def init_state(self, batch_size: int, max_len: int = 0, device=None, dtype=None) -> dict:
        cfg = self.cfg
        device = device if device is not None else self.in_proj.weight.device
        H, P, N, R = self.nheads, cfg.headdim, cfg.d_state, self.R
        f32 = dict(dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=device)
        kshape = (batch_size, H, N) if R == 1 else (batch_size, R, H, N)
        return {"angle": torch.zeros(batch_size, H, self.n_angles, **f32),
                "ssm": torch.zeros(batch_size, H, P, N, **f32),
                "k": torch.zeros(kshape, **f32),
                "v": torch.zeros(batch_size, H, P, **f32)}

    def step(self, x_t: torch.Tensor, state: dict, ctx: ForwardContext | None = None):
        inp = self._inputs(self.in_proj(x_t))
        z = inp["z"]
        st = (state["angle"], state["ssm"], state["k"], state["v"])
        y = _mamba3_state_update(st, **self._kernel_kwargs(inp))
        return self.out_proj(self._finish(y, z).to(x_t.dtype)), state

    # -- training --------------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """dt_bias and D (the reference marks them ``_no_weight_decay``); the per-head B/C biases
        (H, R, N) and MIMO's per-channel scales W_x, W_z, W_o (H, R, P), initialised to 1 or 1/R:
        biases and elementwise scales, not feature-mixing matrices, so decay would only pull them
        from their init towards 0. The default adds the B/C and output norm weights."""
        extra = {"dt_bias", "D", "B_bias", "C_bias"}
        if self.R > 1:
            extra |= {"W_x", "W_z", "W_o"}
        return super().no_weight_decay() | extra

    # -- accounting ------------------------------------------------------------------------
    def state_bytes(self, dtype: torch.dtype = torch.bfloat16) -> int:
        """Bytes of the decode state per sequence; float32 whatever ``dtype`` (see module doc)."""
        H, P, N, R = self.nheads, self.cfg.headdim, self.cfg.d_state, self.R
        return 4 * (H * self.n_angles + H * P * N + R * H * N + H * P)

    def flops_per_token(self, context: int) -> int:
        """Projections (2 per weight) plus the chunked scan's multiply-adds per token and head:
        causal intra-chunk scores and mixing over on average (Q+1)/2 positions with R x R rank
        pairs (2 R^2 (N + P) (Q+1)/2), the chunk-state write and the state read (2 * 2 R P N),
        with Q = min(chunk_size, context)."""
        H, P, N, R = self.nheads, self.cfg.headdim, self.cfg.d_state, self.R
        Q = max(1, min(self.cfg.chunk_size, context))
        proj = 2 * (self.in_proj.weight.numel() + self.out_proj.weight.numel())
        scan = H * (R * R * (N + P) * (Q + 1) + 4 * R * P * N)
        return proj + scan
