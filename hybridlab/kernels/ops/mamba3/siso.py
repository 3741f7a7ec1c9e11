"""Mamba-3 SISO on the SSD kernels.

The chunked form in reference.py says, per head (k, q rotated and biased, v = x):

    y_t = sum_{s<=t} exp(cum_t - cum_s) w_s (q_t . k_s) v_s + exp(cum_t) q_t H'_{-1}  -  b_t (q_t . k_t) v_t

with cum the running sum of dt*A, w_s = lam_s dt_s + b_s and b_t = (1 - lam_{t+1}) dt_{t+1}.
The first two terms are exactly an SSD whose decay (dt*A) and input scale (w) are separate inputs;
the last is a per-position skip weight -b_t (q_t . k_t) on x, which that SSD also takes (D_pos).
The SSD kernels build each head's k, q from the group's B, C as they load them (bias added,
rotated by the head's angles: ssd/head_keys.py), so SISO has no kernels of its own:

1. torch: the (b, l, h) scalars, q_t . k_t (a rotation leaves it unchanged, so it is
   (C_t + C_bias) . (B_t + B_bias), no angles needed) and the angle entering each block of RA
   steps (float64 cumsum of block totals, modulo 2 pi);
2. the SSD kernels with per-head keys (``_SISOFn``, one autograd node: its backward gives the
   biases', angles' and dt's gradients from chunk_bwd_dkq);
3. torch: the folded initial state and the final (angle, ssm, k, v) states.
Without biases and angles the keys are the group's, and it is a plain decoupled SSD.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton

from ... import knobs
from ..ssd import fused as ssd_fused
from . import reference

TWO_PI = 2.0 * math.pi
#: SSD chunk length for SISO (None: the caller's chunk_size; a speed knob only, the SSD result
#: does not depend on it). Kernel time per forward+backward on the H100 (kernel_variants.sh,
#: 2026-11-22, with the rotation in kernels of its own), b4 l4096 / b1 l32768: chunk 64
#: 3.40 / 7.23 ms, 128 3.28 / 6.76, 256 3.59 / 7.29. HYBRIDLAB_MAMBA3_SSD_CHUNK overrides it.
SSD_CHUNK = knobs.MAMBA3_SSD_CHUNK or 128
_NO_LIMIT = (0.0, math.inf)


class _SISOFn(torch.autograd.Function):
    """The decoupled SSD with per-head keys: one node, so the kernels' gradients of the biases,
    angles (ps, off) and the angles' dt come back with the rest."""

    @staticmethod
    def forward(ctx, x, w, adt, B, C, Bb, Cb, ps, rdt, off, D, D_pos, z, h0, Q, RA):
        keys = ssd_fused.HeadKeys(Bb, Cb, ps, rdt, off, RA) if Bb is not None or ps is not None else None
        dpos = ssd_fused.pad_positions(D_pos, Q)
        A = w.new_zeros(x.shape[2])                  # unused: the kernels read the log decay
        out, final, y, delta, cs, E = ssd_fused.forward_pass(
            x, w, A, B, C, D, z, None, h0, None, Q, False, _NO_LIMIT, adt, dpos, keys)
        ctx.save_for_backward(x, w, A, B, C, D, z, y, delta, cs, E, dpos, Bb, Cb, ps, rdt, off)
        ctx.cfg = (Q, RA, h0 is not None, h0.dtype if h0 is not None else None)
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        x, w, A, B, C, D, z, y, delta, cs, E, dpos, Bb, Cb, ps, rdt, off = ctx.saved_tensors
        Q, RA, has_init, init_dtype = ctx.cfg
        keys = ssd_fused.HeadKeys(Bb, Cb, ps, rdt, off, RA) if Bb is not None or ps is not None else None
        dx, dw, _, dB, dC, dD, dz, _, dinit, dadt, ddpos, dkeys = ssd_fused.backward_pass(
            dout, dfinal, x, w, A, B, C, D, z, None, y, delta, cs, E, None, Q, False, _NO_LIMIT,
            has_init, True, dpos, keys)
        dBb, dCb, dps, drdt, doff = dkeys if dkeys is not None else (None,) * 5
        return (dx, dw, dadt, dB.to(B.dtype), dC.to(C.dtype), dBb, dCb, dps, drdt, doff,
                None if dD is None else dD.to(D.dtype), ddpos, dz,
                None if dinit is None else dinit.to(init_dtype), None, None)


def head_dots(B, C, Bb, Cb, H):
    """q_t . k_t per head, (b, l, h) fp32, from the unrotated (C + C_bias) . (B + B_bias): a
    common rotation of q and k leaves their dot unchanged. Differentiable (torch)."""
    bsz, L, G, N = B.shape
    hpg = H // G
    Bf, Cf = B.float(), C.float()
    qk = (Bf * Cf).sum(-1).repeat_interleave(hpg, dim=2)
    if Bb is not None:
        Bbg, Cbg = Bb.view(G, hpg, N), Cb.view(G, hpg, N)
        cross = torch.einsum("blgn,gkn->blgk", Cf, Bbg) + torch.einsum("blgn,gkn->blgk", Bf, Cbg)
        qk = qk + cross.reshape(bsz, L, H) + (Bb * Cb).sum(-1)
    return qk


