"""Triton backward kernels of the chunked SSD (five launches, six with chunk_cb).

Notation per chunk c: X = Δ·x, cs = in-chunk cumsum of Δ·A, E = state entering the chunk,
dY = dout·silu(z), L_ts = exp(cs_t − cs_s) on the causal, same-segment part, CB = C Bᵀ.

0. ``chunk_cb``, only when a group has several heads: CB per (b, chunk, group), fp32, the blocks
   on and below the diagonal. It does not depend on the head, so every head of the group loads
   its tiles in chunk_bwd_dx instead of recomputing an N-deep dot (HAS_CB; off, the tiles are
   computed there).
1. ``chunk_state_bwd``: dE_local = Σ_t exp(cs_t) dY_t ⊗ C_t  (what the chunk's outputs say about E).
2. ``state_pass_bwd``: reverse recurrence dE_c = dE_local_c + α_c dE_{c+1}; stores dE_{c+1} (the
   gradient of chunk c's own end state), dinitial = dE_0, and α_c (E_c · dE_{c+1}) for dcs.
3. ``chunk_bwd_dx``: per (b, h, chunk, block of BT key rows): dx, dz, dD, and d cs: the block's
   column sums and, per key block, the row sums of its query blocks (summed in dt_bwd).
4. ``chunk_bwd_dbc``: per (b, group, chunk, block of BT rows, side): dC (side 0) or dB (side 1).
   The intra-chunk part sums the per-head (dY Xᵀ) ∘ L over the group's heads first, so the
   N-wide dot with B or C runs once per group, not once per head.
5. ``dt_bwd``: per (b, h, chunk): reverse cumsum of dcs -> d(Δ·A), then dΔ, ddt, and partials of
   dA and ddt_bias.
"""
import triton
import triton.language as tl


