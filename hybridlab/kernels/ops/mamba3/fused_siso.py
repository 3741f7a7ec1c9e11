"""Mamba-3 SISO on the SSD kernels.

The chunked form in reference.py says, per head (k, q rotated and biased, v = x):

    y_t = sum_{s<=t} exp(cum_t - cum_s) w_s (q_t . k_s) v_s + exp(cum_t) q_t H'_{-1}  -  b_t (q_t . k_t) v_t

with cum the running sum of dt*A, w_s = lam_s dt_s + b_s and b_t = (1 - lam_{t+1}) dt_{t+1}.
The first two terms are exactly an SSD whose decay (dt*A) and input scale (w) are separate inputs
(``ssd_decoupled``); the last is a per-position skip weight -b_t (q_t . k_t) on x, which that SSD
also takes (D_pos). So SISO needs no kernels of its own beyond the rotation and its inputs:

1. ``_step_prep``: the (b, l, h) scalars and the angle entering each angle chunk (float64 scan
   of chunk totals, modulo 2 pi): two Triton kernels (fused_prep.py);
2. ``_rotate`` / ``_rotate_backward``: per-head rotated k, q in x's dtype, q . k and the skip
   weight D_pos, the in-chunk angle cumsum done in registers (fused_rotate.py);
3. the decoupled SSD (the Mamba-2 kernels, as ``ssd_decoupled`` runs them) with D, the per-position
   skip and the z gate; 1-3 are one autograd node (``_SISOFn``);
4. torch: the folded initial state and the final (angle, ssm, k, v) states.

The launch settings come from the plan (plan.py): every function here takes it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...grad_mode import wants_grad
from ...launch import FastKernel, cdiv, next_pow2
from ..ssd import fused as ssd_fused
from . import reference
from .fused_prep import angle_scan_bwd_kernel, angle_scan_kernel, prep_bwd_kernel, prep_fwd_kernel
from .fused_rotate import rotate_bwd_kernel, rotate_fwd_kernel

TWO_PI = 2.0 * math.pi
_rotate_fwd = FastKernel(rotate_fwd_kernel)
_rotate_bwd = FastKernel(rotate_bwd_kernel)
_prep_fwd = FastKernel(prep_fwd_kernel)
_prep_bwd = FastKernel(prep_bwd_kernel)
_angle_scan = FastKernel(angle_scan_kernel)
_angle_scan_bwd = FastKernel(angle_scan_bwd_kernel)
_NO_LIMIT = (0.0, math.inf)


def _p2(n: int) -> int:
    return max(2, next_pow2(max(int(n), 1)))


def _p2_32(n: int) -> int:
    """The step kernels' dot sides (heads, rotated pairs): a power of two >= 32. With 16 heads or
    fewer (a 16-wide side) and 32 pairs, Triton 3.6's sm_90 path for prep_bwd_kernel's fp32
    (tf32x3) dot read past its shared memory: an illegal memory access at 8 heads and n128
    (compute-sanitizer: "Invalid __shared__ read" at the d ps dot; 16 heads too; 32 heads and 16
    pairs passed). The padded heads and pairs are masked."""
    return max(32, _p2(n))


def _rotate(B, C, Bb, Cb, ps, dt, off, H, dtype, plan, ranks=1, launch=None, bnext=None, Lp=None):
    """k, q (b, l, h, n) in ``dtype``, qk (b, l, h) fp32 and D_pos from B, C (b, l, g, n), biases
    (h, n) fp32 or None, ps (b, l, S), dt (b, l, h), off (b, nc, h, S) fp32 or None (no rotation).
    D_pos, the SSD's skip weight -bnext qk as (b, h, Lp) fp32 zero-padded to Lp rows, needs bnext
    (b, l, h) fp32 (SISO with trap); without it D_pos is None.
    MIMO (fused_mimo.py) passes its rows (t, r) as l = steps * ranks rows and biases (ranks, h, n);
    qk is then each step's ranks x ranks block, (b, l, h, ranks), and its own launch options."""
    bsz, L, G, N = B.shape
    S = ps.shape[-1] if ps is not None else 0
    QA = plan.angle_chunk
    nc = cdiv(L, QA)
    k = torch.empty(bsz, L, H, N, device=B.device, dtype=dtype)
    q = torch.empty_like(k)
    qk = torch.empty(bsz, L, H, *((ranks,) if ranks > 1 else ()), device=B.device, dtype=torch.float32)
    dpos = torch.empty(bsz, H, Lp, device=B.device, dtype=torch.float32) if bnext is not None else None
    grid_c = cdiv(Lp, QA) if bnext is not None else nc    # D_pos's padding rows too
    d = qk                                  # stands in for absent inputs (never read)
    _rotate_fwd[(grid_c, H, bsz)](
        B, C, _or(Bb, d), _or(Cb, d), _or(ps, d), _or(dt, d), _or(off, d), k, q, qk, _or(bnext, d), _or(dpos, d),
        L, H, G, N, S, nc, Lp or 0, B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        QA=QA, BN2=_p2((N + 1) // 2), HAS_BIAS=Bb is not None, HAS_ROT=S > 0, RB=ranks, PREC=plan.mma_prec,
        FAST_TRIG=plan.fast_trig, HAS_DPOS=bnext is not None,
        **({"num_warps": 1} if plan.interpret else launch or plan.rotate_fwd_options()))
    return k, q, qk, dpos


def _rotate_backward(B, C, Bb, Cb, ps, dt, off, k, dk, dq, dqk, plan, ranks=1, warps=None, bnext=None,
                     fold=True):
    """Gradients of ``_rotate`` for B, C (in their dtype), the biases ((h, n), or (ranks, h, n)),
    ps, dt and off, from fp32 dk, dq, dqk (k: the forward's output, for its head count and dtype).
    With bnext (SISO with trap), dqk is the gradient of D_pos, (b, h, Lp) with unit last stride.
    fold=False returns ps's and dt's gradients unsummed, as the kernel wrote them: (b, l, g, S)
    per group and (b, l, h, blocks) per block of pairs (prep_bwd_kernel adds them). ``warps``:
    MIMO's (default: SISO's)."""
    bsz, L, G, N = B.shape
    H = k.shape[2]
    S = ps.shape[-1] if ps is not None else 0
    dev, f32 = B.device, torch.float32
    nc = cdiv(L, plan.angle_chunk)
    pairs = _p2((N + 1) // 2)
    bp2 = min(pairs, plan.rotate_bwd_pairs or pairs)
    npb = pairs // bp2
    dB = torch.empty(bsz, L, G, N, device=dev, dtype=B.dtype)
    dC = torch.empty(bsz, L, G, N, device=dev, dtype=C.dtype)
    bias = Bb is not None
    dbias = torch.empty(2, bsz, nc, ranks, H, N, device=dev, dtype=f32) if bias else None   # per-chunk sums
    dBb, dCb = (dbias[0], dbias[1]) if bias else (None, None)
    dps = torch.empty(bsz, L, G, S, device=dev, dtype=f32) if S else None
    ddt = torch.empty(bsz, L, H, npb, device=dev, dtype=f32) if S else None
    doff = torch.empty(bsz, nc, H, S, device=dev, dtype=f32) if S else None
    d = dk
    sdq = (dqk.stride(0), dqk.stride(1)) if bnext is not None else (0, 0)
    _rotate_bwd[(nc, G * npb, bsz)](
        B, C, _or(Bb, d), _or(Cb, d), _or(ps, d), _or(dt, d), _or(off, d), k, dk, dq, _or(dqk, d), _or(bnext, d),
        dB, dC, _or(dBb, d), _or(dCb, d), _or(dps, d), _or(ddt, d), _or(doff, d),
        L, H, G, N, S, nc, npb, *sdq, B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        QA=plan.angle_chunk, BN2=bp2, HAS_BIAS=bias, HAS_ROT=S > 0, HAS_QK=dqk is not None, RB=ranks,
        FAST_TRIG=plan.fast_trig, QK_DPOS=bnext is not None, num_warps=plan.warps(warps or plan.rotate_bwd_warps))
    if bias:                                     # both biases' sums in one reduction
        dBb, dCb = (t.view(Bb.shape) for t in dbias.sum((1, 2)))
    if S and fold:
        dps, ddt = dps.sum(2), (ddt[..., 0] if npb == 1 else ddt.sum(-1))
    return dB, dC, dBb, dCb, dps, ddt, doff


def _step_prep(dt, A, trap, angles, ang0, plan):
    """The per-step fp32 scalars (b, l, h) and angle inputs of the chunked form, in two launches
    (fused_prep.py): adt = dt A, the SSD's input scale w, bnext (None without trap), ps =
    pi tanh(angles) (b, l, S), the angle entering each rotation chunk (b, nc, h, S) and the final
    angle (b, h, S) (without angles: ps and the offsets None, the final angle (b, h, 0))."""
    bsz, L, H = dt.shape
    S = 0 if angles is None else angles.shape[-1]
    nc = cdiv(L, plan.angle_chunk)
    dev, f32 = dt.device, torch.float32
    adt = torch.empty(bsz, L, H, device=dev, dtype=f32)
    w = torch.empty_like(adt)
    bnext = torch.empty_like(adt) if trap is not None else None
    ps = torch.empty(bsz, L, S, device=dev, dtype=f32) if S else None
    tot = torch.empty(bsz, nc, H, S, device=dev, dtype=f32) if S else None
    d = adt
    _prep_fwd[(nc, bsz)](
        dt, A, _or(trap, d), _or(angles, d), adt, w, _or(bnext, d), _or(ps, d), _or(tot, d), L, H, S, nc,
        QA=plan.angle_chunk, BH=_p2_32(H), BS=_p2_32(S), HAS_TRAP=trap is not None, HAS_ROT=S > 0,
        PREC=plan.mma_prec, num_warps=plan.warps(4))
    if not S:                                   # no angles: the caller keeps its initial angle
        return adt, w, bnext, None, None, torch.zeros(bsz, H, 0, device=dev)
    off = torch.empty_like(tot)
    final = torch.empty(bsz, H, S, device=dev, dtype=f32)
    _angle_scan[(H, bsz)](tot, _or(ang0, d), off, final, H, S, nc, CB=plan.scan_chunks, BS=_p2(S),
                          HAS_INIT=ang0 is not None, num_warps=plan.warps(4))
    return adt, w, bnext, ps, off, final


def _step_prep_backward(dt, A, trap, angles, ps, qk, dw, dadt, ddpos, ddt_rot, dps_rot, doff, dfinal, has_ang0,
                        plan):
    """Gradients of ``_step_prep`` (and of D_pos's bnext factor: ddpos, qk) for dt, A, trap,
    angles and the initial angle, from the SSD's dw, dadt, ddpos and the rotation's unsummed
    d dt, d ps and d off."""
    bsz, L, H = dt.shape
    S = ps.shape[-1] if ps is not None else 0
    nc = cdiv(L, plan.angle_chunk)
    dev, f32 = dt.device, torch.float32
    d = dw
    dtot = dang0 = None
    if S:
        dtot = torch.empty_like(doff)
        dang0 = torch.empty(bsz, H, S, device=dev, dtype=f32) if has_ang0 else None
        _angle_scan_bwd[(H, bsz)](doff, _or(dfinal, d), dtot, _or(dang0, d), H, S, nc, CB=plan.scan_chunks,
                                  BS=_p2(S), HAS_DFIN=dfinal is not None, HAS_INIT=has_ang0,
                                  num_warps=plan.warps(4))
    ddt = torch.empty_like(dt)
    dA = torch.empty_like(A)
    dtrap = torch.empty_like(trap) if trap is not None else None
    dang = torch.empty_like(angles) if S else None
    sdp = (ddpos.stride(0), ddpos.stride(1)) if ddpos is not None else (0, 0)
    _prep_bwd[(nc, bsz)](
        dt, A, _or(trap, d), _or(ps, d), _or(qk, d), dw, dadt, _or(ddpos, d), _or(ddt_rot, d), _or(dps_rot, d),
        _or(dtot, d), ddt, dA, _or(dtrap, d), _or(dang, d),
        L, H, dps_rot.shape[2] if S else 1, S, nc, ddt_rot.shape[-1] if S else 1, *sdp,
        QA=plan.angle_chunk, BH=_p2_32(H), BS=_p2_32(S), HAS_TRAP=trap is not None, HAS_ROT=S > 0,
        HAS_DPOS=ddpos is not None, PREC=plan.mma_prec, num_warps=plan.warps(8))
    return ddt, dA, dtrap, dang, dang0


class _SISOFn(torch.autograd.Function):
    """Step scalars + rotation + decoupled SSD in one autograd node: the per-head dk, dq reach the
    rotation's backward in fp32 (as separate nodes autograd would round them to x's dtype first,
    and the angle gradient, a long sum of cancelling terms, would lose ~4x in accuracy), and the
    ~70 small torch ops the per-step scalars took are four Triton launches (fused_prep.py)."""

    @staticmethod
    def forward(ctx, x, dt, A, trap, angles, B, C, Bb, Cb, D, z, h0, ang0, Q, grad, plan):
        H = x.shape[2]
        Lp = cdiv(x.shape[1], Q) * Q
        adt, w, bnext, ps, off, final_angle = _step_prep(dt, A, trap, angles, ang0, plan)
        k, q, qk, dpos = _rotate(B, C, Bb, Cb, ps, dt, off, H, x.dtype, plan, bnext=bnext, Lp=Lp)
        out, final, y, delta, cs, E = ssd_fused.forward_pass(
            x, w, adt, k, q, D, z, None, h0, None, Q, False, _NO_LIMIT, adt, dpos, plan.ssd, store_y=grad)
        ctx.save_for_backward(x, dt, A, trap, angles, B, C, Bb, Cb, D, z, w, adt, bnext, ps, off, k, q, qk,
                              y, delta, cs, E, dpos)
        ctx.cfg = (Q, h0 is not None, h0.dtype if h0 is not None else None, ang0 is not None, plan)
        ctx.set_materialize_grads(False)         # unused outputs: no zero-filled gradients to read
        return out, final, final_angle

    @staticmethod
    def backward(ctx, dout, dfinal, dfinal_angle):
        (x, dt, A, trap, angles, B, C, Bb, Cb, D, z, w, adt, bnext, ps, off, k, q, qk,
         y, delta, cs, E, dpos) = ctx.saved_tensors
        Q, has_init, init_dtype, has_ang0, plan = ctx.cfg
        if dout is None:
            dout = torch.zeros_like(x)
        dx, dw, _, dk, dq, dD, dz, _, dinit, dadt, ddpos = ssd_fused.backward_pass(
            dout, dfinal, x, w, adt, k, q, D, z, None, y, delta, cs, E, None, Q, False, _NO_LIMIT,
            has_init, True, dpos, plan.ssd)
        ddpos = ddpos.transpose(1, 2) if ddpos is not None else None        # (b, h, l), stride Lp
        dB, dC, dBb, dCb, dps, ddt_rot, doff = _rotate_backward(
            B, C, Bb, Cb, ps, dt, off, k, dk.contiguous(), dq.contiguous(), ddpos, plan, bnext=bnext, fold=False)
        ddt, dA, dtrap, dang, dang0 = _step_prep_backward(
            dt, A, trap, angles, ps, qk, dw, dadt, ddpos, ddt_rot, dps, doff,
            None if dfinal_angle is None else dfinal_angle.contiguous(), has_ang0, plan)
        return (dx, ddt, dA, dtrap, dang, dB, dC, dBb, dCb, None if dD is None else dD.to(D.dtype), dz,
                None if dinit is None else dinit.to(init_dtype), dang0, None, None, None)


def _or(t, dummy):
    return dummy if t is None else t


def angle_offsets(ps, dtf, ang0, Q):
    """The angle entering each Q-step chunk, (b, nc, h, S) fp32: a float64 cumsum of the chunk
    totals of ps*dt, kept modulo 2 pi (long sequences keep their precision); and the final angle
    (b, h, S). ps = pi*tanh(angles) (b, l, S), dtf (b, l, h), ang0 (b, h, S) or None."""
    bsz, L, H = dtf.shape
    S = ps.shape[-1]
    nc = cdiv(L, Q)
    pad = nc * Q - L
    tot = torch.einsum("bcts,bcth->bchs", F.pad(ps, (0, 0, 0, pad)).view(bsz, nc, Q, S),
                       F.pad(dtf, (0, 0, 0, pad)).view(bsz, nc, Q, H)).double()
    start = ang0.double() if ang0 is not None else torch.zeros(bsz, H, S, dtype=torch.float64, device=dtf.device)
    ends = start.unsqueeze(1) + tot.cumsum(1)
    off = torch.remainder(ends - tot, TWO_PI).float().contiguous()
    return off, torch.remainder(ends[:, -1], TWO_PI).float()


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


def mamba3_siso(x, dt, A, trap, B, C, plan, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
                initial_states=None, return_final_states=False):
    """SISO Mamba-3, arguments and results as ``reference.mamba3`` with B, C of shape (b, l, g, n),
    launched as ``plan`` says (the SSD chunk too: a caller's chunk_size changes nothing but rounding)."""
    if x.dtype == torch.float64:
        raise ValueError("mamba3_siso: float64 runs the reference (fused.mamba3 routes it there)")
    bsz, L, H, P = x.shape
    G, N = B.shape[2:]
    S = 0 if angles is None else angles.shape[-1]
    dev = x.device
    ang0, ssm0, k0, v0 = initial_states if initial_states is not None else (None,) * 4
    if B_bias is not None or C_bias is not None:
        zero = torch.zeros(H, N, device=dev)
        Bb = B_bias.float().reshape(H, N) if B_bias is not None else zero
        Cb = C_bias.float().reshape(H, N) if C_bias is not None else zero
        Bb, Cb = Bb.contiguous(), Cb.contiguous()
    else:
        Bb = Cb = None
    # (1 - lam_0) dt_0 folds the initial k, v into the state: torch, on the first step only
    bcur0 = None
    if trap is not None and k0 is not None and v0 is not None:
        bcur0 = ((1 - torch.sigmoid(trap[:, :1].float())) * dt[:, :1].float())
    h0 = folded_initial_state(ssm0, k0, v0, bcur0, torch.ones(1, H, P, device=dev), N)

    seq_states = plan.ssd.seq_state_tiles(bsz, H, P, N) is not None
    Q = plan.ssd.kernel_chunk(plan.siso_chunk(seq_states), x.dtype)
    f32c = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    y, hfin, final_angle = _SISOFn.apply(
        ssd_fused.lastdim_contig(x), dt.contiguous(), A.expand(dt.shape).contiguous(),
        None if trap is None else trap.contiguous(), angles.contiguous() if S else None,
        B.contiguous(), C.contiguous(), Bb, Cb, f32c(D),
        None if z is None else ssd_fused.lastdim_contig(z.to(x.dtype)), f32c(h0),
        None if ang0 is None or not S else ang0.float().contiguous(), Q,
        wants_grad(x, dt, A, trap, angles, B, C, B_bias, C_bias, D, z, *(initial_states or ())), plan)
    if not S and ang0 is not None:
        final_angle = ang0.float()
    if not return_final_states:
        return y
    k_last = reference._heads(B[:, L - 1].unsqueeze(1), B_bias, H, torch.float32)[:, 0]     # (b, h, n)
    if S:
        k_last = reference.rotate_pairs(k_last, final_angle)
    return y, (final_angle, hfin, k_last, x[:, L - 1].float())
