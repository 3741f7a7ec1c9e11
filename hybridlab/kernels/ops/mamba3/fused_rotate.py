"""Triton kernels that turn Mamba-3's group keys/queries into the per-head rotated ones SSD reads.

Forward, per (b, angle chunk c of QA steps, head h of group g):
    theta_t = off_c + sum_{s in chunk, s<=t} ps_s dt_s          (in registers: never stored)
    k = Rot(theta) (B_g + B_bias_h),  q = Rot(theta) (C_g + C_bias_h)     (x's dtype, (b, l, h, n))
    (MIMO passes rows (t, r) as one sequence of l*R rows: the bias is then (R, h, n), picked by
    row % RB, its gradient is summed per rank, and qk is each step's R x R block (b, l*R, h, R),
    qk[(t, r), u] = q_(t,r) . k_(t,u))
    qk = <q, k>  on the rounded values the SSD kernels see                (fp32, (b, l, h))
    SISO also writes the SSD's per-position skip weight D_pos = -bnext qk in the SSD's layout,
    (b, h, Lp), zero on the padding rows up to Lp (its grid covers them)
ps = pi*tanh(angles) (b, l, S); off (b, nc, h, S) = the angle entering each chunk (float64, modulo
2 pi: fused_prep.angle_scan_kernel for SISO, torch for MIMO). Rotation pairs are (2i, 2i+1) for
i < S; pairs i >= S stay as they are.

Backward, per (b, chunk, group g, block of BN2 rotation pairs), looping over the group's heads so
dB, dC and d ps are summed in registers (pairs are independent: a block of them is a narrower
tile, fewer live registers; d dt, a sum over pairs, comes out per block and torch adds the blocks): given dk, dq (from SSD) and dqk, un-rotate to d(B + bias), d(C + bias);
d theta_i = (k_e dk_o - k_o dk_e) + (q_e dq_o - q_o dq_e); d off = sum over the chunk of d theta,
d(ps dt) = reverse in-chunk cumsum of d theta. Bias gradients are per-program partial sums
(summed by torch: deterministic, no atomics).
Rows are loaded whole and split into (even, odd) columns in registers, so every load and store
is contiguous.
"""
import triton
import triton.language as tl

from .fused_mimo_rows import per_rank_sum, step_block, step_mix, step_scores, step_scores_mma


@triton.jit
def _rows(ptr, base, row_stride, t, on, valid, N):
    """(QA, BN) rows t of a row-major tensor, fp32, zero outside."""
    return tl.load(ptr + base + t[:, None] * row_stride + on[None, :],
                   mask=valid[:, None] & (on[None, :] < N), other=0.0).to(tl.float32)


@triton.jit
def _split_pairs(v, QA: tl.constexpr, BN2: tl.constexpr):
    return tl.split(tl.reshape(v, (QA, BN2, 2)))


@triton.jit
def _join_pairs(e, o, QA: tl.constexpr, BN: tl.constexpr):
    return tl.reshape(tl.join(e, o), (QA, BN))


@triton.jit
def _bias(ptr, h, t, on, H, N, RB: tl.constexpr):
    """Head h's bias, (1, BN) fp32, or (QA, BN) for ranked rows: bias (RB, H, N), rank = t % RB."""
    if RB == 1:
        v = tl.load(ptr + h * N + on, mask=on < N, other=0.0)[None, :]
    else:
        v = tl.load(ptr + ((t % RB)[:, None] * H + h) * N + on[None, :], mask=on[None, :] < N, other=0.0)
    return v


@triton.jit
def _qk_grad(ptr, bnext_ptr, b, h, t, valid, L, H, sdq_b, sdq_h, RB: tl.constexpr, QK_DPOS: tl.constexpr):
    """The gradient of qk at the tile's rows, as (weights for dq, weights for dk): the (QA, 1)
    column of q.k for SISO (QK_DPOS: from the gradient of D_pos = -bnext qk, (b, h, Lp) with
    strides sdq_b, sdq_h); MIMO's (QA, RB) step block and its per-step transpose."""
    if RB == 1:
        if QK_DPOS:
            bn = tl.load(bnext_ptr + (b * L + t) * H + h, mask=valid, other=0.0)
            w = (-bn * tl.load(ptr + b * sdq_b + h * sdq_h + t, mask=valid, other=0.0))[:, None]
        else:
            w = tl.load(ptr + (b * L + t) * H + h, mask=valid, other=0.0)[:, None]
        wt = w
    else:
        w, wt = step_block(ptr, b, h, t, valid, L, H, RB)
    return w, wt