@triton.jit
def chunk_cb(
    B_ptr, C_ptr, cb_ptr,
    L, G, N,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    nchunks,
    Q: tl.constexpr, BT: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr,
):
    ij = tl.program_id(0)
    c = tl.program_id(1)
    bg = tl.program_id(2)
    b = (bg // G).to(tl.int64)
    g = bg % G
    NB: tl.constexpr = Q // BT
    i = ij // NB
    j = ij % NB
    if j <= i:      # blocks above the diagonal are never read (causal)
        on = tl.arange(0, BN)
        ot = tl.arange(0, BT)
        ti = c * Q + i * BT + ot
        tj = c * Q + j * BT + ot
        Ci = tl.load(C_ptr + b * sC_b + ti[:, None] * sC_l + g * sC_g + on[None, :],
                     mask=(ti[:, None] < L) & (on[None, :] < N), other=0.0)
        Bj = tl.load(B_ptr + b * sB_b + tj[:, None] * sB_l + g * sB_g + on[None, :],
                     mask=(tj[:, None] < L) & (on[None, :] < N), other=0.0)
        cb = tl.dot(Ci, tl.trans(Bj), input_precision=PREC)
        base = ((b * nchunks + c) * G + g) * Q * Q
        tl.store(cb_ptr + base + (i * BT + ot)[:, None] * Q + (j * BT + ot)[None, :], cb)


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
def _gated_dy(dout_ptr, z_ptr, b, t, h, op, mask, sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h,
              HAS_Z: tl.constexpr):
    """dY = dout · silu(z) for rows t of head h, fp32 (the gradient reaching the pre-gate y)."""
    dy = tl.load(dout_ptr + b * sdo_b + t[:, None] * sdo_l + h * sdo_h + op[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z_ptr + b * sz_b + t[:, None] * sz_l + h * sz_h + op[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = dy * zz * tl.sigmoid(zz)
    return dy


@triton.jit
def _decay(cs_ptr, seg_ptr, row, b, Lp, tq, tk, HAS_SEQ: tl.constexpr):
    """L[t, s] = exp(cs_t − cs_s) for query rows tq, key rows tk: causal, same segment, else 0."""
    keep = tq[:, None] >= tk[None, :]
    if HAS_SEQ:
        keep &= tl.load(seg_ptr + b * Lp + tq)[:, None] == tl.load(seg_ptr + b * Lp + tk)[None, :]
    return tl.where(keep, tl.exp(tl.load(cs_ptr + row + tq)[:, None] - tl.load(cs_ptr + row + tk)[None, :]), 0.0)


@triton.jit
def _xdelta(x_ptr, delta_ptr, b, t, h, row, op, mask, sx_b, sx_l, sx_h, DT: tl.constexpr):
    """X = Δ·x for rows t of head h, in the dot dtype."""
    xx = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :], mask=mask, other=0.0).to(tl.float32)
    return (xx * tl.load(delta_ptr + row + t)[:, None]).to(DT)


@triton.jit
def chunk_bwd_dx(
    x_ptr, z_ptr, dout_ptr, y_ptr, B_ptr, C_ptr, cb_ptr, D_ptr, Dpos_ptr, delta_ptr, cs_ptr, seg_ptr,
    dst_ptr, dx_ptr, dz_ptr, ddx_ptr, dcs_ptr, rows_ptr, dlast_ptr, dD_ptr, dDpos_ptr,
    L, H, P, N, G,
    sx_b, sx_l, sx_h, sz_b, sz_l, sz_h, sdo_b, sdo_l, sdo_h, sy_b, sy_l, sy_h,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g, sdx_b, sdx_l, sdx_h, sdz_b, sdz_l, sdz_h,
    Lp, nchunks,
    Q: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, D_HDIM: tl.constexpr, HAS_DPOS: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_CB: tl.constexpr, PREC: tl.constexpr,
):
    h = tl.program_id(0)
    cb = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    NB: tl.constexpr = Q // BT
    c = cb // NB
    k = cb % NB
    g = h // (H // G)
    row = (b * H + h) * Lp
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    ot = tl.arange(0, BT)
    tk = c * Q + k * BT + ot
    vk = tk < L
    pmask_k = vk[:, None] & (op[None, :] < P)
    DT = B_ptr.dtype.element_ty
    cs_k = tl.load(cs_ptr + row + tk)
    dl_k = tl.load(delta_ptr + row + tk)
    XkD = _xdelta(x_ptr, delta_ptr, b, tk, h, row, op, pmask_k, sx_b, sx_l, sx_h, DT)
    if HAS_Z:
        dout_k = tl.load(dout_ptr + b * sdo_b + tk[:, None] * sdo_l + h * sdo_h + op[None, :], mask=pmask_k, other=0.0).to(tl.float32)
        zk = tl.load(z_ptr + b * sz_b + tk[:, None] * sz_l + h * sz_h + op[None, :], mask=pmask_k, other=0.0).to(tl.float32)
        yk = tl.load(y_ptr + b * sy_b + tk[:, None] * sy_l + h * sy_h + op[None, :], mask=pmask_k, other=0.0).to(tl.float32)
        sg = tl.sigmoid(zk)
        tl.store(dz_ptr + b * sdz_b + tk[:, None] * sdz_l + h * sdz_h + op[None, :],
                 (dout_k * yk * sg * (1.0 + zk * (1.0 - sg))).to(dz_ptr.dtype.element_ty), mask=pmask_k)

    # this block's part of the chunk end state: dX += v (B dSᵀ), and its decay's gradient
    Bk = tl.load(B_ptr + b * sB_b + tk[:, None] * sB_l + g * sB_g + on[None, :],
                 mask=vk[:, None] & (on[None, :] < N), other=0.0)
    dS = tl.load(dst_ptr + ((b * nchunks + c) * H + h) * P * N + op[:, None] * N + on[None, :],
                 mask=(op[:, None] < P) & (on[None, :] < N), other=0.0).to(DT)
    v = tl.exp(tl.load(cs_ptr + row + c * Q + Q - 1) - cs_k)
    if HAS_SEQ:
        v = tl.where(tl.load(seg_ptr + b * Lp + tk) == tl.load(seg_ptr + b * Lp + c * Q + Q - 1), v, 0.0)
    Bd = tl.dot(Bk, tl.trans(dS), input_precision=PREC)                      # (BT, BP)
    dXX = v[:, None] * Bd
    r = v * tl.sum(XkD.to(tl.float32) * Bd, axis=1)
    dcs = -r
    tl.store(dlast_ptr + ((b * H + h) * nchunks + c) * NB + k, tl.sum(r, axis=0))

    # inside the chunk, this block as keys s against query blocks i >= k:
    # dX_s += Σ_t (CB ∘ L)[t, s] dY_t, and G = (dY Xᵀ) ∘ CB ∘ L gives d cs: row sums (+, for the
    # queries: stored per key block, summed in dt_bwd) and column sums (−, for this block)
    rows_k = rows_ptr + ((b * H + h) * NB + k) * Lp
    for i in range(k, NB):
        ti = c * Q + i * BT + ot
        dYi = _gated_dy(dout_ptr, z_ptr, b, ti, h, op, (ti[:, None] < L) & (op[None, :] < P),
                        sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, HAS_Z).to(DT)
        if HAS_CB:
            CBt = tl.load(cb_ptr + ((b * nchunks + c) * G + g) * Q * Q + (i * BT + ot)[:, None] * Q + (k * BT + ot)[None, :])
        else:       # one head per group: computed here (see chunk_cb)
            Ci = tl.load(C_ptr + b * sC_b + ti[:, None] * sC_l + g * sC_g + on[None, :],
                         mask=(ti[:, None] < L) & (on[None, :] < N), other=0.0)
            CBt = tl.dot(Ci, tl.trans(Bk), input_precision=PREC)
        S = CBt * _decay(cs_ptr, seg_ptr, row, b, Lp, ti, tk, HAS_SEQ)
        dXX += tl.dot(tl.trans(S.to(DT)), dYi, input_precision=PREC)
        Gm = tl.dot(dYi, tl.trans(XkD), input_precision=PREC) * S
        dcs -= tl.sum(Gm, axis=0)
        tl.store(rows_k + ti, tl.sum(Gm, axis=1))

    # x and dY of this block again (cache hits), rather than live in registers through the loop
    xk = tl.load(x_ptr + b * sx_b + tk[:, None] * sx_l + h * sx_h + op[None, :], mask=pmask_k, other=0.0).to(tl.float32)
    dx = dl_k[:, None] * dXX
    if HAS_D or HAS_DPOS:
        dYk = _gated_dy(dout_ptr, z_ptr, b, tk, h, op, pmask_k, sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, HAS_Z)
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


@triton.jit
def chunk_bwd_dbc(
    x_ptr, z_ptr, dout_ptr, B_ptr, C_ptr, delta_ptr, cs_ptr, seg_ptr, E_ptr, dst_ptr,
    dB_ptr, dC_ptr, dcs2_ptr,
    L, H, P, N, G,
    sx_b, sx_l, sx_h, sz_b, sz_l, sz_h, sdo_b, sdo_l, sdo_h,
    sB_b, sB_l, sB_g, sC_b, sC_l, sC_g, sdB_s, sdB_b, sdB_l, sdB_g,
    Lp, nchunks,
    Q: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, HPP: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_SEQ: tl.constexpr, HAS_STATE: tl.constexpr, PREC: tl.constexpr,
):
    pid = tl.program_id(0)          # (group, head slice, side): side 0 gives dC, side 1 dB
    cb = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    side = pid % 2
    hs = pid // 2
    NB: tl.constexpr = Q // BT
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
    tk = c * Q + k * BT + ot
    vk = tk < L
    nmask_k = vk[:, None] & (on[None, :] < N)
    pmask_k = vk[:, None] & (op[None, :] < P)
    smask = (op[:, None] < P) & (on[None, :] < N)
    DT = B_ptr.dtype.element_ty
    acc = tl.zeros([BT, BN], dtype=tl.float32)
    if side == 0:
        # dC_t = Σ_h exp(cs_t) dY_t E_hᵀ (entering state) + Σ_s M[t, s] B_s, with
        # M = Σ_h (dY Xᵀ) ∘ L_h summed over the group's heads before the N-wide dot
        if HAS_STATE:
            Ck = tl.load(C_ptr + b * sC_b + tk[:, None] * sC_l + g * sC_g + on[None, :], mask=nmask_k, other=0.0)
            if HAS_SEQ:
                seg_prev = tl.load(seg_ptr + b * Lp + c * Q - 1, mask=c > 0, other=0)
            for hh in range(HPP):
                h = h0 + hh
                row = (b * H + h) * Lp
                dYk = _gated_dy(dout_ptr, z_ptr, b, tk, h, op, pmask_k, sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, HAS_Z)
                E = tl.load(E_ptr + ((b * nchunks + c) * H + h) * P * N + op[:, None] * N + on[None, :],
                            mask=smask, other=0.0)
                w = tl.exp(tl.load(cs_ptr + row + tk))
                if HAS_SEQ:
                    w = tl.where(tl.load(seg_ptr + b * Lp + tk) == seg_prev, w, 0.0)
                dYE = tl.dot(dYk.to(DT), E.to(DT), input_precision=PREC)          # (BT, BN)
                acc += w[:, None] * dYE
                tl.store(dcs2_ptr + row + tk, w * tl.sum(Ck.to(tl.float32) * dYE, axis=1))
        for j in range(0, k + 1):
            tj = c * Q + j * BT + ot
            vj = tj < L
            M = tl.zeros([BT, BT], dtype=tl.float32)
            for hh in range(HPP):
                h = h0 + hh
                row = (b * H + h) * Lp
                dYk = _gated_dy(dout_ptr, z_ptr, b, tk, h, op, pmask_k, sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, HAS_Z)
                Xj = _xdelta(x_ptr, delta_ptr, b, tj, h, row, op, vj[:, None] & (op[None, :] < P), sx_b, sx_l, sx_h, DT)
                M += tl.dot(dYk.to(DT), tl.trans(Xj), input_precision=PREC) * _decay(cs_ptr, seg_ptr, row, b, Lp, tk, tj, HAS_SEQ)
            Bj = tl.load(B_ptr + b * sB_b + tj[:, None] * sB_l + g * sB_g + on[None, :],
                         mask=vj[:, None] & (on[None, :] < N), other=0.0)
            acc += tl.dot(M.to(DT), Bj, input_precision=PREC)
        tl.store(dC_ptr + split * sdB_s + b * sdB_b + tk[:, None] * sdB_l + g * sdB_g + on[None, :], acc, mask=nmask_k)
    else:
        # dB_s = Σ_h v_s X_s dS_h (chunk end state) + Σ_t M[t, s] C_t
        if HAS_SEQ:
            seg_end = tl.load(seg_ptr + b * Lp + c * Q + Q - 1)
        for hh in range(HPP):
            h = h0 + hh
            row = (b * H + h) * Lp
            Xk = _xdelta(x_ptr, delta_ptr, b, tk, h, row, op, pmask_k, sx_b, sx_l, sx_h, DT)
            dS = tl.load(dst_ptr + ((b * nchunks + c) * H + h) * P * N + op[:, None] * N + on[None, :],
                         mask=smask, other=0.0).to(DT)
            v = tl.exp(tl.load(cs_ptr + row + c * Q + Q - 1) - tl.load(cs_ptr + row + tk))
            if HAS_SEQ:
                v = tl.where(tl.load(seg_ptr + b * Lp + tk) == seg_end, v, 0.0)
            acc += v[:, None] * tl.dot(Xk, dS, input_precision=PREC)
        for i in range(k, NB):
            ti = c * Q + i * BT + ot
            vi = ti < L
            M = tl.zeros([BT, BT], dtype=tl.float32)
            for hh in range(HPP):
                h = h0 + hh
                row = (b * H + h) * Lp
                dYi = _gated_dy(dout_ptr, z_ptr, b, ti, h, op, vi[:, None] & (op[None, :] < P),
                                sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, HAS_Z)
                Xk = _xdelta(x_ptr, delta_ptr, b, tk, h, row, op, pmask_k, sx_b, sx_l, sx_h, DT)
                M += tl.dot(dYi.to(DT), tl.trans(Xk), input_precision=PREC) * _decay(cs_ptr, seg_ptr, row, b, Lp, ti, tk, HAS_SEQ)
            Ci = tl.load(C_ptr + b * sC_b + ti[:, None] * sC_l + g * sC_g + on[None, :],
                         mask=vi[:, None] & (on[None, :] < N), other=0.0)
            acc += tl.dot(tl.trans(M.to(DT)), Ci, input_precision=PREC)
        tl.store(dB_ptr + split * sdB_s + b * sdB_b + tk[:, None] * sdB_l + g * sdB_g + on[None, :], acc, mask=nmask_k)


@triton.jit
def dt_bwd(
    dt_ptr, dt_bias_ptr, A_ptr, delta_ptr, dcs_ptr, rows_ptr, dcs2_ptr, ddx_ptr, dlast_ptr, dlast2_ptr,
    ddt_ptr, dA_ptr, dbias_ptr, dld_ptr,
    L, H, sdt_b, sdt_l, sdt_h, sddt_b, sddt_l, sddt_h, dt_lo, dt_hi, Lp, nchunks, NBLK2,
    Q: tl.constexpr, NB: tl.constexpr, BLK2: tl.constexpr, HAS_STATE: tl.constexpr,
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
    # the query-side row sums chunk_bwd_dx stored per key block k (written for blocks >= k)
    for kk in tl.static_range(NB):
        dcs += tl.load(rows_ptr + ((b * H + h) * NB + kk) * Lp + t, mask=oq // (Q // NB) >= kk, other=0.0)
    if HAS_STATE:   # the entering state's read-out, from chunk_bwd_dbc
        dcs += tl.load(dcs2_ptr + row + t)
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

