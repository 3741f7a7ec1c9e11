"""dB, dC of the chunked SSD when every head has its own keys and queries (Mamba-3 SISO).

``chunk_bwd_dbc`` (fused_bwd.py) sums the group's heads before its N-wide dots, which needs the
keys to be the group's. Here k, q = Rot(theta_h)(B + B_bias_h), Rot(theta_h)(C + C_bias_h)
(head_keys.py), so each head's dq (side 0) or dk (side 1) is its own dot, in the head's rotated
frame. Per (b, group, head slice, chunk, block of BT rows, side), for each head of the slice:

    side 0: dq_t = exp(cs_t) dY_t E_hᵀ + Σ_{s<=t} M[t, s] k_s,     M = (dY Xᵀ) ∘ L
    side 1: dk_s = v_s X_s dS_h        + Σ_{t>=s} M[t, s] q_t

then its epilogue turns d u (u = q or k at the block's rows, as the dots saw it, rounded):
    d(B or C + bias) = Rot(-theta) d u             summed over the slice's heads (registers)
    d theta_i = u_e du_o - u_o du_e                 per (row, pair i < S)
    d off = Σ_block d theta,  d(ps dt) = reverse in-block cumsum of d theta  (RA-row blocks)
    d dt_h = Σ_i d(ps dt)_i ps_i,  d ps += d(ps dt) dt_h    (d ps summed over the slice's heads)
The angle gradient uses the rounded u because the scores are invariant to a common rotation of
q and k: with the values the dots saw, the cancelling terms of d theta cancel exactly.
Partial sums go to buffers indexed by side and slice that torch adds up (no atomics).
"""
import triton
import triton.language as tl

from .fused_bwd import _decay, _gated_dy, _xdelta
from .head_keys import biased_tile, head_tile, join_pairs, rotate, split_pairs, theta_tile