@triton.jit
def _qk_mix(a, w, QA: tl.constexpr, BN: tl.constexpr, RB: tl.constexpr):
    """qk's gradient carried to one side: w * a (SISO), or the step mix of a's rows (MIMO; in
    registers: the same mix as tensor-core products, on 16-bit hi/lo parts of w, made the MIMO
    rank-4 backward slower)."""
    if RB == 1:
        v = w * a
    else:
        v = step_mix(a, w, QA, BN, RB)
    return v


@triton.jit
def _theta(ps_ptr, dt_ptr, off_ptr, b, c, h, t, i, valid, L, H, S, nc):
    """theta (QA, BN2) of head h in chunk c, the ps tile and dt column it came from."""
    ps = tl.load(ps_ptr + (b * L + t[:, None]) * S + i[None, :], mask=valid[:, None] & (i[None, :] < S), other=0.0)
    dt = tl.load(dt_ptr + (b * L + t) * H + h, mask=valid, other=0.0).to(tl.float32)
    c = tl.minimum(c, nc - 1)           # the forward's padding-only programs (HAS_DPOS) read chunk nc-1
    off = tl.load(off_ptr + ((b * nc + c) * H + h) * S + i, mask=i < S, other=0.0)
    return tl.cumsum(ps * dt[:, None], axis=0) + off[None, :], ps, dt


@triton.jit
def _cos_sin(th, FAST: tl.constexpr):
    """cos and sin of theta. FAST: the GPU's approximate instructions (~5e-7 absolute error on
    [-pi, pi]) after a two-constant reduction modulo 2 pi (they do no range reduction of their
    own); else libdevice's (the interpreter, which cannot run inline PTX). Forward and backward
    take the same branch, so the backward rebuilds exactly the rounded k, q the SSD saw."""
    if FAST:
        n = tl.floor(th * 0.15915494309189535 + 0.5)
        r = th - n * 6.28125                      # 2 pi = 6.28125 + 0.0019353071795864769...
        r = r - n * 0.0019353071795864769
        cs = tl.inline_asm_elementwise("cos.approx.f32 $0, $1;", "=r,r", [r], dtype=tl.float32,
                                       is_pure=True, pack=1)
        sn = tl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=r,r", [r], dtype=tl.float32,
                                       is_pure=True, pack=1)
    else:
        cs, sn = tl.cos(th), tl.sin(th)
    return cs, sn


