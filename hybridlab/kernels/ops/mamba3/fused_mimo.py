"""Mamba-3 MIMO (rank R) on the SSD kernels, like SISO (fused_siso.py).

Each step t carries R rows (t, r): k_{t,r} = Rot(theta_t) (B_{t,r} + B_bias_r), q_{t,r} likewise from
C, v_{t,r} = x_t * W_x[r]. Read as one sequence of l*R rows, the chunked form of reference.py is

    y_{t,r} = sum_{(s,u) <= (t,r)} exp(cum_t - cum_s) w_s (q_{t,r} . k_{s,u}) v_{s,u}  +  exp(cum_t) q_{t,r} H'_{-1}
              + sum_u c_{t,r,u} (q_{t,r} . k_{t,u}) v_{t,u},        c_{t,r,u} = wd_t - [u <= r] w_t

(wd = lam dt, w = wd + b as in fused_siso.py). The first line is SISO's decoupled SSD on the l*R
rows once a step's rows share its decay and scale: log decay dt*A on row (t, 0) and 0 on the
others, input scale w_t on all R, angle steps ps*dt on row (t, 0) only. The causal order of rows leaves
out (t, u > r) and gives the same step's pairs the weight w_t instead of lam_t dt_t; the last term,
an R x R block per step, puts that right. So MIMO runs:

1. the rotation kernel (fused_rotate.py) with per-rank biases, which also writes each step's
   scores q_{t,r} . k_{t,u} (its ``qk`` output, (b, l*R, h, R));
2. the SSD kernels, unchanged, on the l*R rows, with D;
3. fused_mimo_rows.py: the same-step term, the z gate and W_o (or the per-rank rows), and their
   backward, which hands the SSD its output gradient and the rotation backward the scores' one.
Steps 1-3 are one autograd node (``_MIMOFn``), with the rows v = x W_x and their gradient
(fused_mimo_rows.py's v-row kernels); torch does the (b, l, h) scalars and the initial and final
states. R must be a power of two (a step's rows are a register tile).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...launch import cdiv, next_pow2
from ..ssd import fused as ssd_fused
from . import reference
from .fused_mimo_rows import mimo_out_bwd_kernel, mimo_out_fwd_kernel, v_rows_bwd_kernel, v_rows_fwd_kernel
from .fused_siso import _NO_LIMIT, _or, _rotate, _rotate_backward, angle_offsets, folded_initial_state, step_weights

def _v_launch(L, H, P, R, bsz, plan):
    grid = (cdiv(L, plan.mimo_v_steps), H, bsz)
    return grid, dict(RB=R, TS=plan.mimo_v_steps, BP=max(16, next_pow2(P)), num_warps=plan.warps(4))


def _out_launch(L, H, P, R, bsz, plan):
    rows = max(plan.mimo_out_rows, R)
    grid = (cdiv(L * R, rows), H, bsz)
    return grid, dict(ROWS=rows, RB=R, BP=max(16, next_pow2(P)), num_warps=plan.warps(plan.mimo_out_warps))


class _MIMOFn(torch.autograd.Function):
    """Rotation + decoupled SSD + the output kernel in one autograd node (fp32 dk, dq reach the
    rotation's backward, as in fused_siso._SISOFn)."""

    @staticmethod
    def forward(ctx, x1, wx, w_rows, adt, B, C, Bb, Cb, ps, dt, off, D, wd, w, z, Wz, Wo, h0, H, R, Q, plan):
        bsz, L, _, P = x1.shape
        LR = L * R
        x = torch.empty(bsz, LR, H, P, device=x1.device, dtype=x1.dtype)        # the rows v = x W_x
        grid, meta = _v_launch(L, H, P, R, bsz, plan)
        v_rows_fwd_kernel[grid](x1, wx, x, L, H, P, **meta)
        k, q, s, _ = _rotate(B, C, Bb, Cb, ps, dt, off, H, x.dtype, plan, R, {"num_warps": plan.mimo_rotate_fwd_warps})
        A = w.new_zeros(H)                           # unused: the kernels read the log decay
        y, final, _, delta, cs, E = ssd_fused.forward_pass(
            x, w_rows, A, k, q, D, None, None, h0, None, Q, False, _NO_LIMIT, adt, None, plan.ssd)
        out = torch.empty((bsz, L, H, P) if Wo is not None else (bsz, LR, H, P), device=x.device, dtype=x.dtype)
        grid, meta = _out_launch(L, H, P, R, bsz, plan)
        mimo_out_fwd_kernel[grid](
            y, x, s, wd, w, _or(z, y), _or(Wz, wd), _or(Wo, wd), out, L, H, P,
            HAS_Z=z is not None, HAS_WZ=Wz is not None, HAS_WO=Wo is not None, **meta)
        ctx.save_for_backward(x1, wx, x, w_rows, A, k, q, D, delta, cs, E, y, s, wd, w, z, Wz, Wo, B, C, Bb, Cb, ps, dt, off)
        ctx.cfg = (R, Q, h0 is not None, plan)
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        x1, wx, x, w_rows, A, k, q, D, delta, cs, E, y, s, wd, w, z, Wz, Wo, B, C, Bb, Cb, ps, dt, off = ctx.saved_tensors
        R, Q, has_init, plan = ctx.cfg
        bsz, LR, H, P = x.shape
        L = LR // R
        f32 = dict(device=x.device, dtype=torch.float32)
        grid, meta = _out_launch(L, H, P, R, bsz, plan)
        if dout is None:
            dout = torch.zeros((bsz, L, H, P) if Wo is not None else (bsz, LR, H, P), device=x.device, dtype=x.dtype)
        dout = dout.contiguous()
        dy = torch.empty_like(x)
        dxs = torch.empty(bsz, LR, H, P, **f32)
        ds = torch.empty_like(s)
        dwd = torch.empty(bsz, L, H, **f32)
        dw = torch.empty_like(dwd)
        dz = torch.empty(bsz, L, H, P, **f32) if z is not None else None
        part = lambda W: torch.empty(bsz, grid[0], H, R, P, **f32) if W is not None else None  # noqa: E731
        dWz, dWo = part(Wz), part(Wo)
        mimo_out_bwd_kernel[grid](
            dout, y, x, s, wd, w, _or(z, y), _or(Wz, wd), _or(Wo, wd),
            dy, dxs, ds, dwd, dw, _or(dz, dxs), _or(dWz, dxs), _or(dWo, dxs), L, H, P, grid[0],
            HAS_Z=z is not None, HAS_WZ=Wz is not None, HAS_WO=Wo is not None, **meta)
        dx, dw_rows, _, dk, dq, dD, _, _, dinit, dadt, _ = ssd_fused.backward_pass(
            dy, dfinal, x, w_rows, A, k, q, D, None, None, None, delta, cs, E, None, Q, False, _NO_LIMIT,
            has_init, True, None, plan.ssd)
        dB, dC, dBb, dCb, dps, ddt, doff = _rotate_backward(
            B, C, Bb, Cb, ps, dt, off, k, dk.contiguous(), dq.contiguous(), ds, plan, R, plan.mimo_rotate_bwd_warps)
        # v = x W_x: dx and dW_x from the SSD's part of dv and the same-step term's (dxs)
        dx1 = torch.empty_like(x1)
        vgrid, vmeta = _v_launch(L, H, P, R, bsz, plan)
        dwx = torch.empty(bsz, vgrid[0], H, R, P, **f32)
        v_rows_bwd_kernel[vgrid](x1, wx, dx, dxs, dx1, dwx, L, H, P, vgrid[0], **vmeta)
        wsum = lambda t: None if t is None else t.sum((0, 1))  # noqa: E731
        return (dx1, wsum(dwx).transpose(0, 1), dw_rows, dadt, dB, dC, dBb, dCb, dps, ddt, doff,
                None if dD is None else dD.to(D.dtype), dwd, dw, None if dz is None else dz.to(z.dtype),
                wsum(dWz), wsum(dWo), dinit, None, None, None, None)


def mamba3_mimo(x, dt, A, trap, B, C, plan, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
                W_x=None, W_z=None, W_o=None, initial_states=None, return_final_states=False):
    """MIMO Mamba-3, arguments and results as ``reference.mamba3`` with B, C of shape (b, l, R, g, n),
    launched as ``plan`` says."""
    if x.dtype == torch.float64:
        raise ValueError("mamba3_mimo: float64 runs the reference (fused.mamba3 routes it there)")
    bsz, L, H, P = x.shape
    R, G, N = B.shape[2:]
    if R & (R - 1) or R > plan.angle_chunk:
        raise ValueError(f"Triton mamba3 needs a power-of-two MIMO rank <= {plan.angle_chunk}, got R={R}")
    S = 0 if angles is None else angles.shape[-1]
    dev, f32 = x.device, torch.float32
    LR = L * R

    def rows(t):                                      # (b, l, ...) -> (b, l*R, ...), repeated per rank
        return t.unsqueeze(2).expand(bsz, L, R, *t.shape[2:]).reshape(bsz, LR, *t.shape[2:])

    def first_row(t):                                 # (b, l, h) -> (b, l*R, h), zero on rows r > 0
        return F.pad(t.unsqueeze(2), (0, 0, 0, R - 1)).reshape(bsz, LR, t.shape[-1])

    dtf, adt, wd, w, _, bcur = step_weights(dt, A, trap)

    ang0, ssm0, k0, v0 = initial_states if initial_states is not None else (None,) * 4
    if S:
        ps = rows(math.pi * torch.tanh(angles.float())).contiguous()
        dt_rot = first_row(dtf).contiguous()
        off, final_angle = angle_offsets(ps, dt_rot, ang0, plan.angle_chunk)
    else:
        ps = dt_rot = off = None
        final_angle = ang0.float() if ang0 is not None else torch.zeros(bsz, H, 0, device=dev)
    Bb = Cb = None
    if B_bias is not None or C_bias is not None:      # (h, R, n) -> (R, h, n): the kernel's layout
        ranked = lambda t: (torch.zeros(R, H, N, device=dev) if t is None  # noqa: E731
                            else t.float().reshape(H, R, N).transpose(0, 1).contiguous())
        Bb, Cb = ranked(B_bias), ranked(C_bias)

    wx = reference._rank_weight(W_x, R, H, P, f32, dev)              # (R, h, p)
    h0 = folded_initial_state(ssm0, k0, v0, bcur, wx, N)            # H'_{-1}

    Q = plan.ssd.kernel_chunk(plan.mimo_chunk(), x.dtype)
    f32c = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    y, hfin = _MIMOFn.apply(
        x.contiguous(), wx.contiguous(), rows(w).contiguous(), first_row(adt).contiguous(), B.contiguous().view(bsz, LR, G, N),
        C.contiguous().view(bsz, LR, G, N), Bb, Cb, ps, dt_rot, off, f32c(D), f32c(wd), f32c(w),
        None if z is None else z.contiguous(), f32c(W_z) if z is not None else None, f32c(W_o), h0, H, R, Q, plan)
    if W_o is None:
        y = y.view(bsz, L, R, H, P)
    if not return_final_states:
        return y
    k_last = reference._heads(B[:, L - 1], B_bias, H, f32)          # (b, R, h, n)
    if S:
        k_last = reference.rotate_pairs(k_last, final_angle.unsqueeze(1))
    return y, (final_angle, hfin, k_last, x[:, L - 1].float())
