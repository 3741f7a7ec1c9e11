"""Mamba-3 backward in three Triton kernels.

Notation per chunk (rows i, j; see triton_common): S_ij = q_i.k_j, M the intra-chunk weights,
dY the gradient of the un-gated per-rank output, H_in / dH_out the (folded) state entering the
chunk / the gradient of the state leaving it, e = exp(cum), f_j = exp(cum_end - cum_j) w_j.

1. ``bwd_dstates``: reverse walk over chunks (like fwd_states): dH_in = exp(cum_end) dH_out + (e dY)^T Q.
2. ``bwd_values``: per (chunk, batch*head): recomputes y for the gate, then
   dv = (S o M)^T dY + f (K dH_out^T) + D dY  (-> dx, dW_x), dz, dW_z, dW_o, dD, and the scalar
   gradients of cum (-> d(dt*A)), w and wd from dM = (dY V^T) o S, the e and f factors.
3. ``bwd_keys``: per (chunk, block of heads, pair block):
   dq = (dS o M) K + e dY H_in,  dk = (dS o M)^T Q + f V dH_out,  the angle gradient
   dtheta = dq_o q_e - dq_e q_o (+ same for k), un-rotated dq/dk summed over the heads of the block
   (so dB/dC need no atomics), bias partials, and the rotary-offset / dt / angle gradients.
"""
import triton
import triton.language as tl

from .triton_common import (chunk_cum, chunk_mask, chunk_rows, chunk_theta, load_dout, load_dy,
                            load_pairs, load_rank_w, load_time_tile, load_v, per_rank2, per_time,
                            per_time2, rotate, row_scalar)


