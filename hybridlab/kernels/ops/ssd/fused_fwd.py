"""Triton forward kernels of the chunked SSD (three launches).

1. ``chunk_state_fwd``: per (b, h, chunk): Δ = softplus(dt + bias) clamped, its in-chunk cumsum
   of Δ·A (both stored for later kernels), and the chunk's own end state (X∘decay)ᵀ B.
2. ``state_pass_fwd``: per (b, h, slice of P·N): the short recurrence over chunk states; stores
   the state *entering* every chunk (x's dtype) and the final state (fp32).
3. ``chunk_scan_fwd``: per (b, h, chunk, block of rows): y = C Eᵀ·decay + Σ_blocks (C Bᵀ ∘ L) X
   + D x, gated by silu(z). C Bᵀ tiles are computed here per head: storing them once per group
   made this forward slower (DESIGN.md); the backward stores them (fused_bwd.chunk_cb).

Layouts: x, z, out (b, l, h, p); dt (b, l, h); B, C (b, l, g, n) — any strides with the last
dim contiguous. Scratch: Δ and cs (b, h, Lp) fp32 with Lp = chunks·Q; states (b, c, h, p, n).
seg (b, Lp) int32 = segment number (reset points), only read when HAS_SEQ.
"""
import triton
import triton.language as tl


@triton.jit
def _softplus(v):
    # torch's softplus threshold: identity above 20
    return tl.where(v > 20.0, v, tl.log(1.0 + tl.exp(tl.minimum(v, 20.0))))


@triton.jit
def chunk_state_fwd(
    x_ptr, dt_ptr, A_ptr, B_ptr, dt_bias_ptr, seg_ptr, ld_ptr,
    delta_ptr, cs_ptr, st_ptr,
    L, H, P, N, G, dt_lo, dt_hi,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sdt_h, sB_b, sB_l, sB_g,
    Lp, nchunks,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    HAS_LD: tl.constexpr, PREC: tl.constexpr,
):
    h = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    g = h // (H // G)
    oq = tl.arange(0, Q)
    t = c * Q + oq
    valid = t < L

    raw = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=valid, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(dt_bias_ptr + h).to(tl.float32)
    delta = _softplus(raw) if SOFTPLUS else raw
    if HAS_LIMIT:
        delta = tl.minimum(tl.maximum(delta, dt_lo), dt_hi)
    delta = tl.where(valid, delta, 0.0)              # padding: no input, no decay
    if HAS_LD:      # decoupled: the log decay is its own input (same layout as dt), not Δ·A
        cs = tl.cumsum(tl.load(ld_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=valid, other=0.0), axis=0)
    else:
        cs = tl.cumsum(delta * tl.load(A_ptr + h).to(tl.float32), axis=0)
    row = (b * H + h) * Lp + t
    tl.store(delta_ptr + row, delta)
    tl.store(cs_ptr + row, cs)

    cs_last = tl.sum(tl.where(oq == Q - 1, cs, 0.0), axis=0)
    v = tl.exp(cs_last - cs) * delta                 # decay to the chunk end, times Δ
    if HAS_SEQ:
        seg = tl.load(seg_ptr + b * Lp + t)
        seg_end = tl.load(seg_ptr + b * Lp + c * Q + Q - 1)
        v = tl.where(seg == seg_end, v, 0.0)

    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    xt = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :],
                 mask=valid[:, None] & (op[None, :] < P), other=0.0)
    Bt = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + g * sB_g + on[None, :],
                 mask=valid[:, None] & (on[None, :] < N), other=0.0)
    xv = (xt.to(tl.float32) * v[:, None]).to(Bt.dtype)
    st = tl.dot(tl.trans(xv), Bt, input_precision=PREC)          # (BP, BN)
    base = ((b * nchunks + c) * H + h) * P * N
    tl.store(st_ptr + base + op[:, None] * N + on[None, :], st,
             mask=(op[:, None] < P) & (on[None, :] < N))


