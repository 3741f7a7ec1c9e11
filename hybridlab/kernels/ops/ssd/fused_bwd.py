"""Triton backward kernels of the chunked SSD (four launches).

Notation per chunk c: X = Δ·x, cs = in-chunk cumsum of Δ·A, E = state entering the chunk,
dY = dout·silu(z), L_ts = exp(cs_t − cs_s) on the causal, same-segment part.

1. ``chunk_state_bwd``: dE_local = Σ_t exp(cs_t) dY_t ⊗ C_t  (what the chunk's outputs say about E).
2. ``state_pass_bwd``: reverse recurrence dE_c = dE_local_c + α_c dE_{c+1}; stores dE_{c+1} (the
   gradient of chunk c's own end state), dinitial = dE_0, and α_c (E_c · dE_{c+1}) for dcs.
3. ``chunk_bwd``: per (b, chunk, block of BT positions, group, slice of its heads), looping over the
   heads so dB and dC are summed over a group's heads in registers: dx, dz, dB, dC, dD, and the
   gradient w.r.t. X·x (for Δ) and w.r.t. cs per position.
4. ``dt_bwd``: per (b, h, chunk): reverse cumsum of dcs -> d(Δ·A), then dΔ, ddt, and partials of
   dA and ddt_bias.
"""
import triton
import triton.language as tl


@triton.jit
def chunk_state_bwd(
    dout_ptr, z_ptr, C_ptr, cs_ptr, seg_ptr, dloc_ptr,
    L, H, P, N, G,
    sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, sC_b, sC_l, sC_g,
    Lp, nchunks,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_SEQ: tl.constexpr, PREC: tl.constexpr,
):
    h = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    g = h // (H // G)
    t = c * Q + tl.arange(0, Q)
    valid = t < L
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    pm = valid[:, None] & (op[None, :] < P)
    dy = tl.load(dout_ptr + b * sdo_b + t[:, None] * sdo_l + h * sdo_h + op[None, :], mask=pm, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z_ptr + b * sz_b + t[:, None] * sz_l + h * sz_h + op[None, :], mask=pm, other=0.0).to(tl.float32)
        dy = dy * zz * tl.sigmoid(zz)
    w = tl.exp(tl.load(cs_ptr + (b * H + h) * Lp + t))
    if HAS_SEQ:
        seg_prev = tl.load(seg_ptr + b * Lp + c * Q - 1, mask=c > 0, other=0)
        w = tl.where(tl.load(seg_ptr + b * Lp + t) == seg_prev, w, 0.0)
    Ct = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + g * sC_g + on[None, :],
                 mask=valid[:, None] & (on[None, :] < N), other=0.0)
    dloc = tl.dot(tl.trans((dy * w[:, None]).to(Ct.dtype)), Ct, input_precision=PREC)   # (BP, BN)
    base = ((b * nchunks + c) * H + h) * P * N
    tl.store(dloc_ptr + base + op[:, None] * N + on[None, :], dloc, mask=(op[:, None] < P) & (on[None, :] < N))


