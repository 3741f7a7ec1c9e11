"""Triton kernels that turn Mamba-3's group keys/queries into the per-head rotated ones SSD reads.

Forward, per (b, block of BT steps, head h of group g):
    k = Rot(theta) (B_g + B_bias_h),  q = Rot(theta) (C_g + C_bias_h)     (x's dtype, (b, l, h, n))
    qk = <q, k>  on the rounded values the SSD kernels see                (fp32, (b, l, h))
Rotation pairs are (2i, 2i+1) for i < S; pairs i >= S stay as they are (theta = 0 there).

Backward, per (b, block of steps, group g), looping over the group's heads so dB and dC are summed
in registers: given dk, dq (from SSD) and dqk, un-rotate to d(B + bias), d(C + bias) and
d theta_i = (k_e dk_o - k_o dk_e) + (q_e dq_o - q_o dq_e); per-program partial sums of the bias
gradients (summed by torch: deterministic, no atomics).
"""
import triton
import triton.language as tl


@triton.jit
def _pairs(ptr, base, row_stride, t, i, valid, N):
    """Load the (BT, BN2) even and odd columns (2i, 2i+1) of rows t, as fp32."""
    m = valid[:, None] & (2 * i[None, :] < N)
    mo = valid[:, None] & (2 * i[None, :] + 1 < N)
    off = base + t[:, None] * row_stride + 2 * i[None, :]
    return tl.load(ptr + off, mask=m, other=0.0).to(tl.float32), tl.load(ptr + off + 1, mask=mo, other=0.0).to(tl.float32)


@triton.jit
def rotate_fwd_kernel(
    B_ptr, C_ptr, Bb_ptr, Cb_ptr, th_ptr, k_ptr, q_ptr, qk_ptr,
    L, H, G, N, S,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    BT: tl.constexpr, BN2: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr,
):
    tb = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    g = h // (H // G)
    t = tb * BT + tl.arange(0, BT)
    valid = t < L
    i = tl.arange(0, BN2)
    be, bo = _pairs(B_ptr, b * sB_b + g * sB_g, sB_l, t, i, valid, N)
    ce, co = _pairs(C_ptr, b * sC_b + g * sC_g, sC_l, t, i, valid, N)
    if HAS_BIAS:
        be += tl.load(Bb_ptr + h * N + 2 * i, mask=2 * i < N, other=0.0)[None, :]
        bo += tl.load(Bb_ptr + h * N + 2 * i + 1, mask=2 * i + 1 < N, other=0.0)[None, :]
        ce += tl.load(Cb_ptr + h * N + 2 * i, mask=2 * i < N, other=0.0)[None, :]
        co += tl.load(Cb_ptr + h * N + 2 * i + 1, mask=2 * i + 1 < N, other=0.0)[None, :]
    if HAS_ROT:
        th = tl.load(th_ptr + ((b * L + t[:, None]) * H + h) * S + i[None, :],
                     mask=valid[:, None] & (i[None, :] < S), other=0.0)
        cs, sn = tl.cos(th), tl.sin(th)
        be, bo = be * cs - bo * sn, be * sn + bo * cs
        ce, co = ce * cs - co * sn, ce * sn + co * cs
    out = ((b * L + t[:, None]) * H + h) * N + 2 * i[None, :]
    m = valid[:, None] & (2 * i[None, :] < N)
    mo = valid[:, None] & (2 * i[None, :] + 1 < N)
    DT = k_ptr.dtype.element_ty
    be, bo, ce, co = be.to(DT), bo.to(DT), ce.to(DT), co.to(DT)
    tl.store(k_ptr + out, be, mask=m)
    tl.store(k_ptr + out + 1, bo, mask=mo)
    tl.store(q_ptr + out, ce, mask=m)
    tl.store(q_ptr + out + 1, co, mask=mo)
    qk = tl.sum(ce.to(tl.float32) * be.to(tl.float32) + co.to(tl.float32) * bo.to(tl.float32), axis=1)
    tl.store(qk_ptr + (b * L + t) * H + h, qk, mask=valid)


