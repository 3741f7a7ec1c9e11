"""RMSNorm fused with a silu gate, Triton forward and backward (same contract as reference.py).

One program normalises one group of one row; the backward walks a strip of rows per program
and writes a partial weight gradient per strip (summed in torch: deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ... import knobs
from ...launch import cdiv, next_pow2

_INTERPRET = knobs.INTERPRET


@triton.jit
def _fwd(x_ptr, z_ptr, w_ptr, y_ptr, rstd_ptr, GS, NG, sx, sz, sy, eps,
         BLOCK: tl.constexpr, HAS_Z: tl.constexpr, NORM_BEFORE_GATE: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    grp = tl.program_id(1)
    o = grp * GS + tl.arange(0, BLOCK)
    m = tl.arange(0, BLOCK) < GS
    x = tl.load(x_ptr + r * sx + o, mask=m, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + r * sz + o, mask=m, other=0.0).to(tl.float32)
        gate = z * tl.sigmoid(z)
        if not NORM_BEFORE_GATE:
            x = x * gate
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / GS + eps)
    tl.store(rstd_ptr + r * NG + grp, rstd)
    y = x * rstd * tl.load(w_ptr + o, mask=m, other=0.0).to(tl.float32)
    if HAS_Z and NORM_BEFORE_GATE:
        y = y * gate
    tl.store(y_ptr + r * sy + o, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd(x_ptr, z_ptr, w_ptr, dy_ptr, rstd_ptr, dx_ptr, dz_ptr, dw_ptr,
         M, GS, NG, D, sx, sz, sdy, sdx, sdz, rows_per_prog,
         BLOCK: tl.constexpr, HAS_Z: tl.constexpr, NORM_BEFORE_GATE: tl.constexpr):
    strip = tl.program_id(0)
    grp = tl.program_id(1)
    o = grp * GS + tl.arange(0, BLOCK)
    m = tl.arange(0, BLOCK) < GS
    w = tl.load(w_ptr + o, mask=m, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    r0 = strip * rows_per_prog
    for i in range(rows_per_prog):
        r = (r0 + i).to(tl.int64)
        if r < M:
            x = tl.load(x_ptr + r * sx + o, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + r * sdy + o, mask=m, other=0.0).to(tl.float32)
            rstd = tl.load(rstd_ptr + r * NG + grp)
            if HAS_Z:
                z = tl.load(z_ptr + r * sz + o, mask=m, other=0.0).to(tl.float32)
                sg = tl.sigmoid(z)
                gate = z * sg
                dgate = sg * (1.0 + z * (1.0 - sg))
            if HAS_Z and not NORM_BEFORE_GATE:
                h = x * gate
            else:
                h = x
            n = h * rstd
            if HAS_Z and NORM_BEFORE_GATE:
                dz = dy * n * w * dgate
                dy = dy * gate
            dw += dy * n
            dn = dy * w
            dh = rstd * (dn - n * (tl.sum(dn * n, axis=0) / GS))
            if HAS_Z and not NORM_BEFORE_GATE:
                dz = dh * x * dgate
                dh = dh * gate
            tl.store(dx_ptr + r * sdx + o, dh.to(dx_ptr.dtype.element_ty), mask=m)
            if HAS_Z:
                tl.store(dz_ptr + r * sdz + o, dz.to(dz_ptr.dtype.element_ty), mask=m)
    tl.store(dw_ptr + strip * D + o, dw, mask=m)


def _rows(t, d):
    t = t.reshape(-1, d)
    return t if t.stride(-1) == 1 else t.contiguous()


class _RMSNormGatedFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, z, eps, group_size, norm_before_gate):
        shape, d = x.shape, x.shape[-1]
        gs = group_size or d
        x2 = _rows(x, d)
        z2 = _rows(z, d) if z is not None else None
        M, ng = x2.shape[0], d // gs
        y = torch.empty(M, d, device=x.device, dtype=x.dtype)
        rstd = torch.empty(M, ng, device=x.device, dtype=torch.float32)
        BLOCK = next_pow2(gs)
        _fwd[(M, ng)](x2, z2, weight, y, rstd, gs, ng, x2.stride(0),
                      z2.stride(0) if z2 is not None else 0, y.stride(0), float(eps),
                      BLOCK=BLOCK, HAS_Z=z is not None, NORM_BEFORE_GATE=bool(norm_before_gate),
                      num_warps=1 if _INTERPRET else min(16, max(1, BLOCK // 256)))
        ctx.save_for_backward(x2, z2, weight, rstd)
        ctx.cfg = (shape, gs, bool(norm_before_gate))
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, z2, weight, rstd = ctx.saved_tensors
        shape, gs, nbg = ctx.cfg
        M, d = x2.shape
        ng = d // gs
        dy2 = _rows(dy, d)
        dx = torch.empty(M, d, device=x2.device, dtype=x2.dtype)
        dz = torch.empty(M, d, device=x2.device, dtype=z2.dtype) if z2 is not None else None
        n_strips = min(M, 4 if _INTERPRET else 4 * torch.cuda.get_device_properties(x2.device).multi_processor_count
                       if x2.is_cuda else 64)
        rows = cdiv(M, n_strips)
        n_strips = cdiv(M, rows)
        dw = torch.empty(n_strips, d, device=x2.device, dtype=torch.float32)
        BLOCK = next_pow2(gs)
        _bwd[(n_strips, ng)](x2, z2, weight, dy2, rstd, dx, dz, dw, M, gs, ng, d,
                             x2.stride(0), z2.stride(0) if z2 is not None else 0, dy2.stride(0),
                             dx.stride(0), dz.stride(0) if dz is not None else 0, rows,
                             BLOCK=BLOCK, HAS_Z=z2 is not None, NORM_BEFORE_GATE=nbg,
                             num_warps=1 if _INTERPRET else min(16, max(1, BLOCK // 256)))
        return (dx.view(shape), dw.sum(0).to(weight.dtype),
                dz.view(shape) if dz is not None else None, None, None, None)


def rmsnorm_gated(x, weight, z=None, eps=1e-5, group_size=None, norm_before_gate=False):
    """Same contract as ``reference.rmsnorm_gated``; Triton forward and backward."""
    return _RMSNormGatedFn.apply(x, weight, z, eps, group_size, norm_before_gate)