@triton.jit
def bwd_dstates_kernel(C_ptr, Cb_ptr, dt_ptr, ps_ptr, off_ptr, adt_ptr, z_ptr, Wz_ptr, Wo_ptr,
                       dout_ptr, dhfin_ptr, dhout_ptr, dh0_ptr,
                       L, H, G, P, N, S, NC,
                       Q: tl.constexpr, R: tl.constexpr, BP: tl.constexpr, BN2: tl.constexpr,
                       HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr, HAS_Z: tl.constexpr,
                       HAS_WZ: tl.constexpr, HAS_WO: tl.constexpr, PER_RANK: tl.constexpr,
                       HAS_DHFIN: tl.constexpr, DOT_PREC: tl.constexpr):
    pn = tl.program_id(0)
    pp = tl.program_id(1)
    pbh = tl.program_id(2)
    b = (pbh // H).to(tl.int64)
    h = pbh % H
    g = h // (H // G)
    dtype = dout_ptr.dtype.element_ty
    HP = H * P
    pidx = pp * BP + tl.arange(0, BP)
    cidx = pn * BN2 + tl.arange(0, BN2)
    ecol = 2 * cidx
    ocol = ecol + 1
    sme = (pidx < P)[:, None] & (ecol < N)[None, :]
    smo = (pidx < P)[:, None] & (ocol < N)[None, :]
    ste = pidx[:, None] * N + ecol[None, :]
    sto = pidx[:, None] * N + ocol[None, :]
    hb = (b * H + h) * P * N
    if HAS_DHFIN:
        dHe = tl.load(dhfin_ptr + hb + ste, mask=sme, other=0.0)
        dHo = tl.load(dhfin_ptr + hb + sto, mask=smo, other=0.0)
    else:
        dHe = tl.zeros((BP, BN2), dtype=tl.float32)
        dHo = tl.zeros((BP, BN2), dtype=tl.float32)
    for ci in range(NC):
        c = NC - 1 - ci
        cb = dhout_ptr + ((b * NC + c) * H + h) * P * N
        tl.store(cb + ste, dHe.to(dhout_ptr.dtype.element_ty), mask=sme)
        tl.store(cb + sto, dHo.to(dhout_ptr.dtype.element_ty), mask=smo)
        t0 = b * L + c * Q
        rows, t, r, valid, first = chunk_rows(c, L, Q, R)
        cum, cend = chunk_cum(adt_ptr + t0 * H + h, t, valid, first, H)
        qe, qo = load_pairs(C_ptr + t0 * R * G * N + g * N, Cb_ptr + h * R * N, rows, r, valid, cidx,
                            G * N, N, HAS_BIAS)
        if HAS_ROT:
            th = chunk_theta(ps_ptr + t0 * S, dt_ptr + t0 * H + h, off_ptr + ((b * NC + c) * H + h) * S,
                             t, valid, first, cidx, H, S)
            qe, qo = rotate(qe, qo, tl.cos(th), tl.sin(th))
        dout_base = dout_ptr + (t0 * H + h) * P
        if PER_RANK:
            dout_base = dout_ptr + (t0 * R * H + h) * P
        dy = load_dy(dout_base, z_ptr + (t0 * H + h) * P, Wz_ptr + h * R * P, Wo_ptr + h * R * P,
                     rows, t, r, valid, pidx, HP, P, HAS_Z, HAS_WZ, HAS_WO, PER_RANK)
        dye = tl.trans((dy * tl.exp(cum)[:, None]).to(dtype))
        decay = tl.exp(cend)
        dHe = tl.dot(dye, qe.to(dtype), dHe * decay, input_precision=DOT_PREC)
        dHo = tl.dot(dye, qo.to(dtype), dHo * decay, input_precision=DOT_PREC)
    tl.store(dh0_ptr + hb + ste, dHe, mask=sme)
    tl.store(dh0_ptr + hb + sto, dHo, mask=smo)


@triton.jit
def bwd_values_kernel(x_ptr, B_ptr, C_ptr, Bb_ptr, Cb_ptr, dt_ptr, ps_ptr, off_ptr, adt_ptr, w_ptr,
                      wd_ptr, D_ptr, z_ptr, Wx_ptr, Wz_ptr, Wo_ptr, hin_ptr, dhout_ptr, dout_ptr,
                      dx_ptr, dz_ptr, dadt_ptr, dw_ptr, dwd_ptr, dD_ptr, dWx_ptr, dWz_ptr, dWo_ptr,
                      L, H, G, P, N, S, NC, N2,
                      Q: tl.constexpr, R: tl.constexpr, BP: tl.constexpr, BN2: tl.constexpr,
                      HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr, HAS_D: tl.constexpr,
                      HAS_Z: tl.constexpr, HAS_WX: tl.constexpr, HAS_WZ: tl.constexpr,
                      HAS_WO: tl.constexpr, PER_RANK: tl.constexpr, DOT_PREC: tl.constexpr):
    c = tl.program_id(0)
    pbh = tl.program_id(1)
    b = (pbh // H).to(tl.int64)
    h = pbh % H
    g = h // (H // G)
    dtype = x_ptr.dtype.element_ty
    HP = H * P
    t0 = b * L + c * Q
    rows, t, r, valid, first = chunk_rows(c, L, Q, R)
    pidx = tl.arange(0, BP)
    pm = pidx < P
    sc = t0 * H + h                                   # (b, l, h) scalars at the chunk start
    cb = ((b * NC + c) * H + h) * P * N
    Bbase = B_ptr + t0 * R * G * N + g * N
    Cbase = C_ptr + t0 * R * G * N + g * N
    scores = tl.zeros((Q * R, Q * R), dtype=tl.float32)
    yoff = tl.zeros((Q * R, BP), dtype=tl.float32)
    kdh = tl.zeros((Q * R, BP), dtype=tl.float32)   # K dH_out^T
    dE = tl.zeros((BP,), dtype=tl.float32)          # <dH_out, H_in>, summed over pairs
    for nb in range(0, tl.cdiv(N2, BN2)):
        cidx = nb * BN2 + tl.arange(0, BN2)
        ke, ko = load_pairs(Bbase, Bb_ptr + h * R * N, rows, r, valid, cidx, G * N, N, HAS_BIAS)
        qe, qo = load_pairs(Cbase, Cb_ptr + h * R * N, rows, r, valid, cidx, G * N, N, HAS_BIAS)
        if HAS_ROT:
            th = chunk_theta(ps_ptr + t0 * S, dt_ptr + sc, off_ptr + ((b * NC + c) * H + h) * S,
                             t, valid, first, cidx, H, S)
            cs = tl.cos(th)
            sn = tl.sin(th)
            ke, ko = rotate(ke, ko, cs, sn)
            qe, qo = rotate(qe, qo, cs, sn)
        qe = qe.to(dtype)
        qo = qo.to(dtype)
        ke = ke.to(dtype)
        ko = ko.to(dtype)
        scores = tl.dot(qe, tl.trans(ke), scores, input_precision=DOT_PREC)
        scores = tl.dot(qo, tl.trans(ko), scores, input_precision=DOT_PREC)
        ecol = 2 * cidx
        ocol = ecol + 1
        me = pm[:, None] & (ecol < N)[None, :]
        mo = pm[:, None] & (ocol < N)[None, :]
        he = tl.load(hin_ptr + cb + pidx[:, None] * N + ecol[None, :], mask=me, other=0.0)
        ho = tl.load(hin_ptr + cb + pidx[:, None] * N + ocol[None, :], mask=mo, other=0.0)
        de = tl.load(dhout_ptr + cb + pidx[:, None] * N + ecol[None, :], mask=me, other=0.0)
        do_ = tl.load(dhout_ptr + cb + pidx[:, None] * N + ocol[None, :], mask=mo, other=0.0)
        yoff = tl.dot(qe, tl.trans(he.to(dtype)), yoff, input_precision=DOT_PREC)
        yoff = tl.dot(qo, tl.trans(ho.to(dtype)), yoff, input_precision=DOT_PREC)
        kdh = tl.dot(ke, tl.trans(de.to(dtype)), kdh, input_precision=DOT_PREC)
        kdh = tl.dot(ko, tl.trans(do_.to(dtype)), kdh, input_precision=DOT_PREC)
        dE += tl.sum(he.to(tl.float32) * de.to(tl.float32) + ho.to(tl.float32) * do_.to(tl.float32), 1)
    # the T x T weights and v only after the loop: shorter live ranges, fewer registers
    cum, cend = chunk_cum(adt_ptr + sc, t, valid, first, H)
    w = row_scalar(w_ptr + sc, t, valid, H)
    M, decay = chunk_mask(cum, w, row_scalar(wd_ptr + sc, t, valid, H), t)
    v, xv = load_v(x_ptr + sc * P, Wx_ptr + h * R * P, t, r, valid, pidx, HP, P, HAS_WX)
    yoff = yoff * tl.exp(cum)[:, None]
    SM = scores * M
    y = tl.dot(SM.to(dtype), v.to(dtype), yoff, input_precision=DOT_PREC)
    if HAS_D:
        Dh = tl.load(D_ptr + h)
        y += Dh * v

    # output gate and rank mixing: out = sum_r W_o[r] * y_r * silu(z W_z[r])
    dout_base = dout_ptr + sc * P
    if PER_RANK:
        dout_base = dout_ptr + (t0 * R * H + h) * P
    dg = load_dout(dout_base, rows, t, valid, pidx, HP, P, PER_RANK)
    part = ((b * NC + c) * H + h) * R * P + tl.arange(0, R)[:, None] * P + pidx[None, :]
    if HAS_Z:
        zz = load_time_tile(z_ptr + sc * P, t, valid, pidx, HP, P)
        zr = zz
        if HAS_WZ:
            wz = load_rank_w(Wz_ptr + h * R * P, r, pidx, P)
            zr = zz * wz
        sg = tl.sigmoid(zr)
    if HAS_WO:
        gy = y
        if HAS_Z:
            gy = y * zr * sg
        tl.store(dWo_ptr + part, per_rank2(dg * gy, Q, R, BP), mask=pm[None, :])
        dg = dg * load_rank_w(Wo_ptr + h * R * P, r, pidx, P)
    dy = dg
    tq = tl.arange(0, Q)
    tm = c * Q + tq < L
    if HAS_Z:
        dy = dg * zr * sg
        dzr = dg * y * sg * (1 + zr * (1 - sg))
        if HAS_WZ:
            tl.store(dWz_ptr + part, per_rank2(dzr * zz, Q, R, BP), mask=pm[None, :])
            dzr = dzr * wz
        tl.store(dz_ptr + sc * P + tq[:, None] * HP + pidx[None, :],
                 per_time2(dzr, Q, R, BP).to(dz_ptr.dtype.element_ty), mask=tm[:, None] & pm[None, :])

    # values
    f = tl.exp(cend - cum) * w
    dv = tl.dot(tl.trans(SM).to(dtype), dy.to(dtype), kdh * f[:, None], input_precision=DOT_PREC)
    if HAS_D:
        dv += Dh * dy
        tl.store(dD_ptr + (b * NC + c) * H + h, tl.sum(tl.sum(dy * v, 1), 0))
    if HAS_WX:
        tl.store(dWx_ptr + part, per_rank2(dv * xv, Q, R, BP), mask=pm[None, :])
        dv = dv * load_rank_w(Wx_ptr + h * R * P, r, pidx, P)
    tl.store(dx_ptr + sc * P + tq[:, None] * HP + pidx[None, :],
             per_time2(dv, Q, R, BP).to(dx_ptr.dtype.element_ty), mask=tm[:, None] & pm[None, :])

    # scalars: dM = (dY V^T) o S
    dM = tl.dot(dy.to(dtype), tl.trans(v.to(dtype)), input_precision=DOT_PREC) * scores
    dMd = dM * decay                                # decay is 0 off the strictly-lower part
    Pm = dMd * w[None, :]                           # = dM o M there
    dcum = tl.sum(Pm, 1) - tl.sum(Pm, 0) + tl.sum(dy * yoff, 1)
    dwj = tl.sum(dMd, 0)
    dwd = tl.sum(tl.where(t[:, None] == t[None, :], dM, 0.0), 1)
    df = tl.sum(v * kdh, 1)
    dcum -= f * df
    dcend = tl.sum(f * df, 0) + tl.exp(cend) * tl.sum(dE, 0)
    dwj += tl.exp(cend - cum) * df
    rev = tl.sum(dcum, 0) - tl.cumsum(dcum, 0) + dcum          # sum over rows >= i
    tl.store(dadt_ptr + sc + tq * H, per_time(tl.where(first, rev, 0.0), Q, R) + dcend, mask=tm)
    tl.store(dw_ptr + sc + tq * H, per_time(dwj, Q, R), mask=tm)
    tl.store(dwd_ptr + sc + tq * H, per_time(dwd, Q, R), mask=tm)


@triton.jit
def bwd_keys_kernel(x_ptr, B_ptr, C_ptr, Bb_ptr, Cb_ptr, dt_ptr, ps_ptr, off_ptr, adt_ptr, w_ptr,
                    wd_ptr, z_ptr, Wx_ptr, Wz_ptr, Wo_ptr, hin_ptr, dhout_ptr, dout_ptr,
                    dB_ptr, dC_ptr, dBb_ptr, dCb_ptr, doff_ptr, ddt_ptr, dps_ptr,
                    L, H, G, P, N, S, NC, HB, BATCH,
                    Q: tl.constexpr, R: tl.constexpr, BP: tl.constexpr, BN2: tl.constexpr,
                    HPP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr,
                    HAS_Z: tl.constexpr, HAS_WX: tl.constexpr, HAS_WZ: tl.constexpr,
                    HAS_WO: tl.constexpr, PER_RANK: tl.constexpr, DOT_PREC: tl.constexpr):
    c = tl.program_id(0)
    pbhb = tl.program_id(1)
    pn = tl.program_id(2)
    b = (pbhb // HB).to(tl.int64)
    hb = pbhb % HB
    g = (hb * HPP) // (H // G)
    dtype = x_ptr.dtype.element_ty
    HP = H * P
    t0 = b * L + c * Q
    rows, t, r, valid, first = chunk_rows(c, L, Q, R)
    pidx = tl.arange(0, BP)
    pm = pidx < P
    cidx = pn * BN2 + tl.arange(0, BN2)
    ecol = 2 * cidx
    ocol = ecol + 1
    me = pm[:, None] & (ecol < N)[None, :]
    mo = pm[:, None] & (ocol < N)[None, :]
    rot = cidx < S
    tq = tl.arange(0, Q)
    Bbase = B_ptr + t0 * R * G * N + g * N
    Cbase = C_ptr + t0 * R * G * N + g * N
    acc_qe = tl.zeros((Q * R, BN2), dtype=tl.float32)
    acc_qo = tl.zeros((Q * R, BN2), dtype=tl.float32)
    acc_ke = tl.zeros((Q * R, BN2), dtype=tl.float32)
    acc_ko = tl.zeros((Q * R, BN2), dtype=tl.float32)
    acc_ps = tl.zeros((Q * R, BN2), dtype=tl.float32)
    for hh in range(HPP):
        h = hb * HPP + hh
        sc = t0 * H + h
        cum, cend = chunk_cum(adt_ptr + sc, t, valid, first, H)
        w = row_scalar(w_ptr + sc, t, valid, H)
        M, _ = chunk_mask(cum, w, row_scalar(wd_ptr + sc, t, valid, H), t)
        v, _ = load_v(x_ptr + sc * P, Wx_ptr + h * R * P, t, r, valid, pidx, HP, P, HAS_WX)
        v = v.to(dtype)
        dout_base = dout_ptr + sc * P
        if PER_RANK:
            dout_base = dout_ptr + (t0 * R * H + h) * P
        dy = load_dy(dout_base, z_ptr + sc * P, Wz_ptr + h * R * P, Wo_ptr + h * R * P,
                     rows, t, r, valid, pidx, HP, P, HAS_Z, HAS_WZ, HAS_WO, PER_RANK).to(dtype)
        dSM = (tl.dot(dy, tl.trans(v), input_precision=DOT_PREC) * M).to(dtype)
        ke, ko = load_pairs(Bbase, Bb_ptr + h * R * N, rows, r, valid, cidx, G * N, N, HAS_BIAS)
        qe, qo = load_pairs(Cbase, Cb_ptr + h * R * N, rows, r, valid, cidx, G * N, N, HAS_BIAS)
        if HAS_ROT:
            th = chunk_theta(ps_ptr + t0 * S, dt_ptr + sc, off_ptr + ((b * NC + c) * H + h) * S,
                             t, valid, first, cidx, H, S)
            cs = tl.cos(th)
            sn = tl.sin(th)
            ke, ko = rotate(ke, ko, cs, sn)
            qe, qo = rotate(qe, qo, cs, sn)
        cb = ((b * NC + c) * H + h) * P * N
        he = tl.load(hin_ptr + cb + pidx[:, None] * N + ecol[None, :], mask=me, other=0.0).to(dtype)
        ho = tl.load(hin_ptr + cb + pidx[:, None] * N + ocol[None, :], mask=mo, other=0.0).to(dtype)
        e = tl.exp(cum)[:, None]
        dqe = tl.dot(dSM, ke.to(dtype), tl.dot(dy, he, input_precision=DOT_PREC) * e, input_precision=DOT_PREC)
        dqo = tl.dot(dSM, ko.to(dtype), tl.dot(dy, ho, input_precision=DOT_PREC) * e, input_precision=DOT_PREC)
        de = tl.load(dhout_ptr + cb + pidx[:, None] * N + ecol[None, :], mask=me, other=0.0).to(dtype)
        do_ = tl.load(dhout_ptr + cb + pidx[:, None] * N + ocol[None, :], mask=mo, other=0.0).to(dtype)
        f = (tl.exp(cend - cum) * w)[:, None]
        dSMt = tl.trans(dSM)
        dke = tl.dot(dSMt, qe.to(dtype), tl.dot(v, de, input_precision=DOT_PREC) * f, input_precision=DOT_PREC)
        dko = tl.dot(dSMt, qo.to(dtype), tl.dot(v, do_, input_precision=DOT_PREC) * f, input_precision=DOT_PREC)
        if HAS_ROT:
            dth = tl.where(rot[None, :], dqo * qe - dqe * qo + dko * ke - dke * ko, 0.0)
            tot = tl.sum(dth, 0)
            tl.store(doff_ptr + ((b * NC + c) * H + h) * S + cidx, tot, mask=rot)
            dphi = tl.where(first[:, None], tot[None, :] - tl.cumsum(dth, 0) + dth, 0.0)
            d = tl.load(dt_ptr + sc + t * H, mask=valid & first, other=0.0)
            p = tl.load(ps_ptr + t0 * S + t[:, None] * S + cidx[None, :],
                        mask=(valid & first)[:, None] & rot[None, :], other=0.0)
            tl.store(ddt_ptr + ((pn * BATCH + b) * L + c * Q) * H + h + tq * H,
                     per_time(tl.sum(dphi * p, 1), Q, R), mask=c * Q + tq < L)
            acc_ps += dphi * d[:, None]
            dqe, dqo = rotate(dqe, dqo, cs, -sn)
            dke, dko = rotate(dke, dko, cs, -sn)
        if HAS_BIAS:
            bb = ((b * NC + c) * H + h) * R * N + tl.arange(0, R)[:, None] * N
            tl.store(dBb_ptr + bb + ecol[None, :], per_rank2(dke, Q, R, BN2), mask=(ecol < N)[None, :])
            tl.store(dBb_ptr + bb + ocol[None, :], per_rank2(dko, Q, R, BN2), mask=(ocol < N)[None, :])
            tl.store(dCb_ptr + bb + ecol[None, :], per_rank2(dqe, Q, R, BN2), mask=(ecol < N)[None, :])
            tl.store(dCb_ptr + bb + ocol[None, :], per_rank2(dqo, Q, R, BN2), mask=(ocol < N)[None, :])
        acc_qe += dqe
        acc_qo += dqo
        acc_ke += dke
        acc_ko += dko
    # (b, l, R, HB, n) partial sums over this block's heads
    ob = (t0 * R * HB + hb) * N
    row = rows[:, None] * (HB * N)
    mre = valid[:, None] & (ecol < N)[None, :]
    mro = valid[:, None] & (ocol < N)[None, :]
    tl.store(dB_ptr + ob + row + ecol[None, :], acc_ke, mask=mre)
    tl.store(dB_ptr + ob + row + ocol[None, :], acc_ko, mask=mro)
    tl.store(dC_ptr + ob + row + ecol[None, :], acc_qe, mask=mre)
    tl.store(dC_ptr + ob + row + ocol[None, :], acc_qo, mask=mro)
    if HAS_ROT:
        tl.store(dps_ptr + (t0 * HB + hb) * S + t[:, None] * (HB * S) + cidx[None, :], acc_ps,
                 mask=(valid & first)[:, None] & rot[None, :])