@triton.jit
def state_pass_fwd(
    st_ptr, cs_ptr, seg_ptr, init_ptr, E_ptr, final_ptr,
    H, PN, Lp, nchunks,
    Q: tl.constexpr, BLOCK: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    b = bh // H
    h = bh % H
    o = blk * BLOCK + tl.arange(0, BLOCK)
    m = o < PN
    if HAS_INIT:
        s = tl.load(init_ptr + bh * PN + o, mask=m, other=0.0).to(tl.float32)
    else:
        s = tl.zeros([BLOCK], dtype=tl.float32)
    for c in range(nchunks):
        base = ((b * nchunks + c) * H + h) * PN
        tl.store(E_ptr + base + o, s.to(E_ptr.dtype.element_ty), mask=m)
        alpha = tl.exp(tl.load(cs_ptr + bh * Lp + c * Q + Q - 1))
        if HAS_SEQ:   # a reset inside chunk c drops the state entering it
            seg_end = tl.load(seg_ptr + b * Lp + c * Q + Q - 1)
            seg_prev = tl.load(seg_ptr + b * Lp + c * Q - 1, mask=c > 0, other=0)
            alpha = tl.where(seg_end == seg_prev, alpha, 0.0)
        s = alpha * s + tl.load(st_ptr + base + o, mask=m, other=0.0)
    tl.store(final_ptr + bh * PN + o, s, mask=m)


@triton.jit
def chunk_scan_fwd(
    x_ptr, z_ptr, B_ptr, C_ptr, D_ptr, Dpos_ptr, delta_ptr, cs_ptr, seg_ptr, E_ptr,
    sin_ptr, dec_ptr, Eout_ptr, out_ptr, y_ptr,
    L, H, P, N, G,
    sx_b, sx_l, sx_h, sz_b, sz_l, sz_h, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    so_b, so_l, so_h,
    Lp, nchunks, cps, nseg,
    Q: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, D_HDIM: tl.constexpr, HAS_DPOS: tl.constexpr, HAS_Z: tl.constexpr,
    STORE_Y: tl.constexpr, HAS_SEQ: tl.constexpr, HAS_STATE: tl.constexpr,
    HAS_SEGS: tl.constexpr, STORE_E: tl.constexpr, PREC: tl.constexpr,
):
    h = tl.program_id(0)
    cb = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    NB: tl.constexpr = Q // BT
    c = cb // NB
    i = cb % NB
    g = h // (H // G)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    ti = c * Q + i * BT + tl.arange(0, BT)
    vi = ti < L
    row = (b * H + h) * Lp
    cs_i = tl.load(cs_ptr + row + ti)
    if HAS_SEQ:
        seg_i = tl.load(seg_ptr + b * Lp + ti)

    acc = tl.zeros([BT, BP], dtype=tl.float32)
    Ci = tl.load(C_ptr + b * sC_b + ti[:, None] * sC_l + g * sC_g + on[None, :],
                 mask=vi[:, None] & (on[None, :] < N), other=0.0)
    if HAS_STATE:
        # the state entering the chunk, read as (n, p)
        e_off = ((b * nchunks + c) * H + h) * P * N + op[None, :] * N + on[:, None]
        e_mask = (on[:, None] < N) & (op[None, :] < P)
        E = tl.load(E_ptr + e_off, mask=e_mask, other=0.0)
        if HAS_SEGS:    # the walk of this chunk's segment began at 0: add what came before it
            bh = b * H + h
            s_in = tl.load(sin_ptr + (bh * nseg + c // cps) * P * N + op[None, :] * N + on[:, None],
                           mask=e_mask, other=0.0)
            E = E.to(tl.float32) + tl.load(dec_ptr + bh * nchunks + c) * s_in
            if STORE_E:     # the true entering states, for the backward (one row block writes)
                if i == 0:
                    tl.store(Eout_ptr + e_off, E.to(Eout_ptr.dtype.element_ty), mask=e_mask)
        w = tl.exp(cs_i)
        if HAS_SEQ:
            seg_prev = tl.load(seg_ptr + b * Lp + c * Q - 1, mask=c > 0, other=0)
            w = tl.where(seg_i == seg_prev, w, 0.0)
        acc = tl.dot(Ci, E.to(Ci.dtype), input_precision=PREC) * w[:, None]

    ot = tl.arange(0, BT)
    for j in range(0, i + 1):
        tj = c * Q + j * BT + ot
        vj = tj < L
        xj = tl.load(x_ptr + b * sx_b + tj[:, None] * sx_l + h * sx_h + op[None, :],
                     mask=vj[:, None] & (op[None, :] < P), other=0.0)
        cs_j = tl.load(cs_ptr + row + tj)
        dl_j = tl.load(delta_ptr + row + tj)
        Bj = tl.load(B_ptr + b * sB_b + tj[:, None] * sB_l + g * sB_g + on[None, :],
                     mask=vj[:, None] & (on[None, :] < N), other=0.0)
        s = tl.dot(Ci, tl.trans(Bj), input_precision=PREC)              # C Bᵀ (BT, BT)
        keep = ti[:, None] >= tj[None, :]
        if HAS_SEQ:
            keep &= seg_i[:, None] == tl.load(seg_ptr + b * Lp + tj)[None, :]
        s = tl.where(keep, s * tl.exp(cs_i[:, None] - cs_j[None, :]) * dl_j[None, :], 0.0)
        acc += tl.dot(s.to(xj.dtype), xj, input_precision=PREC)

    pm = vi[:, None] & (op[None, :] < P)
    if HAS_D or HAS_DPOS:
        xi = tl.load(x_ptr + b * sx_b + ti[:, None] * sx_l + h * sx_h + op[None, :], mask=pm, other=0.0)
        Dv = tl.zeros([BT, BP], dtype=tl.float32)
        if HAS_D:
            if D_HDIM:
                Dv += tl.load(D_ptr + h * P + op, mask=op < P, other=0.0).to(tl.float32)[None, :]
            else:
                Dv += tl.load(D_ptr + h).to(tl.float32)
        if HAS_DPOS:    # a skip weight per position (b, h, Lp), added to D
            Dv += tl.load(Dpos_ptr + row + ti)[:, None]
        acc += xi.to(tl.float32) * Dv
    o_off = b * so_b + ti[:, None] * so_l + h * so_h + op[None, :]
    if HAS_Z:
        if STORE_Y:     # pre-gate y, for dz (with grad only)
            tl.store(y_ptr + o_off, acc.to(y_ptr.dtype.element_ty), mask=pm)
        zi = tl.load(z_ptr + b * sz_b + ti[:, None] * sz_l + h * sz_h + op[None, :],
                     mask=pm, other=0.0).to(tl.float32)
        acc = acc * zi * tl.sigmoid(zi)
    tl.store(out_ptr + o_off, acc.to(out_ptr.dtype.element_ty), mask=pm)
