"""The SSD's chunk-state recurrence as one sequential kernel per direction.

The split path runs it as two launches each way: the chunks' own states (or state gradients) in
parallel, stored in fp32, then a short recurrence over them (fused_fwd.chunk_state_fwd +
state_pass_fwd; fused_bwd.chunk_state_bwd + state_pass_bwd). When the grid of (batch, head,
state tile) alone fills the GPU, one program per tile can walk the sequence itself and keep the
running state in registers, as the accumulator of a tensor-core dot; the fp32 chunk states never
reach memory.

The walk goes in blocks of KB rows (KB divides the chunk Q), each block being a small chunk of
the same recurrence, so a program holds KB-row operand tiles, not Q-row ones (registers):

    S <- exp(cs_end - cs_start) S + sum_t exp(cs_end - cs_t) Δ_t x_t B_tᵀ      (per KB-row block)

Chaining the blocks of a chunk gives exactly the chunk's recurrence; the state entering each
chunk is stored where a chunk starts. Results match the split path's up to fp32 rounding order.

1. ``state_fwd_seq``: per (b, h, tile of the P x N state, segment of chunks), rows in order: Δ and
   the in-chunk cs (stored by the first tile), the state *entering* each chunk (x's dtype), the
   state at the segment's end (fp32). With one segment that is the whole walk and the final state.
   Where (b, h, tile) alone leaves SMs idle (b1 h32: 64 programs), the sequence is cut into
   segments walked in parallel, each from a zero state (the first from the initial state):
   ``segment_pass_fwd`` then carries the segments' end states across segments, and the scan adds
   each chunk's missing part, dec_c · S_in(segment), to the entering state it reads.
2. ``state_bwd_seq``: rows in reverse. The gradient G of the state at a block's end goes back as
   G <- exp(cs_end - cs_start) G + sum_t exp(cs_t - cs_start) dY_t ⊗ C_t; at each chunk's end it
   stores dE_{c+1} (x's dtype) and α_c <E_c, dE_{c+1}> for d cs_last (one partial per tile);
   dinitial = G at the start.

Layouts as fused_fwd / fused_bwd; ``tile`` = P-tile · (N tiles) + N-tile.
"""
import triton
import triton.language as tl

from .fused_fwd import _softplus