@triton.jit
def rotate_fwd_kernel(
    B_ptr, C_ptr, Bb_ptr, Cb_ptr, ps_ptr, dt_ptr, off_ptr, k_ptr, q_ptr, qk_ptr, bnext_ptr, dpos_ptr,
    L, H, G, N, S, nc, Lp,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    QA: tl.constexpr, BN2: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr,
    RB: tl.constexpr, PREC: tl.constexpr, FAST_TRIG: tl.constexpr, HAS_DPOS: tl.constexpr,
):
    c = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    BN: tl.constexpr = 2 * BN2
    g = h // (H // G)
    t = c * QA + tl.arange(0, QA)
    valid = t < L
    on = tl.arange(0, BN)
    i = tl.arange(0, BN2)
    kb = _rows(B_ptr, b * sB_b + g * sB_g, sB_l, t, on, valid, N)
    qb = _rows(C_ptr, b * sC_b + g * sC_g, sC_l, t, on, valid, N)
    if HAS_BIAS:
        kb += _bias(Bb_ptr, h, t, on, H, N, RB)
        qb += _bias(Cb_ptr, h, t, on, H, N, RB)
    if HAS_ROT:
        th, _, _ = _theta(ps_ptr, dt_ptr, off_ptr, b, c, h, t, i, valid, L, H, S, nc)
        cs, sn = _cos_sin(th, FAST_TRIG)
        be, bo = _split_pairs(kb, QA, BN2)
        ce, co = _split_pairs(qb, QA, BN2)
        kb = _join_pairs(be * cs - bo * sn, be * sn + bo * cs, QA, BN)
        qb = _join_pairs(ce * cs - co * sn, ce * sn + co * cs, QA, BN)
    DT = k_ptr.dtype.element_ty
    kr, qr = kb.to(DT), qb.to(DT)
    out = ((b * L + t[:, None]) * H + h) * N + on[None, :]
    m = valid[:, None] & (on[None, :] < N)
    tl.store(k_ptr + out, kr, mask=m)
    tl.store(q_ptr + out, qr, mask=m)
    if RB == 1:
        qk = tl.sum(kr.to(tl.float32) * qr.to(tl.float32), axis=1)
        tl.store(qk_ptr + (b * L + t) * H + h, qk, mask=valid)
        if HAS_DPOS:
            bn = tl.load(bnext_ptr + (b * L + t) * H + h, mask=valid, other=0.0)
            tl.store(dpos_ptr + (b * H + h) * Lp + t, -bn * qk, mask=t < Lp)
    else:       # MIMO: the step's R x R block, qk[(t, r), u] = q_(t,r) . k_(t,u)
        ridx = tl.arange(0, RB)
        if BN >= 16:
            sc = step_scores_mma(qr, kr, QA, RB, PREC)
        else:
            sc = step_scores(qr.to(tl.float32), kr.to(tl.float32), QA, BN, RB)
        tl.store(qk_ptr + ((b * L + t[:, None]) * H + h) * RB + ridx[None, :], sc, mask=valid[:, None])


