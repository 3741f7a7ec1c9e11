"""Mamba-3 SISO on the SSD kernels.

The chunked form in reference.py says, per head (k, q rotated and biased, v = x):

    y_t = sum_{s<=t} exp(cum_t - cum_s) w_s (q_t . k_s) v_s + exp(cum_t) q_t H'_{-1}  -  b_t (q_t . k_t) v_t

with cum the running sum of dt*A, w_s = lam_s dt_s + b_s and b_t = (1 - lam_{t+1}) dt_{t+1}.
The first two terms are exactly an SSD whose decay (dt*A) and input scale (w) are separate inputs
(``ssd_decoupled``); the last is a per-position skip weight -b_t (q_t . k_t) on x, which that SSD
also takes (D_pos). So SISO needs no kernels of its own beyond the rotation (triton_rotate.py):

1. torch: the (b, l, h) scalars and the angle entering each 64-step chunk (float64 cumsum of
   chunk totals, modulo 2 pi);
2. ``_rotate`` / ``_rotate_backward``: per-head rotated k, q in x's dtype and q . k, the in-chunk
   angle cumsum done in registers (Triton kernels in triton_rotate.py);
3. the decoupled SSD (the Mamba-2 kernels, as ``ssd_decoupled`` runs them) with D, the per-position
   skip and the z gate; 2 and 3 are one autograd node (``_SISOFn``);
4. torch: the folded initial state and the final (angle, ssm, k, v) states.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
import triton

from ... import knobs
from ...launch import FastKernel
from ..ssd import fused as ssd_fused
from . import reference
from .triton_rotate import rotate_bwd_kernel, rotate_fwd_kernel

TWO_PI = 2.0 * math.pi
_rotate_fwd = FastKernel(rotate_fwd_kernel)
_rotate_bwd = FastKernel(rotate_bwd_kernel)
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
#: the MIMO step scores' tensor-core product (rotation forward) for fp32 k, q: three tf32 passes
#: on the GPU (~1e-6 relative), exact in the interpreter; 16-bit k, q ignore it
_MMA_PREC = "ieee" if _INTERPRET else "tf32x3"
#: SSD chunk length for SISO (None: the caller's chunk_size; a speed knob only, the SSD result
#: does not depend on it). Kernel time per forward+backward on the H100 (kernel_variants.sh,
#: 2026-11-22), b4 l4096 / b1 l32768: chunk 64 3.40 / 7.23 ms, 128 3.28 / 6.76, 256 3.59 / 7.29.
#: (128 once made an illegal memory access at d_state 16: Triton's wgmma path in the SSD
#: backward, worked around in ssd/fused.py.) MIMO's l*R rows take it too: rank 4, f+b at b4 /
#: b1 l32768 (2026-11-23): 64 17.39 / 36.57 ms, 128 16.82 / 34.60, 256 17.03 / 34.74.
#: HYBRIDLAB_MAMBA3_SSD_CHUNK overrides it.
SSD_CHUNK = knobs.MAMBA3_SSD_CHUNK or 128
_NO_LIMIT = (0.0, math.inf)
#: steps per rotation program: the in-chunk angle cumsum happens in registers. At 64 steps the
#: forward kernel needs 254 registers per thread (scripts/kernel_regs.py), at 32 it needs 122.
#: HYBRIDLAB_MAMBA3_ANGLE_CHUNK overrides it.
ANGLE_CHUNK = knobs.MAMBA3_ANGLE_CHUNK or 64
#: rotation pairs per backward program. With all 64 pairs of n=128 in one program the backward
#: spills 1.4 KB per thread (scripts/kernel_regs.py). H100, b4 l4096, the kernel alone (2026-11-23,
#: BENCHMARKS.md "The rotations: approximate sin and cos, 16 pairs at 4 warps"): 16 pairs
#: at 4 warps 0.581 ms, 32 at 4 warps 0.725, 32 at 8 warps 0.732 (the default before), 64 at 8
#: 0.931. (In 2026-11-22's f+b runs at 8 warps: 64 pairs 0.84 ms, 32 0.73, 16 0.82.)
#: HYBRIDLAB_MAMBA3_ROTATE_PAIRS / _ROTATE_BWD_WARPS override them.
ROTATE_BWD_PAIRS = knobs.MAMBA3_ROTATE_PAIRS or 16
ROTATE_BWD_WARPS = knobs.MAMBA3_ROTATE_BWD_WARPS or 4
#: warps per forward rotation program. The forward at 8 warps needs 254 registers per thread, one
#: program per SM; at 16 it needs 112 (scripts/kernel_regs.py). H100, b4 l4096, kernel time
#: (kernel_variants.sh with scripts/gpu/variants-rotate-warps.txt, 2026-11-22): forward 0.304 ms
#: at 16 warps against 0.358 at 8. HYBRIDLAB_MAMBA3_ROTATE_FWD_WARPS.
#: Capped at 128 registers (HYBRIDLAB_MAMBA3_ROTATE_FWD_MAXNREG), two 8-warp forward programs fit
#: per SM: 0.224 ms against 0.305 at 16 warps uncapped (same run, H100, 2026-11-22); 4 warps
#: capped at 168 or 128 gave 0.391 and 0.753.
ROTATE_FWD_WARPS = knobs.MAMBA3_ROTATE_FWD_WARPS
ROTATE_FWD_CAP = {"maxnreg": knobs.MAMBA3_ROTATE_FWD_MAXNREG} if knobs.MAMBA3_ROTATE_FWD_MAXNREG else {}
#: the rotations' cos and sin from the GPU's approximate instructions (triton_rotate._cos_sin):
#: the rotation backward alone 0.732 -> 0.568 ms at b4 (H100, 2026-11-23); the interpreter cannot
#: run inline PTX and takes libdevice's
FAST_TRIG = not _INTERPRET


def _p2(n: int) -> int:
    return max(2, triton.next_power_of_2(max(int(n), 1)))


def _rotate(B, C, Bb, Cb, ps, dt, off, H, dtype, ranks=1, launch=None):
    """k, q (b, l, h, n) in ``dtype`` and qk (b, l, h) fp32 from B, C (b, l, g, n), biases (h, n)
    fp32 or None, ps (b, l, S), dt (b, l, h), off (b, nc, h, S) fp32 or None (no rotation).
    MIMO (mimo.py) passes its rows (t, r) as l = steps * ranks rows and biases (ranks, h, n); qk is
    then each step's ranks x ranks block, (b, l, h, ranks), and its own launch options."""
    bsz, L, G, N = B.shape
    S = ps.shape[-1] if ps is not None else 0
    nc = triton.cdiv(L, ANGLE_CHUNK)
    k = torch.empty(bsz, L, H, N, device=B.device, dtype=dtype)
    q = torch.empty_like(k)
    qk = torch.empty(bsz, L, H, *((ranks,) if ranks > 1 else ()), device=B.device, dtype=torch.float32)
    d = qk                                  # stands in for absent inputs (never read)
    _rotate_fwd[(nc, H, bsz)](
        B, C, _or(Bb, d), _or(Cb, d), _or(ps, d), _or(dt, d), _or(off, d), k, q, qk,
        L, H, G, N, S, nc, B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        QA=ANGLE_CHUNK, BN2=_p2((N + 1) // 2), HAS_BIAS=Bb is not None, HAS_ROT=S > 0, RB=ranks, PREC=_MMA_PREC,
        FAST_TRIG=FAST_TRIG,
        **({"num_warps": 1} if _INTERPRET else launch or {"num_warps": ROTATE_FWD_WARPS, **ROTATE_FWD_CAP}))
    return k, q, qk


def _rotate_backward(B, C, Bb, Cb, ps, dt, off, k, dk, dq, dqk, ranks=1, pairs_per_program=None, warps=None):
    """Gradients of ``_rotate`` for B, C, the biases ((h, n), or (ranks, h, n)), ps, dt and off,
    from fp32 dk, dq, dqk (k: the forward's output, for its head count and dtype)."""
    bsz, L, G, N = B.shape
    H = k.shape[2]
    S = ps.shape[-1] if ps is not None else 0
    dev, f32 = B.device, torch.float32
    nc = triton.cdiv(L, ANGLE_CHUNK)
    pairs = _p2((N + 1) // 2)
    bp2 = min(pairs, pairs_per_program or ROTATE_BWD_PAIRS or pairs)
    npb = pairs // bp2
    dB = torch.empty(bsz, L, G, N, device=dev, dtype=f32)
    dC = torch.empty_like(dB)
    bias = Bb is not None
    dBb = torch.empty(bsz, nc, ranks, H, N, device=dev, dtype=f32) if bias else None
    dCb = torch.empty_like(dBb) if bias else None
    dps = torch.empty(bsz, L, G, S, device=dev, dtype=f32) if S else None
    ddt = torch.empty(bsz, L, H, npb, device=dev, dtype=f32) if S else None
    doff = torch.empty(bsz, nc, H, S, device=dev, dtype=f32) if S else None
    d = dB
    _rotate_bwd[(nc, G * npb, bsz)](
        B, C, _or(Bb, d), _or(Cb, d), _or(ps, d), _or(dt, d), _or(off, d), k, dk, dq, _or(dqk, d),
        dB, dC, _or(dBb, d), _or(dCb, d), _or(dps, d), _or(ddt, d), _or(doff, d),
        L, H, G, N, S, nc, npb, B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        QA=ANGLE_CHUNK, BN2=bp2, HAS_BIAS=bias, HAS_ROT=S > 0, HAS_QK=dqk is not None, RB=ranks,
        FAST_TRIG=FAST_TRIG, num_warps=1 if _INTERPRET else warps or ROTATE_BWD_WARPS)
    bias_grad = lambda t: t.sum((0, 1)).view(Bb.shape) if bias else None  # noqa: E731
    return (dB.to(B.dtype), dC.to(C.dtype), bias_grad(dBb), bias_grad(dCb), dps.sum(2) if S else None,
            (ddt[..., 0] if npb == 1 else ddt.sum(-1)) if S else None, doff)


class _SISOFn(torch.autograd.Function):
    """Rotation + decoupled SSD in one autograd node, so the per-head dk, dq reach the rotation's
    backward in fp32 (as separate nodes autograd would round them to x's dtype first, and the angle
    gradient, a long sum of cancelling terms, would lose ~4x in accuracy)."""

    @staticmethod
    def forward(ctx, x, w, adt, B, C, Bb, Cb, ps, dt, off, D, Dps, z, h0, H, Q):
        k, q, qk = _rotate(B, C, Bb, Cb, ps, dt, off, H, x.dtype)
        D_pos = -Dps * qk if Dps is not None else None
        dpos = ssd_fused.pad_positions(D_pos, Q)
        A = w.new_zeros(H)                           # unused: the kernels read the log decay
        out, final, y, delta, cs, E = ssd_fused.forward_pass(
            x, w, A, k, q, D, z, None, h0, None, Q, False, _NO_LIMIT, adt, dpos)
        ctx.save_for_backward(x, w, A, k, q, D, z, y, delta, cs, E, dpos, Dps, qk, B, C, Bb, Cb, ps, dt, off)
        ctx.cfg = (H, Q, h0 is not None, h0.dtype if h0 is not None else None)
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        x, w, A, k, q, D, z, y, delta, cs, E, dpos, Dps, qk, B, C, Bb, Cb, ps, dt, off = ctx.saved_tensors
        H, Q, has_init, init_dtype = ctx.cfg
        dx, dw, _, dk, dq, dD, dz, _, dinit, dadt, ddpos = ssd_fused.backward_pass(
            dout, dfinal, x, w, A, k, q, D, z, None, y, delta, cs, E, None, Q, False, _NO_LIMIT,
            has_init, True, dpos)
        dqk = dDps = None
        if Dps is not None:
            dqk = -Dps * ddpos
            dDps = -qk * ddpos
        dB, dC, dBb, dCb, dps, ddt, doff = _rotate_backward(
            B, C, Bb, Cb, ps, dt, off, k, dk.contiguous(), dq.contiguous(), dqk)
        return (dx, dw, dadt, dB, dC, dBb, dCb, dps, ddt, doff, None if dD is None else dD.to(D.dtype),
                dDps, dz, None if dinit is None else dinit.to(init_dtype), None, None)


def _or(t, dummy):
    return dummy if t is None else t


def angle_offsets(ps, dtf, ang0, Q):
    """The angle entering each Q-step chunk, (b, nc, h, S) fp32: a float64 cumsum of the chunk
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
    """(ps, off, final_angle) for the rotation kernels: ps = pi*tanh(angles) (b, l, S), the angle
    entering each Q-step chunk (angle_offsets) and the final angle (b, h, S); ps and off are None
    without angles, and the final angle is then the initial one (or an empty (b, h, 0))."""
    if angles is None or angles.shape[-1] == 0:
        bsz, _, H = dtf.shape
        final = ang0.float() if ang0 is not None else torch.zeros(bsz, H, 0, device=dtf.device)
        return None, None, final
    ps = (math.pi * torch.tanh(angles.float())).contiguous()
    return (ps, *angle_offsets(ps, dtf, ang0, Q))


def step_weights(dt, A, trap):
    """The per-step fp32 scalars (b, l, h) of the chunked form (reference.py): dt, dt*A, the
    diagonal weight wd = lam dt, the input scale w = wd + b, b_t = (1 - lam_{t+1}) dt_{t+1} (0 at
    the last step; None without trap) and bcur = (1 - lam) dt (None without trap: lam = 1, the
    exponential Euler rule of Mamba-2)."""
    dtf = dt.float()
    adt = dtf * A.float()
    if trap is None:
        return dtf, adt, dtf, dtf, None, None
    lam = torch.sigmoid(trap.float())
    wd = lam * dtf
    bcur = (1 - lam) * dtf
    bnext = F.pad(bcur[:, 1:], (0, 0, 0, 1))
    return dtf, adt, wd, wd + bnext, bnext, bcur


def folded_initial_state(ssm0, k0, v0, bcur, wx, N):
    """H'_{-1} = H_{-1} + (1 - lam_0) dt_0 sum_r (v_{-1} W_x[r]) k_{-1,r}^T, (b, h, p, n) fp32, or None
    when nothing is given; wx (R, h, p) is MIMO's W_x (ones for SISO), k0 (b, [R,] h, n)."""
    if ssm0 is None and (bcur is None or k0 is None or v0 is None):
        return None
    bsz, H, P = v0.shape if v0 is not None else ssm0.shape[:3]
    h0 = ssm0.float() if ssm0 is not None else torch.zeros(bsz, H, P, N, device=wx.device)
    if bcur is not None and k0 is not None and v0 is not None:
        vv = v0.float().unsqueeze(1) * wx
        h0 = h0 + bcur[:, 0, :, None, None] * torch.einsum("brhp,brhn->bhpn", vv, k0.float().reshape(bsz, -1, H, N))
    return h0.contiguous()


def mamba3_siso(x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
                initial_states=None, chunk_size=64, return_final_states=False):
    """SISO Mamba-3, arguments and results as ``reference.mamba3`` with B, C of shape (b, l, g, n)."""
    if x.dtype == torch.float64:
        raise ValueError("mamba3_siso: float64 runs the reference (fused.mamba3 routes it there)")
    bsz, L, H, P = x.shape
    G, N = B.shape[2:]
    S = 0 if angles is None else angles.shape[-1]
    dev = x.device
    dtf, adt, _, w, D_pos_scale, bcur = step_weights(dt, A, trap)

    ang0, ssm0, k0, v0 = initial_states if initial_states is not None else (None,) * 4
    ps, off, final_angle = angle_inputs(angles, dtf, ang0, ANGLE_CHUNK)
    if B_bias is not None or C_bias is not None:
        zero = torch.zeros(H, N, device=dev)
        Bb = B_bias.float().reshape(H, N) if B_bias is not None else zero
        Cb = C_bias.float().reshape(H, N) if C_bias is not None else zero
        Bb, Cb = Bb.contiguous(), Cb.contiguous()
    else:
        Bb = Cb = None

    h0 = folded_initial_state(ssm0, k0, v0, bcur, torch.ones(1, H, P, device=dev), N)

    Q = ssd_fused.kernel_chunk(SSD_CHUNK or chunk_size, x.dtype)
    f32c = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    y, hfin = _SISOFn.apply(
        ssd_fused.lastdim_contig(x), f32c(w), f32c(adt), B.contiguous(), C.contiguous(), Bb, Cb, ps,
        dtf.contiguous() if S else None, off, f32c(D), f32c(D_pos_scale),
        None if z is None else ssd_fused.lastdim_contig(z.to(x.dtype)), f32c(h0), H, Q)
    if not return_final_states:
        return y
    k_last = reference._heads(B[:, L - 1].unsqueeze(1), B_bias, H, torch.float32)[:, 0]     # (b, h, n)
    if S:
        k_last = reference.rotate_pairs(k_last, final_angle)
    return y, (final_angle, hfin, k_last, x[:, L - 1].float())