@triton.jit
def _tile(H, P, N, BP: tl.constexpr, BN: tl.constexpr):
    """This program's (b, h, tile), rows op and columns on of its state tile, offsets and mask."""
    bh = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    b = bh // H
    h = bh % H
    ntn = tl.cdiv(N, BN)
    op = (tile // ntn) * BP + tl.arange(0, BP)
    on = (tile % ntn) * BN + tl.arange(0, BN)
    off = op[:, None] * N + on[None, :]
    mask = (op[:, None] < P) & (on[None, :] < N)
    return bh, tile, b, h, op, on, off, mask


@triton.jit
def _carried(cs_end, cs_start, seg_ptr, b, Lp, t_end, t_start, HAS_SEQ: tl.constexpr):
    """exp(cs_end - cs_start): how much of the state at row t_start - 1 reaches row t_end
    (0 when a sequence starts in between)."""
    alpha = tl.exp(cs_end - cs_start)
    if HAS_SEQ:
        seg_end = tl.load(seg_ptr + b * Lp + t_end)
        seg_prev = tl.load(seg_ptr + b * Lp + t_start - 1, mask=t_start > 0, other=0)
        alpha = tl.where(seg_end == seg_prev, alpha, 0.0)
    return alpha


@triton.jit
def state_fwd_seq(
    x_ptr, dt_ptr, A_ptr, B_ptr, dt_bias_ptr, seg_ptr, ld_ptr, init_ptr,
    delta_ptr, cs_ptr, E_ptr, end_ptr,
    L, H, P, N, G, dt_lo, dt_hi,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sdt_h, sB_b, sB_l, sB_g,
    Lp, nchunks, cps,
    Q: tl.constexpr, KB: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    HAS_LD: tl.constexpr, HAS_INIT: tl.constexpr, PREC: tl.constexpr,
):
    bh, tile, b, h, op, on, off, smask = _tile(H, P, N, BP, BN)
    k = tl.program_id(2)                          # the segment: chunks [k·cps, (k+1)·cps)
    g = h // (H // G)
    NSB: tl.constexpr = Q // KB
    ok = tl.arange(0, KB)
    first = ok < tl.where(tile == 0, KB, 0)      # Δ and cs are the same for every tile: one stores them
    if HAS_INIT:                                  # the first segment starts from it, the others from 0
        s = tl.load(init_ptr + bh * P * N + off, mask=smask, other=0.0).to(tl.float32)
        s = tl.where(k == 0, s, 0.0)
    else:
        s = tl.zeros([BP, BN], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(dt_bias_ptr + h).to(tl.float32)
    if not HAS_LD:
        a = tl.load(A_ptr + h).to(tl.float32)
    carry = 0.0                                   # cs at the end of the previous block of the chunk
    # the launch's num_stages prefetches later blocks
    for i in range(k * cps * NSB, tl.minimum((k + 1) * cps, nchunks) * NSB):
        j = i % NSB
        t0 = i * KB
        t = t0 + ok
        valid = t < L
        raw = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=valid, other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw += bias
        delta = _softplus(raw) if SOFTPLUS else raw
        if HAS_LIMIT:
            delta = tl.minimum(tl.maximum(delta, dt_lo), dt_hi)
        delta = tl.where(valid, delta, 0.0)          # padding: no input, no decay
        if HAS_LD:
            cs = tl.cumsum(tl.load(ld_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=valid, other=0.0), axis=0)
        else:
            cs = tl.cumsum(delta * a, axis=0)
        carry = tl.where(j == 0, 0.0, carry)
        row = bh * Lp + t
        tl.store(delta_ptr + row, delta, mask=first)
        tl.store(cs_ptr + row, cs + carry, mask=first)
        cs_end = tl.sum(tl.where(ok == KB - 1, cs, 0.0), axis=0)
        carry += cs_end
        v = tl.exp(cs_end - cs) * delta
        if HAS_SEQ:
            v = tl.where(tl.load(seg_ptr + b * Lp + t) == tl.load(seg_ptr + b * Lp + t0 + KB - 1), v, 0.0)
        alpha = _carried(cs_end, 0.0, seg_ptr, b, Lp, t0 + KB - 1, t0, HAS_SEQ)

        if j == 0:      # the state entering chunk i // NSB, where it starts
            tl.store(E_ptr + (((b * nchunks + i // NSB) * H + h) * P * N) + off, s.to(E_ptr.dtype.element_ty),
                     mask=smask)
        xt = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :],
                     mask=valid[:, None] & (op[None, :] < P), other=0.0)
        Bt = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + g * sB_g + on[None, :],
                     mask=valid[:, None] & (on[None, :] < N), other=0.0)
        xv = (xt.to(tl.float32) * v[:, None]).to(Bt.dtype)
        s = tl.dot(tl.trans(xv), Bt, acc=s * alpha, input_precision=PREC)
    tl.store(end_ptr + (bh * tl.num_programs(2) + k) * P * N + off, s, mask=smask)


@triton.jit
def segment_pass_fwd(
    end_ptr, cs_ptr, sin_ptr, dec_ptr, final_ptr,
    PN, Lp, nchunks, cps, nseg,
    Q: tl.constexpr, BLOCK: tl.constexpr,
):
    """Per (b·h, slice of P·N): S_in(k) = the true state entering segment k (fp32; 0 for the first,
    whose walk began at the initial state), S_in(k+1) = exp(cs over segment k) S_in(k) + end(k);
    the final state; and (first slice) dec_c = exp(cs from chunk c's segment start to c's start)."""
    bh = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    o = blk * BLOCK + tl.arange(0, BLOCK)
    m = o < PN
    s = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(nseg):
        tl.store(sin_ptr + (bh * nseg + k) * PN + o, s, mask=m)
        tot = 0.0
        for c in range(k * cps, tl.minimum((k + 1) * cps, nchunks)):
            if blk == 0:
                tl.store(dec_ptr + bh * nchunks + c, tl.exp(tot))
            tot += tl.load(cs_ptr + bh * Lp + c * Q + Q - 1)
        s = tl.exp(tot) * s + tl.load(end_ptr + (bh * nseg + k) * PN + o, mask=m, other=0.0)
    tl.store(final_ptr + bh * PN + o, s, mask=m)


@triton.jit
def state_bwd_seq(
    dout_ptr, z_ptr, C_ptr, cs_ptr, seg_ptr, E_ptr, dfinal_ptr,
    dst_ptr, dinit_ptr, dlast_ptr,
    L, H, P, N, G,
    sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, sC_b, sC_l, sC_g,
    Lp, nchunks,
    Q: tl.constexpr, KB: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_SEQ: tl.constexpr, HAS_DFINAL: tl.constexpr, HAS_DINIT: tl.constexpr,
    PREC: tl.constexpr,
):
    bh, tile, b, h, op, on, off, smask = _tile(H, P, N, BP, BN)
    ntiles = tl.num_programs(1)
    g = h // (H // G)
    NSB: tl.constexpr = Q // KB
    ok = tl.arange(0, KB)
    if HAS_DFINAL:
        gs = tl.load(dfinal_ptr + bh * P * N + off, mask=smask, other=0.0).to(tl.float32)
    else:
        gs = tl.zeros([BP, BN], dtype=tl.float32)
    for ii in range(nchunks * NSB):
        i = nchunks * NSB - 1 - ii
        c = i // NSB
        j = i % NSB
        t0 = i * KB
        t = t0 + ok
        valid = t < L
        cs = tl.load(cs_ptr + bh * Lp + t)
        cs_start = tl.load(cs_ptr + bh * Lp + t0 - 1, mask=j > 0, other=0.0)
        cs_end = tl.sum(tl.where(ok == KB - 1, cs, 0.0), axis=0)

        if j == NSB - 1:    # at a chunk's end: d(its end state), and α_c <E_c, dE_{c+1}> for d cs_last
            base = ((b * nchunks + c) * H + h) * P * N
            tl.store(dst_ptr + base + off, gs.to(dst_ptr.dtype.element_ty), mask=smask)
            Ec = tl.load(E_ptr + base + off, mask=smask, other=0.0).to(tl.float32)
            alpha_c = _carried(cs_end, 0.0, seg_ptr, b, Lp, t0 + KB - 1, c * Q, HAS_SEQ)
            tl.store(dlast_ptr + (bh * nchunks + c) * ntiles + tile, alpha_c * tl.sum(tl.sum(Ec * gs, axis=1), axis=0))

        w = tl.exp(cs - cs_start)
        if HAS_SEQ:
            seg_prev = tl.load(seg_ptr + b * Lp + t0 - 1, mask=t0 > 0, other=0)
            w = tl.where(tl.load(seg_ptr + b * Lp + t) == seg_prev, w, 0.0)
        alpha = _carried(cs_end, cs_start, seg_ptr, b, Lp, t0 + KB - 1, t0, HAS_SEQ)
        pm = valid[:, None] & (op[None, :] < P)
        dy = tl.load(dout_ptr + b * sdo_b + t[:, None] * sdo_l + h * sdo_h + op[None, :], mask=pm, other=0.0).to(tl.float32)
        if HAS_Z:
            zz = tl.load(z_ptr + b * sz_b + t[:, None] * sz_l + h * sz_h + op[None, :], mask=pm, other=0.0).to(tl.float32)
            dy = dy * zz * tl.sigmoid(zz)
        Ct = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + g * sC_g + on[None, :],
                     mask=valid[:, None] & (on[None, :] < N), other=0.0)
        gs = tl.dot(tl.trans((dy * w[:, None]).to(Ct.dtype)), Ct, acc=gs * alpha, input_precision=PREC)
    if HAS_DINIT:
        tl.store(dinit_ptr + bh * P * N + off, gs, mask=smask)