@triton.jit
def rotate_bwd_kernel(
    B_ptr, C_ptr, Bb_ptr, Cb_ptr, ps_ptr, dt_ptr, off_ptr, k_ptr, dk_ptr, dq_ptr, dqk_ptr, bnext_ptr,
    dB_ptr, dC_ptr, dBb_ptr, dCb_ptr, dps_ptr, ddt_ptr, doff_ptr,
    L, H, G, N, S, nc, npb, sdq_b, sdq_h,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    QA: tl.constexpr, BN2: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr,
    HAS_QK: tl.constexpr, RB: tl.constexpr, FAST_TRIG: tl.constexpr, QK_DPOS: tl.constexpr,
):
    c = tl.program_id(0)
    g = tl.program_id(1) // npb
    pblk = tl.program_id(1) % npb
    b = tl.program_id(2).to(tl.int64)
    BN: tl.constexpr = 2 * BN2
    hpg = H // G
    t = c * QA + tl.arange(0, QA)
    valid = t < L
    on = pblk * BN + tl.arange(0, BN)
    i = pblk * BN2 + tl.arange(0, BN2)
    m = valid[:, None] & (on[None, :] < N)
    B0 = _rows(B_ptr, b * sB_b + g * sB_g, sB_l, t, on, valid, N)
    C0 = _rows(C_ptr, b * sC_b + g * sC_g, sC_l, t, on, valid, N)
    dB = tl.zeros([QA, BN], dtype=tl.float32)
    dC = tl.zeros([QA, BN], dtype=tl.float32)
    dps = tl.zeros([QA, BN2], dtype=tl.float32)
    KT = k_ptr.dtype.element_ty         # the dtype SSD read k and q in (only its rounding is used)
    for hh in range(hpg):
        h = g * hpg + hh
        kb, qb = B0, C0
        if HAS_BIAS:
            kb += _bias(Bb_ptr, h, t, on, H, N, RB)
            qb += _bias(Cb_ptr, h, t, on, H, N, RB)
        off = ((b * L + t[:, None]) * H + h) * N + on[None, :]
        dk = tl.load(dk_ptr + off, mask=m, other=0.0).to(tl.float32)
        dq = tl.load(dq_ptr + off, mask=m, other=0.0).to(tl.float32)
        if HAS_ROT:
            th, ps, dtv = _theta(ps_ptr, dt_ptr, off_ptr, b, c, h, t, i, valid, L, H, S, nc)
            cs, sn = _cos_sin(th, FAST_TRIG)
            be, bo = _split_pairs(kb, QA, BN2)
            ce, co = _split_pairs(qb, QA, BN2)
            # k, q as SSD saw them (rounded): with these, the angle gradient keeps the exact
            # cancellation of the scores' invariance to a common rotation (q_t.k_s depends on
            # theta_t - theta_s only), so d angle0, a sum over the whole sequence that is ~0, does
            # not collect the rounding of every term
            ke = (be * cs - bo * sn).to(KT).to(tl.float32)
            ko = (be * sn + bo * cs).to(KT).to(tl.float32)
            qe = (ce * cs - co * sn).to(KT).to(tl.float32)
            qo = (ce * sn + co * cs).to(KT).to(tl.float32)
            dke, dko = _split_pairs(dk, QA, BN2)
            dqe, dqo = _split_pairs(dq, QA, BN2)
            if HAS_QK:
                w, wt = _qk_grad(dqk_ptr, bnext_ptr, b, h, t, valid, L, H, sdq_b, sdq_h, RB, QK_DPOS)
                dke += _qk_mix(qe, wt, QA, BN2, RB)
                dko += _qk_mix(qo, wt, QA, BN2, RB)
                dqe += _qk_mix(ke, w, QA, BN2, RB)
                dqo += _qk_mix(ko, w, QA, BN2, RB)
            dth = tl.where(i[None, :] < S, ke * dko - ko * dke + qe * dqo - qo * dqe, 0.0)
            tl.store(doff_ptr + ((b * nc + c) * H + h) * S + i, tl.sum(dth, axis=0), mask=i < S)
            dphi = tl.sum(dth, axis=0)[None, :] - tl.cumsum(dth, axis=0) + dth    # reverse cumsum
            tl.store(ddt_ptr + ((b * L + t) * H + h) * npb + pblk, tl.sum(dphi * ps, axis=1), mask=valid)
            dps += dphi * dtv[:, None]
            dk = _join_pairs(dke * cs + dko * sn, dko * cs - dke * sn, QA, BN)   # Rot(-theta)
            dq = _join_pairs(dqe * cs + dqo * sn, dqo * cs - dqe * sn, QA, BN)
        elif HAS_QK:
            w, wt = _qk_grad(dqk_ptr, bnext_ptr, b, h, t, valid, L, H, sdq_b, sdq_h, RB, QK_DPOS)
            dk += _qk_mix(qb.to(KT).to(tl.float32), wt, QA, BN, RB)
            dq += _qk_mix(kb.to(KT).to(tl.float32), w, QA, BN, RB)
        dB += dk
        dC += dq
        if HAS_BIAS:
            if RB == 1:
                pb = ((b * nc + c) * H + h) * N + on
                tl.store(dBb_ptr + pb, tl.sum(dk, axis=0), mask=on < N)
                tl.store(dCb_ptr + pb, tl.sum(dq, axis=0), mask=on < N)
            else:               # per rank: rows (t, r) of the chunk, r = row % RB
                ridx = tl.arange(0, RB)
                pb = (((b * nc + c) * RB + ridx[:, None]) * H + h) * N + on[None, :]
                tl.store(dBb_ptr + pb, per_rank_sum(dk, QA, BN, RB), mask=on[None, :] < N)
                tl.store(dCb_ptr + pb, per_rank_sum(dq, QA, BN, RB), mask=on[None, :] < N)
    goff = ((b * L + t[:, None]) * G + g) * N + on[None, :]
    tl.store(dB_ptr + goff, dB, mask=m)
    tl.store(dC_ptr + goff, dC, mask=m)
    if HAS_ROT:
        tl.store(dps_ptr + ((b * L + t[:, None]) * G + g) * S + i[None, :], dps,
                 mask=valid[:, None] & (i[None, :] < S))