@triton.jit
def state_pass_bwd(
    dloc_ptr, E_ptr, cs_ptr, seg_ptr, dfinal_ptr, dst_ptr, dinit_ptr, dlast_ptr,
    H, PN, Lp, nchunks,
    Q: tl.constexpr, BLOCK: tl.constexpr,
    HAS_DFINAL: tl.constexpr, HAS_DINIT: tl.constexpr, HAS_SEQ: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    nblk = tl.num_programs(1)
    b = bh // H
    h = bh % H
    o = blk * BLOCK + tl.arange(0, BLOCK)
    m = o < PN
    if HAS_DFINAL:
        gs = tl.load(dfinal_ptr + bh * PN + o, mask=m, other=0.0).to(tl.float32)
    else:
        gs = tl.zeros([BLOCK], dtype=tl.float32)
    for cc in range(nchunks):
        c = nchunks - 1 - cc
        base = ((b * nchunks + c) * H + h) * PN
        tl.store(dst_ptr + base + o, gs.to(dst_ptr.dtype.element_ty), mask=m)   # d(end state of chunk c)
        alpha = tl.exp(tl.load(cs_ptr + bh * Lp + c * Q + Q - 1))
        if HAS_SEQ:
            seg_end = tl.load(seg_ptr + b * Lp + c * Q + Q - 1)
            seg_prev = tl.load(seg_ptr + b * Lp + c * Q - 1, mask=c > 0, other=0)
            alpha = tl.where(seg_end == seg_prev, alpha, 0.0)
        Ec = tl.load(E_ptr + base + o, mask=m, other=0.0).to(tl.float32)
        # d cs_last from α = exp(cs_last): α · <E_c, dE_{c+1}>, one partial per block
        tl.store(dlast_ptr + (bh * nchunks + c) * nblk + blk, alpha * tl.sum(Ec * gs, axis=0))
        gs = tl.load(dloc_ptr + base + o, mask=m, other=0.0) + alpha * gs
    if HAS_DINIT:
        tl.store(dinit_ptr + bh * PN + o, gs, mask=m)


@triton.jit
def chunk_bwd(
    x_ptr, z_ptr, dout_ptr, y_ptr, B_ptr, C_ptr, D_ptr, Dpos_ptr, delta_ptr, cs_ptr, seg_ptr, E_ptr,
    dst_ptr, dx_ptr, dz_ptr, dB_ptr, dC_ptr, ddx_ptr, dcs_ptr, dlast_ptr, dD_ptr, dDpos_ptr,
    L, H, P, N, G,
    sx_b, sx_l, sx_h, sz_b, sz_l, sz_h, sdo_b, sdo_l, sdo_h, sy_b, sy_l, sy_h,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g, sdx_b, sdx_l, sdx_h, sdz_b, sdz_l, sdz_h,
    sdB_s, sdB_b, sdB_l, sdB_g,
    Lp, nchunks,
    Q: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, HPP: tl.constexpr,
    HAS_D: tl.constexpr, D_HDIM: tl.constexpr, HAS_DPOS: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_STATE: tl.constexpr, PREC: tl.constexpr,
):
    hs = tl.program_id(0)
    cb = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    NB: tl.constexpr = Q // BT
    c = cb // NB
    k = cb % NB
    hpg = H // G
    nsplit = hpg // HPP
    g = hs // nsplit
    split = hs % nsplit
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    tk = c * Q + k * BT + tl.arange(0, BT)
    vk = tk < L
    nmask_k = vk[:, None] & (on[None, :] < N)
    pmask_k = vk[:, None] & (op[None, :] < P)
    Bk = tl.load(B_ptr + b * sB_b + tk[:, None] * sB_l + g * sB_g + on[None, :], mask=nmask_k, other=0.0)
    Ck = tl.load(C_ptr + b * sC_b + tk[:, None] * sC_l + g * sC_g + on[None, :], mask=nmask_k, other=0.0)
    DT = Bk.dtype
    if HAS_SEQ:
        seg_k = tl.load(seg_ptr + b * Lp + tk)
        seg_end = tl.load(seg_ptr + b * Lp + c * Q + Q - 1)
        seg_prev = tl.load(seg_ptr + b * Lp + c * Q - 1, mask=c > 0, other=0)
    dBk = tl.zeros([BT, BN], dtype=tl.float32)
    dCk = tl.zeros([BT, BN], dtype=tl.float32)
    smask = (op[:, None] < P) & (on[None, :] < N)

    for hh in range(HPP):
        h = g * hpg + split * HPP + hh
        row = (b * H + h) * Lp
        cs_k = tl.load(cs_ptr + row + tk)
        dl_k = tl.load(delta_ptr + row + tk)
        cs_last = tl.load(cs_ptr + row + c * Q + Q - 1)
        xk = tl.load(x_ptr + b * sx_b + tk[:, None] * sx_l + h * sx_h + op[None, :], mask=pmask_k, other=0.0).to(tl.float32)
        XkD = (xk * dl_k[:, None]).to(DT)
        dYk = tl.load(dout_ptr + b * sdo_b + tk[:, None] * sdo_l + h * sdo_h + op[None, :], mask=pmask_k, other=0.0).to(tl.float32)
        if HAS_Z:
            zk = tl.load(z_ptr + b * sz_b + tk[:, None] * sz_l + h * sz_h + op[None, :], mask=pmask_k, other=0.0).to(tl.float32)
            yk = tl.load(y_ptr + b * sy_b + tk[:, None] * sy_l + h * sy_h + op[None, :], mask=pmask_k, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zk)
            dz = dYk * yk * sg * (1.0 + zk * (1.0 - sg))
            tl.store(dz_ptr + b * sdz_b + tk[:, None] * sdz_l + h * sdz_h + op[None, :],
                     dz.to(dz_ptr.dtype.element_ty), mask=pmask_k)
            dYk = dYk * zk * sg
        dYkD = dYk.to(DT)
        dXX = tl.zeros([BT, BP], dtype=tl.float32)
        dcs = tl.zeros([BT], dtype=tl.float32)
        sbase = ((b * nchunks + c) * H + h) * P * N

        # the entering state's read-out y += exp(cs) C Eᵀ (this block as queries)
        if HAS_STATE:
            E = tl.load(E_ptr + sbase + op[:, None] * N + on[None, :], mask=smask, other=0.0)
            w = tl.exp(cs_k)
            if HAS_SEQ:
                w = tl.where(seg_k == seg_prev, w, 0.0)
            dYE = tl.dot(dYkD, E.to(DT), input_precision=PREC)                 # (BT, BN)
            dCk += w[:, None] * dYE
            dcs += w * tl.sum(Ck.to(tl.float32) * dYE, axis=1)

        # this block's part of the chunk end state (this block as keys)
        dS = tl.load(dst_ptr + sbase + op[:, None] * N + on[None, :], mask=smask, other=0.0).to(DT)
        v = tl.exp(cs_last - cs_k)
        if HAS_SEQ:
            v = tl.where(seg_k == seg_end, v, 0.0)
        Bd = tl.dot(Bk, tl.trans(dS), input_precision=PREC)                      # (BT, BP)
        dXX += v[:, None] * Bd
        dBk += v[:, None] * tl.dot(XkD, dS, input_precision=PREC)
        r = v * tl.sum(XkD.to(tl.float32) * Bd, axis=1)
        dcs -= r
        dlast = tl.sum(r, axis=0)

        # inside the chunk, this block as queries: dC, and the row sums for dcs
        for j in range(0, k + 1):
            tj = c * Q + j * BT + tl.arange(0, BT)
            vj = tj < L
            Bj = tl.load(B_ptr + b * sB_b + tj[:, None] * sB_l + g * sB_g + on[None, :],
                         mask=vj[:, None] & (on[None, :] < N), other=0.0)
            xj = tl.load(x_ptr + b * sx_b + tj[:, None] * sx_l + h * sx_h + op[None, :],
                         mask=vj[:, None] & (op[None, :] < P), other=0.0).to(tl.float32)
            Xj = (xj * tl.load(delta_ptr + row + tj)[:, None]).to(DT)
            keep = tk[:, None] >= tj[None, :]
            if HAS_SEQ:
                keep &= seg_k[:, None] == tl.load(seg_ptr + b * Lp + tj)[None, :]
            Lm = tl.where(keep, tl.exp(cs_k[:, None] - tl.load(cs_ptr + row + tj)[None, :]), 0.0)
            CB = tl.dot(Ck, tl.trans(Bj), input_precision=PREC)
            dGL = tl.dot(dYkD, tl.trans(Xj), input_precision=PREC) * Lm
            dCk += tl.dot(dGL.to(DT), Bj, input_precision=PREC)
            dcs += tl.sum(dGL * CB, axis=1)

        # inside the chunk, this block as keys: dX, dB, and the column sums for dcs
        for i in range(k, NB):
            ti = c * Q + i * BT + tl.arange(0, BT)
            vi = ti < L
            pmask_i = vi[:, None] & (op[None, :] < P)
            Ci = tl.load(C_ptr + b * sC_b + ti[:, None] * sC_l + g * sC_g + on[None, :],
                         mask=vi[:, None] & (on[None, :] < N), other=0.0)
            dYi = tl.load(dout_ptr + b * sdo_b + ti[:, None] * sdo_l + h * sdo_h + op[None, :],
                          mask=pmask_i, other=0.0).to(tl.float32)
            if HAS_Z:
                zi = tl.load(z_ptr + b * sz_b + ti[:, None] * sz_l + h * sz_h + op[None, :],
                             mask=pmask_i, other=0.0).to(tl.float32)
                dYi = dYi * zi * tl.sigmoid(zi)
            dYiD = dYi.to(DT)
            keep = ti[:, None] >= tk[None, :]
            if HAS_SEQ:
                keep &= tl.load(seg_ptr + b * Lp + ti)[:, None] == seg_k[None, :]
            Lm = tl.where(keep, tl.exp(tl.load(cs_ptr + row + ti)[:, None] - cs_k[None, :]), 0.0)
            CB = tl.dot(Ci, tl.trans(Bk), input_precision=PREC)
            dXX += tl.dot(tl.trans((CB * Lm).to(DT)), dYiD, input_precision=PREC)
            dGL = tl.dot(dYiD, tl.trans(XkD), input_precision=PREC) * Lm
            dBk += tl.dot(tl.trans(dGL.to(DT)), Ci, input_precision=PREC)
            dcs -= tl.sum(dGL * CB, axis=0)

        dx = dl_k[:, None] * dXX
        if HAS_D:
            if D_HDIM:
                Dv = tl.load(D_ptr + h * P + op, mask=op < P, other=0.0).to(tl.float32)
                dx += Dv[None, :] * dYk
                tl.store(dD_ptr + ((b * nchunks * NB + cb) * H + h) * P + op, tl.sum(dYk * xk, axis=0), mask=op < P)
            else:
                dx += tl.load(D_ptr + h).to(tl.float32) * dYk
                tl.store(dD_ptr + (b * nchunks * NB + cb) * H + h, tl.sum(tl.sum(dYk * xk, axis=1), axis=0))
        if HAS_DPOS:    # per-position skip weight (b, h, Lp)
            dx += tl.load(Dpos_ptr + row + tk)[:, None] * dYk
            tl.store(dDpos_ptr + row + tk, tl.sum(dYk * xk, axis=1))
        tl.store(dx_ptr + b * sdx_b + tk[:, None] * sdx_l + h * sdx_h + op[None, :],
                 dx.to(dx_ptr.dtype.element_ty), mask=pmask_k)
        tl.store(ddx_ptr + row + tk, tl.sum(xk * dXX, axis=1))     # d loss / dΔ through X = Δ·x
        tl.store(dcs_ptr + row + tk, dcs)
        tl.store(dlast_ptr + ((b * H + h) * nchunks + c) * NB + k, dlast)

    doff = split * sdB_s + b * sdB_b + tk[:, None] * sdB_l + g * sdB_g + on[None, :]
    tl.store(dB_ptr + doff, dBk, mask=nmask_k)
    tl.store(dC_ptr + doff, dCk, mask=nmask_k)


@triton.jit
def dt_bwd(
    dt_ptr, dt_bias_ptr, A_ptr, delta_ptr, dcs_ptr, ddx_ptr, dlast_ptr, dlast2_ptr,
    ddt_ptr, dA_ptr, dbias_ptr, dld_ptr,
    L, H, sdt_b, sdt_l, sdt_h, sddt_b, sddt_l, sddt_h, dt_lo, dt_hi, Lp, nchunks, NBLK2,
    Q: tl.constexpr, NB: tl.constexpr, BLK2: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, HAS_LD: tl.constexpr,
):
    h = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    oq = tl.arange(0, Q)
    t = c * Q + oq
    valid = t < L
    row = (b * H + h) * Lp
    dcs = tl.load(dcs_ptr + row + t)
    # cs_last feeds every chunk-end decay: add its gradient to the last position
    cidx = (b * H + h) * nchunks + c
    dlast = tl.sum(tl.load(dlast_ptr + cidx * NB + tl.arange(0, NB)), axis=0)
    o2 = tl.arange(0, BLK2)
    dlast += tl.sum(tl.load(dlast2_ptr + cidx * NBLK2 + o2, mask=o2 < NBLK2, other=0.0), axis=0)
    dcs += tl.where(oq == Q - 1, dlast, 0.0)
    da = tl.sum(dcs, axis=0) - tl.cumsum(dcs, axis=0) + dcs         # reverse cumsum: cs_t = Σ_{s<=t} a_s
    delta = tl.load(delta_ptr + row + t)
    if HAS_LD:      # decoupled log decay: its gradient is da itself; Δ only scales the input
        tl.store(dld_ptr + b * sddt_b + t * sddt_l + h * sddt_h, da, mask=valid)
        dd = tl.load(ddx_ptr + row + t)
    else:
        dd = da * tl.load(A_ptr + h).to(tl.float32) + tl.load(ddx_ptr + row + t)
    raw = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=valid, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(dt_bias_ptr + h).to(tl.float32)
    if HAS_LIMIT:
        pre = tl.where(raw > 20.0, raw, tl.log(1.0 + tl.exp(tl.minimum(raw, 20.0)))) if SOFTPLUS else raw
        dd = tl.where((pre >= dt_lo) & (pre <= dt_hi), dd, 0.0)
    if SOFTPLUS:
        dd = tl.where(raw > 20.0, dd, dd * tl.sigmoid(raw))
    dd = tl.where(valid, dd, 0.0)
    tl.store(ddt_ptr + b * sddt_b + t * sddt_l + h * sddt_h, dd.to(ddt_ptr.dtype.element_ty), mask=valid)
    tl.store(dA_ptr + cidx, tl.sum(da * delta, axis=0))
    tl.store(dbias_ptr + cidx, tl.sum(dd, axis=0))

