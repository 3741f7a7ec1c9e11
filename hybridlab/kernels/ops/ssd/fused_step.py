"""Triton decode step of Mamba-2 (one token): state ← exp(ΔA)·state + Δ·x⊗B; y = state·C + D·x."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ...launch import cdiv, next_pow2


@triton.jit
def _step_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, y_ptr,
    H, P, N, G, dt_lo, dt_hi,
    ss_b, ss_h, ss_p, sx_b, sx_h, sdt_b, sdt_h, sB_b, sB_g, sC_b, sC_g, sz_b, sz_h, sy_b, sy_h,
    BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, D_HDIM: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    op = tl.program_id(2) * BP + tl.arange(0, BP)
    on = tl.arange(0, BN)
    g = h // (H // G)
    pm = op < P
    nm = on < N
    d = tl.load(dt_ptr + b * sdt_b + h * sdt_h).to(tl.float32)
    if HAS_BIAS:
        d += tl.load(dt_bias_ptr + h).to(tl.float32)
    if SOFTPLUS:
        d = tl.where(d > 20.0, d, tl.log(1.0 + tl.exp(tl.minimum(d, 20.0))))
    if HAS_LIMIT:
        d = tl.minimum(tl.maximum(d, dt_lo), dt_hi)
    decay = tl.exp(d * tl.load(A_ptr + h).to(tl.float32))
    x = tl.load(x_ptr + b * sx_b + h * sx_h + op, mask=pm, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + b * sB_b + g * sB_g + on, mask=nm, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * sC_b + g * sC_g + on, mask=nm, other=0.0).to(tl.float32)
    sp = state_ptr + b * ss_b + h * ss_h + op[:, None] * ss_p + on[None, :]
    sm = pm[:, None] & nm[None, :]
    s = tl.load(sp, mask=sm, other=0.0).to(tl.float32)
    s = s * decay + (d * x)[:, None] * Bv[None, :]
    tl.store(sp, s.to(state_ptr.dtype.element_ty), mask=sm)
    y = tl.sum(s * Cv[None, :], axis=1)
    if HAS_D:
        if D_HDIM:
            y += tl.load(D_ptr + h * P + op, mask=pm, other=0.0).to(tl.float32) * x
        else:
            y += tl.load(D_ptr + h).to(tl.float32) * x
    if HAS_Z:
        zz = tl.load(z_ptr + b * sz_b + h * sz_h + op, mask=pm, other=0.0).to(tl.float32)
        y = y * zz * tl.sigmoid(zz)
    tl.store(y_ptr + b * sy_b + h * sy_h + op, y.to(y_ptr.dtype.element_ty), mask=pm)


def ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                     dt_limit=(0.0, math.inf)):
    """Same contract as ``reference.ssd_state_update``: state (b, h, p, n) updated in place
    (its last dim must be contiguous); returns y (b, h, p) in x's dtype."""
    b, H, P = x.shape
    G, N = B.shape[-2:]
    assert state.stride(-1) == 1, "ssd_state_update: state's last dim must be contiguous"
    x, B, C = (t if t.stride(-1) == 1 else t.contiguous() for t in (x, B, C))
    z = z if z is None or z.stride(-1) == 1 else z.contiguous()
    D = D.contiguous() if D is not None else None
    y = torch.empty(b, H, P, device=x.device, dtype=x.dtype)
    BN = next_pow2(N)
    BP = min(next_pow2(P), max(1, 8192 // BN))     # keep the state tile <= 8K values
    lo, hi = float(dt_limit[0]), float(dt_limit[1])
    zs = (z.stride(0), z.stride(1)) if z is not None else (0, 0)
    _step_kernel[(b, H, cdiv(P, BP))](
        state, x, dt, A, B, C, D, z, dt_bias, y, H, P, N, G, lo, min(hi, 3.0e38),
        state.stride(0), state.stride(1), state.stride(2), x.stride(0), x.stride(1),
        dt.stride(0), dt.stride(1), B.stride(0), B.stride(1), C.stride(0), C.stride(1), *zs,
        y.stride(0), y.stride(1),
        BP=BP, BN=BN, HAS_D=D is not None, D_HDIM=D is not None and D.dim() == 2,
        HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
        HAS_LIMIT=lo > 0.0 or hi < math.inf, num_warps=4)
    return y