@triton.jit
def chunk_bwd_dkq(
    x_ptr, z_ptr, dout_ptr, B_ptr, C_ptr, delta_ptr, cs_ptr, seg_ptr, E_ptr, dst_ptr,
    dB_ptr, dC_ptr, dcs2_ptr,
    Bb_ptr, Cb_ptr, ps_ptr, rdt_ptr, off_ptr, dbias_ptr, doff_ptr, drdt_ptr, dps_ptr,
    L, H, P, N, G, S, nA,
    sx_b, sx_l, sx_h, sz_b, sz_l, sz_h, sdo_b, sdo_l, sdo_h,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g, sdB_s, sdB_b, sdB_l, sdB_g,
    Lp, nchunks,
    Q: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, HPP: tl.constexpr,
    RA: tl.constexpr, HAS_KBIAS: tl.constexpr, HAS_ROT: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_SEQ: tl.constexpr, HAS_STATE: tl.constexpr, PREC: tl.constexpr,
):
    pid = tl.program_id(0)          # (group, head slice, side): side 0 gives dC, side 1 dB
    cb = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    side = pid % 2
    hs = pid // 2
    NB: tl.constexpr = Q // BT
    BN2: tl.constexpr = BN // 2
    c = cb // NB
    k = cb % NB
    hpg = H // G
    nsplit = hpg // HPP
    g = hs // nsplit
    split = hs % nsplit
    h0 = g * hpg + split * HPP
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    ot = tl.arange(0, BT)
    i2 = tl.arange(0, BN2)
    tk = c * Q + k * BT + ot
    vk = tk < L
    nmask_k = vk[:, None] & (on[None, :] < N)
    pmask_k = vk[:, None] & (op[None, :] < P)
    smask = (op[:, None] < P) & (on[None, :] < N)
    DT = B_ptr.dtype.element_ty
    Bbase = b * sB_b + g * sB_g
    Cbase = b * sC_b + g * sC_g
    acc = tl.zeros([BT, BN], dtype=tl.float32)       # the group's d(B or C), unrotated
    dps = tl.zeros([BT, BN2], dtype=tl.float32)
    if HAS_SEQ:
        seg_prev = tl.load(seg_ptr + b * Lp + c * Q - 1, mask=c > 0, other=0)
        seg_end = tl.load(seg_ptr + b * Lp + c * Q + Q - 1)
    for hh in range(HPP):
        h = h0 + hh
        row = (b * H + h) * Lp
        du = tl.zeros([BT, BN], dtype=tl.float32)    # this head's dq or dk, rotated frame
        if side == 0:
            dYk = _gated_dy(dout_ptr, z_ptr, b, tk, h, op, pmask_k, sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, HAS_Z)
            if HAS_STATE:
                E = tl.load(E_ptr + ((b * nchunks + c) * H + h) * P * N + op[:, None] * N + on[None, :],
                            mask=smask, other=0.0)
                w = tl.exp(tl.load(cs_ptr + row + tk))
                if HAS_SEQ:
                    w = tl.where(tl.load(seg_ptr + b * Lp + tk) == seg_prev, w, 0.0)
                dYE = tl.dot(dYk.to(DT), E.to(DT), input_precision=PREC)          # (BT, BN)
                du += w[:, None] * dYE
                qt = head_tile(C_ptr, Cbase, sC_l, Cb_ptr, ps_ptr, rdt_ptr, off_ptr, b, h, tk, vk,
                                L, N, H, S, nA, BT, BN, RA, HAS_KBIAS, HAS_ROT)
                tl.store(dcs2_ptr + row + tk, w * tl.sum(qt.to(tl.float32) * dYE, axis=1))
            for j in range(0, k + 1):
                tj = c * Q + j * BT + ot
                vj = tj < L
                Xj = _xdelta(x_ptr, delta_ptr, b, tj, h, row, op, vj[:, None] & (op[None, :] < P), sx_b, sx_l, sx_h, DT)
                M = tl.dot(dYk.to(DT), tl.trans(Xj), input_precision=PREC) * _decay(cs_ptr, seg_ptr, row, b, Lp, tk, tj, HAS_SEQ)
                kj = head_tile(B_ptr, Bbase, sB_l, Bb_ptr, ps_ptr, rdt_ptr, off_ptr, b, h, tj, vj,
                               L, N, H, S, nA, BT, BN, RA, HAS_KBIAS, HAS_ROT)
                du += tl.dot(M.to(DT), kj, input_precision=PREC)
        else:
            Xk = _xdelta(x_ptr, delta_ptr, b, tk, h, row, op, pmask_k, sx_b, sx_l, sx_h, DT)
            dS = tl.load(dst_ptr + ((b * nchunks + c) * H + h) * P * N + op[:, None] * N + on[None, :],
                         mask=smask, other=0.0).to(DT)
            v = tl.exp(tl.load(cs_ptr + row + c * Q + Q - 1) - tl.load(cs_ptr + row + tk))
            if HAS_SEQ:
                v = tl.where(tl.load(seg_ptr + b * Lp + tk) == seg_end, v, 0.0)
            du += v[:, None] * tl.dot(Xk, dS, input_precision=PREC)
            for i in range(k, NB):
                ti = c * Q + i * BT + ot
                vi = ti < L
                dYi = _gated_dy(dout_ptr, z_ptr, b, ti, h, op, vi[:, None] & (op[None, :] < P),
                                sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, HAS_Z)
                M = tl.dot(dYi.to(DT), tl.trans(Xk), input_precision=PREC) * _decay(cs_ptr, seg_ptr, row, b, Lp, ti, tk, HAS_SEQ)
                qi = head_tile(C_ptr, Cbase, sC_l, Cb_ptr, ps_ptr, rdt_ptr, off_ptr, b, h, ti, vi,
                               L, N, H, S, nA, BT, BN, RA, HAS_KBIAS, HAS_ROT)
                du += tl.dot(tl.trans(M.to(DT)), qi, input_precision=PREC)

        if HAS_ROT:   # the angle gradient, then back to the unrotated frame
            th, ps, dtc = theta_tile(ps_ptr, rdt_ptr, off_ptr, b, h, tk, vk, L, H, S, nA, BT, BN2, RA)
            cs, sn = tl.cos(th), tl.sin(th)
            # u (q for side 0, k for side 1) rebuilt here rather than live through the loops
            if side == 0:
                ub = biased_tile(C_ptr, Cbase, sC_l, Cb_ptr, h, tk, vk, N, BT, BN, HAS_KBIAS)
            else:
                ub = biased_tile(B_ptr, Bbase, sB_l, Bb_ptr, h, tk, vk, N, BT, BN, HAS_KBIAS)
            u = rotate(ub.to(tl.float32), cs, sn, BT, BN2).to(DT).to(tl.float32)
            ue, uo = split_pairs(u, BT, BN2)
            de, do = split_pairs(du, BT, BN2)
            dth = tl.where(i2[None, :] < S, ue * do - uo * de, 0.0)
            d3 = tl.reshape(dth, (BT // RA, RA, BN2))
            blk = (c * Q + k * BT) // RA + tl.arange(0, BT // RA)
            tl.store(doff_ptr + (((side * tl.num_programs(2) + b) * nA + blk[:, None]) * H + h) * S + i2[None, :],
                     tl.sum(d3, axis=1), mask=(blk[:, None] * RA < L) & (i2[None, :] < S))
            dphi = tl.reshape(tl.sum(d3, axis=1, keep_dims=True) - tl.cumsum(d3, axis=1) + d3, (BT, BN2))
            tl.store(drdt_ptr + ((side * tl.num_programs(2) + b) * L + tk) * H + h, tl.sum(dphi * ps, axis=1), mask=vk)
            dps += dphi * dtc[:, None]
            du = join_pairs(de * cs + do * sn, do * cs - de * sn, BT, BN2)          # Rot(-theta)
        if HAS_KBIAS:
            tl.store(dbias_ptr + (((side * tl.num_programs(2) + b) * nchunks * NB + cb) * H + h) * N + on,
                     tl.sum(du, axis=0), mask=on < N)
        acc += du

    out = split * sdB_s + b * sdB_b + tk[:, None] * sdB_l + g * sdB_g + on[None, :]
    if side == 0:
        tl.store(dC_ptr + out, acc, mask=nmask_k)
    else:
        tl.store(dB_ptr + out, acc, mask=nmask_k)
    if HAS_ROT:
        tl.store(dps_ptr + ((((side * nsplit + split) * tl.num_programs(2) + b) * L + tk[:, None]) * G + g) * S + i2[None, :],
                 dps, mask=vk[:, None] & (i2[None, :] < S))