def angle_offsets(ps, dtf, ang0, Q):
    """The angle entering each Q-step block, (b, nc, h, S) fp32: a float64 cumsum of the chunk
    totals of ps*dt, kept modulo 2 pi (long sequences keep their precision); and the final angle
    (b, h, S). ps = pi*tanh(angles) (b, l, S), dtf (b, l, h), ang0 (b, h, S) or None."""
    bsz, L, H = dtf.shape
    S = ps.shape[-1]
    nc = triton.cdiv(L, Q)
    pad = nc * Q - L
    tot = torch.einsum("bcts,bcth->bchs", F.pad(ps, (0, 0, 0, pad)).view(bsz, nc, Q, S),
                       F.pad(dtf, (0, 0, 0, pad)).view(bsz, nc, Q, H)).double()
    start = ang0.double() if ang0 is not None else torch.zeros(bsz, H, S, dtype=torch.float64, device=dtf.device)
    ends = start.unsqueeze(1) + tot.cumsum(1)
    off = torch.remainder(ends - tot, TWO_PI).float().contiguous()
    return off, torch.remainder(ends[:, -1], TWO_PI).float()


def angle_inputs(angles, dtf, ang0, Q):
    """(ps, off, final_angle) for the per-head keys: ps = pi*tanh(angles) (b, l, S), the angle
    entering each Q-step block (angle_offsets) and the final angle (b, h, S); ps and off are None
    without angles, and the final angle is then the initial one (or an empty (b, h, 0))."""
    if angles is None or angles.shape[-1] == 0:
        bsz, _, H = dtf.shape
        final = ang0.float() if ang0 is not None else torch.zeros(bsz, H, 0, device=dtf.device)
        return None, None, final
    ps = (math.pi * torch.tanh(angles.float())).contiguous()
    return (ps, *angle_offsets(ps, dtf, ang0, Q))


def mamba3_siso(x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
                initial_states=None, chunk_size=64, return_final_states=False):
    """SISO Mamba-3, arguments and results as ``reference.mamba3`` with B, C of shape (b, l, g, n)."""
    if x.dtype == torch.float64:
        raise ValueError("mamba3_siso: float64 runs the reference (fused.mamba3 routes it there)")
    bsz, L, H, P = x.shape
    G, N = B.shape[2:]
    S = 0 if angles is None else angles.shape[-1]
    dev = x.device
    dtf = dt.float()
    adt = dtf * A.float()
    if trap is None:                                  # lam = 1: exponential Euler (Mamba-2)
        bcur, w, D_pos_scale = None, dtf, None
    else:
        lam = torch.sigmoid(trap.float())
        bcur = (1 - lam) * dtf
        bnext = F.pad(bcur[:, 1:], (0, 0, 0, 1))      # b_t, 0 at the last position
        w, D_pos_scale = lam * dtf + bnext, bnext

    ang0, ssm0, k0, v0 = initial_states if initial_states is not None else (None,) * 4
    Q = ssd_fused.kernel_chunk(SSD_CHUNK or chunk_size, x.dtype)
    RA = ssd_fused.key_rows(Q, x.dtype, N)
    ps, off, final_angle = angle_inputs(angles, dtf, ang0, RA)
    if B_bias is not None or C_bias is not None:
        zero = torch.zeros(H, N, device=dev)
        Bb = B_bias.float().reshape(H, N) if B_bias is not None else zero
        Cb = C_bias.float().reshape(H, N) if C_bias is not None else zero
        Bb, Cb = Bb.contiguous(), Cb.contiguous()
    else:
        Bb = Cb = None

    h0 = None                                         # the folded initial state H'_{-1}
    if ssm0 is not None or (bcur is not None and k0 is not None and v0 is not None):
        h0 = ssm0.float() if ssm0 is not None else torch.zeros(bsz, H, P, N, device=dev)
        if bcur is not None and k0 is not None and v0 is not None:
            h0 = h0 + bcur[:, 0, :, None, None] * v0.float().unsqueeze(-1) * k0.float().reshape(bsz, H, N).unsqueeze(-2)

    D_pos = -D_pos_scale * head_dots(B, C, Bb, Cb, H) if D_pos_scale is not None else None
    f32c = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    keys_in = lambda t: t.to(x.dtype).contiguous()  # noqa: E731   (the dots' dtype)
    y, hfin = _SISOFn.apply(
        ssd_fused.lastdim_contig(x), f32c(w), f32c(adt), keys_in(B), keys_in(C), Bb, Cb, ps,
        dtf.contiguous() if S else None, off, f32c(D), D_pos,
        None if z is None else ssd_fused.lastdim_contig(z.to(x.dtype)), f32c(h0), Q, RA)
    if not return_final_states:
        return y
    k_last = reference._heads(B[:, L - 1].unsqueeze(1), B_bias, H, torch.float32)[:, 0]     # (b, h, n)
    if S:
        k_last = reference.rotate_pairs(k_last, final_angle)
    return y, (final_angle, hfin, k_last, x[:, L - 1].float())
