"""The SSD's no-grad forward as one kernel: one program per (batch, head) walks the chunks in order.

The three-launch forward (fused_fwd.py, or fused_state.py's sequential state kernel plus
``chunk_scan_fwd``) writes the state entering every chunk to memory and reads it back, and reads
x twice. At N = Q those states weigh as much as x itself: at b4 l4096 h32 p64 n128 the forward
moves ~335 MB where its inputs and output are 143 MB. A forward that keeps no scratch for a
backward can keep the running state in registers instead, between chunks:

    per chunk c (rows t of Q), with cs the in-chunk cumsum of Δ·A (or of the log decay):
        y_t  = Σ_{s<=t, s in c} (C_t·B_s) exp(cs_t - cs_s) Δ_s x_s      (intra-chunk, C Bᵀ ∘ L)
             + exp(cs_t) C_t S                                          (the state entering c)
             + (D + D_pos_t) x_t,   then y *= silu(z)
        S   <- exp(cs_last) S + Σ_s exp(cs_last - cs_s) Δ_s B_sᵀ x_s    (state in (N, P) layout)

Four tensor-core dots per chunk, operands in x's dtype and fp32 accumulators (the precision of the
three-launch path, whose entering states are stored in x's dtype). x, B, C, z are read once and
out written once. It runs where (batch, head) alone fills the GPU and no sequences are packed
(``fused.walk_applies``); with a gradient the three-launch forward runs, since the backward needs
its Δ, cs and entering states.
"""
import triton
import triton.language as tl

from .fused_fwd import _softplus


@triton.jit
def forward_walk(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dt_bias_ptr, ld_ptr, dpos_ptr, z_ptr, init_ptr,
    out_ptr, final_ptr,
    L, H, P, N, G, dt_lo, dt_hi,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sdt_h, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    sz_b, sz_l, sz_h, so_b, so_l, so_h, Lpos,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, HAS_LD: tl.constexpr,
    HAS_D: tl.constexpr, D_HDIM: tl.constexpr, HAS_DPOS: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_INIT: tl.constexpr, PREC: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    h = bh % H
    g = h // (H // G)
    oq = tl.arange(0, Q)
    op = tl.program_id(1) * BP + tl.arange(0, BP)       # this program's columns of x, out, S
    on = tl.arange(0, BN)
    pmask = op < P
    nmask = on < N
    s_off = bh * P * N + op[None, :] * N + on[:, None]         # the (N, P) state in (b, h, P, N)
    s_mask = nmask[:, None] & pmask[None, :]
    if HAS_INIT:
        S = tl.load(init_ptr + s_off, mask=s_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BN, BP], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(dt_bias_ptr + h).to(tl.float32)
    if not HAS_LD:
        a = tl.load(A_ptr + h).to(tl.float32)
    if HAS_D:
        if D_HDIM:
            Dv = tl.load(D_ptr + h * P + op, mask=pmask, other=0.0).to(tl.float32)[None, :]
        else:
            Dv = tl.load(D_ptr + h).to(tl.float32)
    x_row = x_ptr + b * sx_b + h * sx_h + op[None, :]
    B_row = B_ptr + b * sB_b + g * sB_g + on[None, :]
    C_row = C_ptr + b * sC_b + g * sC_g + on[None, :]
    causal = oq[:, None] >= oq[None, :]
    for c in tl.range(0, tl.cdiv(L, Q)):            # the launch's num_stages prefetches chunks
        t = c * Q + oq
        valid = t < L
        raw = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=valid, other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw += bias
        delta = _softplus(raw) if SOFTPLUS else raw
        if HAS_LIMIT:
            delta = tl.minimum(tl.maximum(delta, dt_lo), dt_hi)
        delta = tl.where(valid, delta, 0.0)         # padding: no input, no decay
        if HAS_LD:
            cs = tl.cumsum(tl.load(ld_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=valid, other=0.0), axis=0)
        else:
            cs = tl.cumsum(delta * a, axis=0)
        cs_last = tl.sum(tl.where(oq == Q - 1, cs, 0.0), axis=0)
        xc = tl.load(x_row + t[:, None] * sx_l, mask=valid[:, None] & pmask[None, :], other=0.0)
        Bc = tl.load(B_row + t[:, None] * sB_l, mask=valid[:, None] & nmask[None, :], other=0.0)
        Cc = tl.load(C_row + t[:, None] * sC_l, mask=valid[:, None] & nmask[None, :], other=0.0)

        # the state entering the chunk, then the chunk's own inputs (C Bᵀ ∘ L) x
        acc = tl.dot(Cc, S.to(Cc.dtype), input_precision=PREC) * tl.exp(cs)[:, None]
        s = tl.dot(Cc, tl.trans(Bc), input_precision=PREC)
        s = tl.where(causal, s * tl.exp(cs[:, None] - cs[None, :]) * delta[None, :], 0.0)
        acc += tl.dot(s.to(xc.dtype), xc, input_precision=PREC)
        # the state leaving it
        v = tl.exp(cs_last - cs) * delta
        S = S * tl.exp(cs_last) + tl.dot(tl.trans((Bc.to(tl.float32) * v[:, None]).to(Bc.dtype)), xc,
                                         input_precision=PREC)

        om = valid[:, None] & pmask[None, :]
        if HAS_D:
            acc += xc.to(tl.float32) * Dv
        if HAS_DPOS:    # a skip weight per position (b, h, Lpos), added to D
            acc += xc.to(tl.float32) * tl.load(dpos_ptr + bh * Lpos + t, mask=valid, other=0.0)[:, None]
        if HAS_Z:
            zc = tl.load(z_ptr + b * sz_b + t[:, None] * sz_l + h * sz_h + op[None, :], mask=om,
                         other=0.0).to(tl.float32)
            acc = acc * zc * tl.sigmoid(zc)
        tl.store(out_ptr + b * so_b + t[:, None] * so_l + h * so_h + op[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=om)
    tl.store(final_ptr + s_off, S, mask=s_mask)
