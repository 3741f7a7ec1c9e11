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

from .triton_common import (chunk_cum, chunk_mask, chunk_rows, chunk_theta, load_pairs, load_v,
                            per_time2, rotate, row_scalar)


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
        cb = ((b * NC + c) * H + h) * P * N
        tl.store(hin_ptr + cb + ste, He.to(hin_ptr.dtype.element_ty), mask=sme)
        tl.store(hin_ptr + cb + sto, Ho.to(hin_ptr.dtype.element_ty), mask=smo)
        t, r, tau, valid, first = chunk_rows(c, L, Q, R)
        cum, cend = chunk_cum(adt_ptr, b, h, tau, valid, first, L, H)
        f = tl.exp(cend - cum) * row_scalar(w_ptr, b, h, tau, valid, L, H)
        ke, ko = load_pairs(B_ptr, Bb_ptr, b, g, h, r, tau, valid, cidx, L, G, N, R, HAS_BIAS)
        if HAS_ROT:
            th = chunk_theta(ps_ptr, dt_ptr, off_ptr, b, c, h, tau, valid, first, cidx, L, H, S, NC)
            ke, ko = rotate(ke, ko, tl.cos(th), tl.sin(th))
        v, _ = load_v(x_ptr, Wx_ptr, b, h, r, tau, valid, pidx, L, H, P, R, HAS_WX)
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
    t, r, tau, valid, first = chunk_rows(c, L, Q, R)
    pidx = tl.arange(0, BP)
    pm = pidx < P
    cum, cend = chunk_cum(adt_ptr, b, h, tau, valid, first, L, H)
    M, _ = chunk_mask(cum, row_scalar(w_ptr, b, h, tau, valid, L, H),
                      row_scalar(wd_ptr, b, h, tau, valid, L, H), t)
    v, _ = load_v(x_ptr, Wx_ptr, b, h, r, tau, valid, pidx, L, H, P, R, HAS_WX)
    cb = ((b * NC + c) * H + h) * P * N
    scores = tl.zeros((Q * R, Q * R), dtype=tl.float32)
    yoff = tl.zeros((Q * R, BP), dtype=tl.float32)
    for nb in range(0, tl.cdiv(N2, BN2)):
        cidx = nb * BN2 + tl.arange(0, BN2)
        ke, ko = load_pairs(B_ptr, Bb_ptr, b, g, h, r, tau, valid, cidx, L, G, N, R, HAS_BIAS)
        qe, qo = load_pairs(C_ptr, Cb_ptr, b, g, h, r, tau, valid, cidx, L, G, N, R, HAS_BIAS)
        if HAS_ROT:
            th = chunk_theta(ps_ptr, dt_ptr, off_ptr, b, c, h, tau, valid, first, cidx, L, H, S, NC)
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
        he = tl.load(hin_ptr + cb + pidx[:, None] * N + ecol[None, :], mask=pm[:, None] & (ecol < N)[None, :], other=0.0)
        ho = tl.load(hin_ptr + cb + pidx[:, None] * N + ocol[None, :], mask=pm[:, None] & (ocol < N)[None, :], other=0.0)
        yoff = tl.dot(qe, tl.trans(he.to(dtype)), yoff, input_precision=DOT_PREC)
        yoff = tl.dot(qo, tl.trans(ho.to(dtype)), yoff, input_precision=DOT_PREC)
    y = tl.dot((scores * M).to(dtype), v.to(dtype), yoff * tl.exp(cum)[:, None], input_precision=DOT_PREC)
    if HAS_D:
        y += tl.load(D_ptr + h) * v
    m = valid[:, None] & pm[None, :]
    if HAS_Z:
        zz = tl.load(z_ptr + ((b * L + tau) * H + h)[:, None] * P + pidx[None, :], mask=m, other=0.0).to(tl.float32)
        if HAS_WZ:
            zz *= tl.load(Wz_ptr + (h * R + r)[:, None] * P + pidx[None, :], mask=pm[None, :], other=0.0)
        y *= zz * tl.sigmoid(zz)
    if PER_RANK:
        tl.store(out_ptr + (((b * L + tau) * R + r) * H + h)[:, None] * P + pidx[None, :],
                 y.to(out_ptr.dtype.element_ty), mask=m)
    else:
        if HAS_WO:
            y *= tl.load(Wo_ptr + (h * R + r)[:, None] * P + pidx[None, :], mask=pm[None, :], other=0.0)
        y = per_time2(y, Q, R, BP)
        tq = c * Q + tl.arange(0, Q)
        tl.store(out_ptr + ((b * L + tq) * H + h)[:, None] * P + pidx[None, :],
                 y.to(out_ptr.dtype.element_ty), mask=(tq < L)[:, None] & pm[None, :])