@triton.jit
def rotate_bwd_kernel(
    B_ptr, C_ptr, Bb_ptr, Cb_ptr, th_ptr, dk_ptr, dq_ptr, dqk_ptr,
    dB_ptr, dC_ptr, dBb_ptr, dCb_ptr, dth_ptr,
    L, H, G, N, S, nblk,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    BT: tl.constexpr, BN2: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr,
    HAS_QK: tl.constexpr,
):
    tb = tl.program_id(0)
    g = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    hpg = H // G
    t = tb * BT + tl.arange(0, BT)
    valid = t < L
    i = tl.arange(0, BN2)
    m = valid[:, None] & (2 * i[None, :] < N)
    mo = valid[:, None] & (2 * i[None, :] + 1 < N)
    be0, bo0 = _pairs(B_ptr, b * sB_b + g * sB_g, sB_l, t, i, valid, N)
    ce0, co0 = _pairs(C_ptr, b * sC_b + g * sC_g, sC_l, t, i, valid, N)
    dBe = tl.zeros([BT, BN2], dtype=tl.float32)
    dBo = tl.zeros([BT, BN2], dtype=tl.float32)
    dCe = tl.zeros([BT, BN2], dtype=tl.float32)
    dCo = tl.zeros([BT, BN2], dtype=tl.float32)
    for hh in range(hpg):
        h = g * hpg + hh
        be, bo, ce, co = be0, bo0, ce0, co0
        if HAS_BIAS:
            be += tl.load(Bb_ptr + h * N + 2 * i, mask=2 * i < N, other=0.0)[None, :]
            bo += tl.load(Bb_ptr + h * N + 2 * i + 1, mask=2 * i + 1 < N, other=0.0)[None, :]
            ce += tl.load(Cb_ptr + h * N + 2 * i, mask=2 * i < N, other=0.0)[None, :]
            co += tl.load(Cb_ptr + h * N + 2 * i + 1, mask=2 * i + 1 < N, other=0.0)[None, :]
        cs = tl.full([BT, BN2], 1.0, tl.float32)
        sn = tl.zeros([BT, BN2], dtype=tl.float32)
        if HAS_ROT:
            th_off = ((b * L + t[:, None]) * H + h) * S + i[None, :]
            th = tl.load(th_ptr + th_off, mask=valid[:, None] & (i[None, :] < S), other=0.0)
            cs, sn = tl.cos(th), tl.sin(th)
        ke, ko = be * cs - bo * sn, be * sn + bo * cs        # the rotated k, q (fp32)
        qe, qo = ce * cs - co * sn, ce * sn + co * cs
        off = ((b * L + t[:, None]) * H + h) * N + 2 * i[None, :]
        dke = tl.load(dk_ptr + off, mask=m, other=0.0).to(tl.float32)
        dko = tl.load(dk_ptr + off + 1, mask=mo, other=0.0).to(tl.float32)
        dqe = tl.load(dq_ptr + off, mask=m, other=0.0).to(tl.float32)
        dqo = tl.load(dq_ptr + off + 1, mask=mo, other=0.0).to(tl.float32)
        if HAS_QK:      # qk was taken on the k, q rounded to the dtype SSD reads (dk's)
            dqk = tl.load(dqk_ptr + (b * L + t) * H + h, mask=valid, other=0.0)[:, None]
            DT = dk_ptr.dtype.element_ty
            dke += dqk * qe.to(DT).to(tl.float32)
            dko += dqk * qo.to(DT).to(tl.float32)
            dqe += dqk * ke.to(DT).to(tl.float32)
            dqo += dqk * ko.to(DT).to(tl.float32)
        if HAS_ROT:
            dth = ke * dko - ko * dke + qe * dqo - qo * dqe
            tl.store(dth_ptr + th_off, dth, mask=valid[:, None] & (i[None, :] < S))
        ube, ubo = dke * cs + dko * sn, dko * cs - dke * sn     # Rot(-theta) applied to the gradients
        uce, uco = dqe * cs + dqo * sn, dqo * cs - dqe * sn
        dBe += ube
        dBo += ubo
        dCe += uce
        dCo += uco
        if HAS_BIAS:
            pb = ((b * nblk + tb) * H + h) * N + 2 * i
            tl.store(dBb_ptr + pb, tl.sum(ube, axis=0), mask=2 * i < N)
            tl.store(dBb_ptr + pb + 1, tl.sum(ubo, axis=0), mask=2 * i + 1 < N)
            tl.store(dCb_ptr + pb, tl.sum(uce, axis=0), mask=2 * i < N)
            tl.store(dCb_ptr + pb + 1, tl.sum(uco, axis=0), mask=2 * i + 1 < N)
    goff = ((b * L + t[:, None]) * G + g) * N + 2 * i[None, :]
    tl.store(dB_ptr + goff, dBe, mask=m)
    tl.store(dB_ptr + goff + 1, dBo, mask=mo)
    tl.store(dC_ptr + goff, dCe, mask=m)
    tl.store(dC_ptr + goff + 1, dCo, mask=mo)
