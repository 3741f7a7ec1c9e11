"""Mamba-3 forward in two Triton kernels (the math is reference.py's chunked form).

1. ``fwd_states``: one program per (pair block, p block, batch*head) walks the chunks in order,
   keeping the folded state H' (p x pairs, even/odd halves) in registers; it stores the state that
   enters every chunk and the final state. Chunk contribution: sum_s exp(cum_end - cum_s) w_s v_s k_s^T.
2. ``fwd_out``: one program per (chunk, batch*head), all chunks in parallel:
   y = (QK^T o M) V + exp(cum) * Q H_in^T + D v, gated by silu(z W_z), summed over ranks with W_o.
Angles: the host passes each chunk's rotary offset (global frame), so both kernels rotate with
offset + the cumsum inside the chunk.
"""
import triton
import triton.language as tl

from .triton_common import (chunk_cum, chunk_mask, chunk_rows, chunk_theta, load_pairs, load_rank_w,
                            load_time_tile, load_v, per_time2, rotate, row_scalar)


@triton.jit
def fwd_states_kernel(x_ptr, B_ptr, Bb_ptr, dt_ptr, ps_ptr, off_ptr, adt_ptr, w_ptr, Wx_ptr,
                      h0_ptr, hin_ptr, hfin_ptr,
                      L, H, G, P, N, S, NC,
                      Q: tl.constexpr, R: tl.constexpr, BP: tl.constexpr, BN2: tl.constexpr,
                      HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr, HAS_WX: tl.constexpr,
                      HAS_H0: tl.constexpr, DOT_PREC: tl.constexpr):
    pn = tl.program_id(0)
    pp = tl.program_id(1)
    pbh = tl.program_id(2)
    b = (pbh // H).to(tl.int64)
    h = pbh % H
    g = h // (H // G)
    dtype = x_ptr.dtype.element_ty
    pidx = pp * BP + tl.arange(0, BP)
    cidx = pn * BN2 + tl.arange(0, BN2)
    ecol = 2 * cidx
    ocol = ecol + 1
    sme = (pidx < P)[:, None] & (ecol < N)[None, :]
    smo = (pidx < P)[:, None] & (ocol < N)[None, :]
    ste = pidx[:, None] * N + ecol[None, :]
    sto = pidx[:, None] * N + ocol[None, :]
    hb = (b * H + h) * P * N
    if HAS_H0:
        He = tl.load(h0_ptr + hb + ste, mask=sme, other=0.0)
        Ho = tl.load(h0_ptr + hb + sto, mask=smo, other=0.0)
    else:
        He = tl.zeros((BP, BN2), dtype=tl.float32)
        Ho = tl.zeros((BP, BN2), dtype=tl.float32)
    for c in range(NC):
        cb = hin_ptr + ((b * NC + c) * H + h) * P * N
        tl.store(cb + ste, He.to(hin_ptr.dtype.element_ty), mask=sme)
        tl.store(cb + sto, Ho.to(hin_ptr.dtype.element_ty), mask=smo)
        t0 = b * L + c * Q
        rows, t, r, valid, first = chunk_rows(c, L, Q, R)
        cum, cend = chunk_cum(adt_ptr + t0 * H + h, t, valid, first, H)
        f = tl.exp(cend - cum) * row_scalar(w_ptr + t0 * H + h, t, valid, H)
        ke, ko = load_pairs(B_ptr + t0 * R * G * N + g * N, Bb_ptr + h * R * N, rows, r, valid, cidx,
                            G * N, N, HAS_BIAS)
        if HAS_ROT:
            th = chunk_theta(ps_ptr + t0 * S, dt_ptr + t0 * H + h, off_ptr + ((b * NC + c) * H + h) * S,
                             t, valid, first, cidx, H, S)
            ke, ko = rotate(ke, ko, tl.cos(th), tl.sin(th))
        v, _ = load_v(x_ptr + (t0 * H + h) * P, Wx_ptr + h * R * P, t, r, valid, pidx, H * P, P, HAS_WX)
        vf = tl.trans((v * f[:, None]).to(dtype))
        decay = tl.exp(cend)
        He = tl.dot(vf, ke.to(dtype), He * decay, input_precision=DOT_PREC)
        Ho = tl.dot(vf, ko.to(dtype), Ho * decay, input_precision=DOT_PREC)
    tl.store(hfin_ptr + hb + ste, He, mask=sme)
    tl.store(hfin_ptr + hb + sto, Ho, mask=smo)


@triton.jit
def fwd_out_kernel(x_ptr, B_ptr, C_ptr, Bb_ptr, Cb_ptr, dt_ptr, ps_ptr, off_ptr, adt_ptr, w_ptr,
                   wd_ptr, D_ptr, z_ptr, Wx_ptr, Wz_ptr, Wo_ptr, hin_ptr, out_ptr,
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
    hin = hin_ptr + ((b * NC + c) * H + h) * P * N
    Bbase = B_ptr + t0 * R * G * N + g * N
    Cbase = C_ptr + t0 * R * G * N + g * N
    scores = tl.zeros((Q * R, Q * R), dtype=tl.float32)
    yoff = tl.zeros((Q * R, BP), dtype=tl.float32)
    for nb in range(0, tl.cdiv(N2, BN2)):
        cidx = nb * BN2 + tl.arange(0, BN2)
        ke, ko = load_pairs(Bbase, Bb_ptr + h * R * N, rows, r, valid, cidx, G * N, N, HAS_BIAS)
        qe, qo = load_pairs(Cbase, Cb_ptr + h * R * N, rows, r, valid, cidx, G * N, N, HAS_BIAS)
        if HAS_ROT:
            th = chunk_theta(ps_ptr + t0 * S, dt_ptr + t0 * H + h, off_ptr + ((b * NC + c) * H + h) * S,
                             t, valid, first, cidx, H, S)
            cs = tl.cos(th)
            sn = tl.sin(th)
            ke, ko = rotate(ke, ko, cs, sn)
            qe, qo = rotate(qe, qo, cs, sn)
        qe = qe.to(dtype)
        qo = qo.to(dtype)
        scores = tl.dot(qe, tl.trans(ke.to(dtype)), scores, input_precision=DOT_PREC)
        scores = tl.dot(qo, tl.trans(ko.to(dtype)), scores, input_precision=DOT_PREC)
        ecol = 2 * cidx
        ocol = ecol + 1
        he = tl.load(hin + pidx[:, None] * N + ecol[None, :], mask=pm[:, None] & (ecol < N)[None, :], other=0.0)
        ho = tl.load(hin + pidx[:, None] * N + ocol[None, :], mask=pm[:, None] & (ocol < N)[None, :], other=0.0)
        yoff = tl.dot(qe, tl.trans(he.to(dtype)), yoff, input_precision=DOT_PREC)
        yoff = tl.dot(qo, tl.trans(ho.to(dtype)), yoff, input_precision=DOT_PREC)
    # the T x T weights and v only after the loop: shorter live ranges, fewer registers
    cum, cend = chunk_cum(adt_ptr + t0 * H + h, t, valid, first, H)
    M, _ = chunk_mask(cum, row_scalar(w_ptr + t0 * H + h, t, valid, H),
                      row_scalar(wd_ptr + t0 * H + h, t, valid, H), t)
    v, _ = load_v(x_ptr + (t0 * H + h) * P, Wx_ptr + h * R * P, t, r, valid, pidx, HP, P, HAS_WX)
    y = tl.dot((scores * M).to(dtype), v.to(dtype), yoff * tl.exp(cum)[:, None], input_precision=DOT_PREC)
    if HAS_D:
        y += tl.load(D_ptr + h) * v
    if HAS_Z:
        zz = load_time_tile(z_ptr + (t0 * H + h) * P, t, valid, pidx, HP, P)
        if HAS_WZ:
            zz *= load_rank_w(Wz_ptr + h * R * P, r, pidx, P)
        y *= zz * tl.sigmoid(zz)
    if PER_RANK:
        ob = out_ptr + (t0 * R * H + h) * P
        tl.store(ob + rows[:, None] * HP + pidx[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=valid[:, None] & pm[None, :])
    else:
        if HAS_WO:
            y *= load_rank_w(Wo_ptr + h * R * P, r, pidx, P)
        y = per_time2(y, Q, R, BP)
        tq = tl.arange(0, Q)
        tl.store(out_ptr + (t0 * H + h) * P + tq[:, None] * HP + pidx[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=(c * Q + tq < L)[:, None] & pm[None, :])
