"""Mamba-3 MIMO (rank R) on the SSD kernels, like SISO (siso.py).

Each step t carries R rows (t, r): k_{t,r} = Rot(theta_t) (B_{t,r} + B_bias_r), q_{t,r} likewise from
C, v_{t,r} = x_t * W_x[r]. Read as one sequence of l*R rows, the chunked form of reference.py is

    y_{t,r} = sum_{(s,u) <= (t,r)} exp(cum_t - cum_s) w_s (q_{t,r} . k_{s,u}) v_{s,u}  +  exp(cum_t) q_{t,r} H'_{-1}
              + sum_u c_{t,r,u} (q_{t,r} . k_{t,u}) v_{t,u},        c_{t,r,u} = wd_t - [u <= r] w_t

(wd = lam dt, w = wd + b as in siso.py). The first line is SISO's decoupled SSD on the l*R rows
once a step's rows share its decay and scale: log decay dt*A on row (t, 0) and 0 on the others,
input scale w_t on all R, angle steps ps*dt on row (t, 0) only. The causal order of rows leaves
out (t, u > r) and gives the same step's pairs the weight w_t instead of lam_t dt_t; the last term,
an R x R block per step (torch, l R^2 (n + p) multiply-adds per head), puts that right. So MIMO
needs no kernels beyond SISO's: the rotation kernel takes the per-rank biases (``RB``), the SSD
kernels run unchanged on R times the rows, with D; torch applies the z gate and W_o after.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ssd import fused as ssd_fused
from . import reference
from .siso import ANGLE_CHUNK, SSD_CHUNK, _NO_LIMIT, _rotate, _rotate_backward, angle_offsets


def _steps(t, R):
    """(b, l*R, h, d) rows -> (b, l, R, h, d) fp32."""
    return t.unflatten(1, (-1, R)).float()


def same_step(q, k, v, coef):
    """The per-step R x R term: sum_u coef[t, h, r, u] (q_{t,r} . k_{t,u}) v_{t,u}, (b, l*R, h, p) fp32."""
    R = coef.shape[-1]
    qs, ks, vs = (_steps(t, R) for t in (q, k, v))
    m = torch.einsum("btrhn,btuhn->bthru", qs, ks) * coef
    return torch.einsum("bthru,btuhp->btrhp", m, vs).flatten(1, 2)


def same_step_backward(q, k, v, coef, dout):
    """Gradients of ``same_step`` for q, k, v (fp32, rows) and coef."""
    R = coef.shape[-1]
    qs, ks, vs, do = (_steps(t, R) for t in (q, k, v, dout))
    s = torch.einsum("btrhn,btuhn->bthru", qs, ks)
    dm = torch.einsum("btrhp,btuhp->bthru", do, vs)
    dv = torch.einsum("bthru,btrhp->btuhp", s * coef, do)
    ds = dm * coef
    dq = torch.einsum("bthru,btuhn->btrhn", ds, ks)
    dk = torch.einsum("bthru,btrhn->btuhn", ds, qs)
    return dq.flatten(1, 2), dk.flatten(1, 2), dv.flatten(1, 2), dm * s


class _MIMOFn(torch.autograd.Function):
    """Rotation + decoupled SSD + the same-step term in one autograd node (fp32 dk, dq reach the
    rotation's backward, as in siso._SISOFn)."""

    @staticmethod
    def forward(ctx, x, w, adt, B, C, Bb, Cb, ps, dt, off, D, coef, h0, H, R, Q):
        k, q, _ = _rotate(B, C, Bb, Cb, ps, dt, off, H, x.dtype, R)
        A = w.new_zeros(H)                           # unused: the kernels read the log decay
        out, final, _, delta, cs, E = ssd_fused.forward_pass(
            x, w, A, k, q, D, None, None, h0, None, Q, False, _NO_LIMIT, adt, None)
        out = (out.float() + same_step(q, k, x, coef)).to(x.dtype)
        ctx.save_for_backward(x, w, A, k, q, D, delta, cs, E, coef, B, C, Bb, Cb, ps, dt, off)
        ctx.cfg = (R, Q, h0 is not None)
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        x, w, A, k, q, D, delta, cs, E, coef, B, C, Bb, Cb, ps, dt, off = ctx.saved_tensors
        R, Q, has_init = ctx.cfg
        dx, dw, _, dk, dq, dD, _, _, dinit, dadt, _ = ssd_fused.backward_pass(
            dout, dfinal, x, w, A, k, q, D, None, None, None, delta, cs, E, None, Q, False, _NO_LIMIT,
            has_init, True, None)
        sq, sk, sx, dcoef = same_step_backward(q, k, x, coef, dout)
        dB, dC, dBb, dCb, dps, ddt, doff = _rotate_backward(
            B, C, Bb, Cb, ps, dt, off, k, (dk.float() + sk).contiguous(), (dq.float() + sq).contiguous(), None, R)
        return ((dx.float() + sx).to(x.dtype), dw, dadt, dB, dC, dBb, dCb, dps, ddt, doff,
                None if dD is None else dD.to(D.dtype), dcoef, dinit, None, None, None)


def mamba3_mimo(x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
                W_x=None, W_z=None, W_o=None, initial_states=None, chunk_size=64, return_final_states=False):
    """MIMO Mamba-3, arguments and results as ``reference.mamba3`` with B, C of shape (b, l, R, g, n)."""
    if x.dtype == torch.float64:
        raise ValueError("mamba3_mimo: float64 runs the reference (fused.mamba3 routes it there)")
    bsz, L, H, P = x.shape
    R, G, N = B.shape[2:]
    S = 0 if angles is None else angles.shape[-1]
    dev, f32 = x.device, torch.float32
    LR = L * R

    def rows(t):                                      # (b, l, ...) -> (b, l*R, ...), repeated per rank
        return t.unsqueeze(2).expand(bsz, L, R, *t.shape[2:]).reshape(bsz, LR, *t.shape[2:])

    def first_row(t):                                 # (b, l, h) -> (b, l*R, h), zero on rows r > 0
        return F.pad(t.unsqueeze(2), (0, 0, 0, R - 1)).reshape(bsz, LR, t.shape[-1])

    dtf = dt.float()
    adt = dtf * A.float()
    if trap is None:                                  # lam = 1: exponential Euler (Mamba-2)
        bcur, wd, w = None, dtf, dtf
    else:
        lam = torch.sigmoid(trap.float())
        wd = lam * dtf
        bcur = (1 - lam) * dtf
        w = wd + F.pad(bcur[:, 1:], (0, 0, 0, 1))
    later = torch.ones(R, R, dtype=torch.bool, device=dev).tril()   # [r, u]: u <= r
    coef = wd[..., None, None] - later * w[..., None, None]          # (b, l, h, R, R)

    ang0, ssm0, k0, v0 = initial_states if initial_states is not None else (None,) * 4
    if S:
        ps = rows(math.pi * torch.tanh(angles.float())).contiguous()
        dt_rot = first_row(dtf).contiguous()
        off, final_angle = angle_offsets(ps, dt_rot, ang0, ANGLE_CHUNK)
    else:
        ps = dt_rot = off = None
        final_angle = ang0.float() if ang0 is not None else torch.zeros(bsz, H, 0, device=dev)
    Bb = Cb = None
    if B_bias is not None or C_bias is not None:      # (h, R, n) -> (R, h, n): the kernel's layout
        ranked = lambda t: (torch.zeros(R, H, N, device=dev) if t is None  # noqa: E731
                            else t.float().reshape(H, R, N).transpose(0, 1).contiguous())
        Bb, Cb = ranked(B_bias), ranked(C_bias)

    wx = reference._rank_weight(W_x, R, H, P, f32, dev)              # (R, h, p)
    xr = (x.float().unsqueeze(2) * wx).to(x.dtype).reshape(bsz, LR, H, P)
    h0 = None                                         # the folded initial state H'_{-1}
    if ssm0 is not None or (bcur is not None and k0 is not None and v0 is not None):
        h0 = ssm0.float() if ssm0 is not None else torch.zeros(bsz, H, P, N, device=dev)
        if bcur is not None and k0 is not None and v0 is not None:
            vv = v0.float().unsqueeze(1) * wx
            h0 = h0 + bcur[:, 0, :, None, None] * torch.einsum("brhp,brhn->bhpn", vv, k0.float().reshape(bsz, R, H, N))
        h0 = h0.contiguous()

    Q = ssd_fused.kernel_chunk(SSD_CHUNK or chunk_size, x.dtype)
    f32c = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    y, hfin = _MIMOFn.apply(
        xr, rows(w).contiguous(), first_row(adt).contiguous(), B.contiguous().view(bsz, LR, G, N),
        C.contiguous().view(bsz, LR, G, N), Bb, Cb, ps, dt_rot, off, f32c(D), coef.contiguous(), h0, H, R, Q)
    y = y.view(bsz, L, R, H, P)
    if z is not None or W_o is not None:
        y = y.float()
        if z is not None:
            y = y * F.silu(z.float().unsqueeze(2) * reference._rank_weight(W_z, R, H, P, f32, dev))
        if W_o is not None:
            y = (y * reference._rank_weight(W_o, R, H, P, f32, dev)).sum(2)
        y = y.to(x.dtype)
    if not return_final_states:
        return y
    k_last = reference._heads(B[:, L - 1], B_bias, H, f32)          # (b, R, h, n)
    if S:
        k_last = reference.rotate_pairs(k_last, final_angle.unsqueeze(1))
    return y, (final_angle, hfin, k_last, x[:, L - 1].float())
