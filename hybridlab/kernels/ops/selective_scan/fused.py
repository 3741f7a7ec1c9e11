"""Mamba-1 selective scan in Triton: forward, backward and the decode step.

Same signatures and semantics as ``reference.py`` (math in fp32, also for fp64 inputs).

Layout. One program owns (batch b, a block of BLOCK_D channels) and walks the sequence in tiles
of BLOCK_T steps with the (BLOCK_D, N) state in registers. Inside a tile the recurrence
h_t = a_t h_{t-1} + b_t runs as ``tl.associative_scan`` over time on (BLOCK_D, N, BLOCK_T)
(no per-step loads, every load is a coalesced tile when time is the contiguous axis, as in
mamba-ssm's (b, d, l) layout). softplus, exp, the D skip and the silu(z) gate are fused.

Backward. The forward stores the state at the start of every tile (b, n_tiles, d, N) fp32
instead of all states. The backward walks the tiles in reverse: it recomputes the tile's states
from its checkpoint, then runs the adjoint g_t = C_t dy_t + a_{t+1} g_{t+1} as a reverse scan
(a_{t+1} comes from reloading delta one step later and one more exp; Triton has no cheap
shift of a register tile along time).
a_t h_{t-1} is taken as h_t - dt_t u_t B_t, so no shifted state is needed either. dB and dC are
sums over channels: reduced over the block in registers, then one fp32 atomic add per block.
dA, dD and d(delta_bias) are per-(batch, channel) partials, summed over the batch by torch.

seq_idx (b, l) int marks packed sequences: where the id changes the decay is 0 (state restarts).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


# ----------------------------------------------------------------------------------------------
# helpers
@triton.jit
def _combine(a1, b1, a2, b2):
    # compose h -> a1 h + b1, then h -> a2 h + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus(x):
    # log1p(e) as log(w) * e / (w - 1) keeps full precision for tiny e; = x above 20 (threshold)
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    sp = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
    return tl.where(x > 20.0, x, sp)


@triton.jit
def _softplus_grad(x):
    return tl.where(x > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-tl.minimum(x, 20.0))))


@triton.jit
def _tile_dt(delta_ptr, bias, offs_d, offs_t, mask, s_d, s_t, HAS_BIAS: tl.constexpr,
             SOFTPLUS: tl.constexpr):
    """(BLOCK_D, BLOCK_T) delta after bias and softplus, 0 outside the mask; also the raw value."""
    raw = tl.load(delta_ptr + offs_d[:, None] * s_d + offs_t[None, :] * s_t, mask=mask, other=0.0)
    raw = raw.to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _restarts(seq_ptr, offs_t, L, s_t):
    """(BLOCK_T,) True where a new packed sequence starts at t (t > 0 and the id changes)."""
    m = (offs_t > 0) & (offs_t < L)
    cur = tl.load(seq_ptr + offs_t * s_t, mask=m, other=0)
    prev = tl.load(seq_ptr + (offs_t - 1) * s_t, mask=m, other=0)
    return m & (cur != prev)


# ----------------------------------------------------------------------------------------------
# forward
@triton.jit
def _fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, seq_ptr,
    out_ptr, last_ptr, ckpt_ptr,
    L, d, n, cpg,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sA_d, sA_n, sseq_b, sseq_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_SEQ: tl.constexpr, SAVE_CKPT: tl.constexpr,
    BLOCK_D: tl.constexpr, NP: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    tt = tl.arange(0, BLOCK_T)
    mask_d = offs_d < d
    mask_dn = mask_d[:, None] & (offs_n[None, :] < n)
    grp = (pid_d * BLOCK_D) // cpg                     # the whole block sits in one group

    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0)
    A = A.to(tl.float32)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    dn_off = offs_d[:, None] * n + offs_n[None, :]     # (d, n) offset in contiguous state buffers
    if HAS_H0:
        h = tl.load(h0_ptr + b * d * n + dn_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, NP), tl.float32)

    u_base = u_ptr + b * su_b
    dt_base = delta_ptr + b * sdt_b
    B_base = B_ptr + b * sB_b + grp * sB_g
    C_base = C_ptr + b * sC_b + grp * sC_g
    n_tiles = tl.cdiv(L, BLOCK_T)
    for it in range(0, n_tiles):
        t0 = it * BLOCK_T
        if SAVE_CKPT:
            tl.store(ckpt_ptr + (b * n_tiles + it) * d * n + dn_off, h, mask=mask_dn)
        offs_t = t0 + tt
        mask_t = offs_t < L
        m2 = mask_d[:, None] & mask_t[None, :]
        mnt = (offs_n[:, None] < n) & mask_t[None, :]
        u = tl.load(u_base + offs_d[:, None] * su_d + offs_t[None, :] * su_l, mask=m2, other=0.0)
        u = u.to(tl.float32)
        dt, _ = _tile_dt(dt_base, bias, offs_d, offs_t, m2, sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_base + offs_n[:, None] * sB_n + offs_t[None, :] * sB_l, mask=mnt, other=0.0)
        Ct = tl.load(C_base + offs_n[:, None] * sC_n + offs_t[None, :] * sC_l, mask=mnt, other=0.0)
        a = tl.exp(dt[:, None, :] * A[:, :, None])                     # (BLOCK_D, NP, BLOCK_T)
        if HAS_SEQ:
            cut = _restarts(seq_ptr + b * sseq_b, offs_t, L, sseq_l)
            a = tl.where(cut[None, None, :], 0.0, a)
        bu = (dt * u)[:, None, :] * Bt.to(tl.float32)[None, :, :]
        pa, pb = tl.associative_scan((a, bu), axis=2, combine_fn=_combine)
        hs = pa * h[:, :, None] + pb
        y = tl.sum(hs * Ct.to(tl.float32)[None, :, :], axis=1)          # (BLOCK_D, BLOCK_T)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            zt = tl.load(z_ptr + b * sz_b + offs_d[:, None] * sz_d + offs_t[None, :] * sz_l,
                         mask=m2, other=0.0).to(tl.float32)
            y = y * zt * tl.sigmoid(zt)
        tl.store(out_ptr + b * d * L + offs_d[:, None] * L + offs_t[None, :],
                 y.to(out_ptr.dtype.element_ty), mask=m2)
        # padded steps past L are identities (a = 1, b = 0), so the last column is the carry
        h = tl.sum(tl.where((tt == BLOCK_T - 1)[None, None, :], hs, 0.0), axis=2)
    tl.store(last_ptr + b * d * n + dn_off, h, mask=mask_dn)


# ----------------------------------------------------------------------------------------------
# forward, sequential in registers (v2)
#
# The associative_scan above puts time across the lanes of a warp (Triton's layout for the 3-D
# tile): every step of the scan is log2(lanes) shuffle rounds of a 3-flop combine, ~25 ops per
# state update where the recurrence needs 3. v2 walks time one step at a time with the state in
# registers: tiles of 8 steps are loaded as (BLOCK_D, 8) vectors (one 16-byte load per channel),
# the per-channel math (softplus, dt*u, D skip, gate) runs on the whole tile, and tl.split takes
# the tile apart into its 8 columns (register moves: the 8 steps end up in one thread) for the
# unrolled recurrence h = exp(dt A) h + dt u B, y_t = sum_n h C_t.
@triton.jit
def _cols8(x):
    """(R, 8) -> its 8 columns (R,), in order."""
    R: tl.constexpr = x.shape[0]
    e, o = tl.split(tl.reshape(x, (R, 4, 2)))                   # even / odd columns
    e0, e1 = tl.split(tl.reshape(e, (R, 2, 2)))                 # cols (0,4) / (2,6)
    o0, o1 = tl.split(tl.reshape(o, (R, 2, 2)))                 # cols (1,5) / (3,7)
    c0, c4 = tl.split(e0)
    c2, c6 = tl.split(e1)
    c1, c5 = tl.split(o0)
    c3, c7 = tl.split(o1)
    return (c0, c1, c2, c3, c4, c5, c6, c7)


@triton.jit
def _join8(c):
    """The inverse of _cols8: 8 (R,) columns -> (R, 8)."""
    e0 = tl.join(c[0], c[4])
    e1 = tl.join(c[2], c[6])
    o0 = tl.join(c[1], c[5])
    o1 = tl.join(c[3], c[7])
    R: tl.constexpr = e0.shape[0]
    e = tl.reshape(tl.join(e0, e1), (R, 4))
    o = tl.reshape(tl.join(o0, o1), (R, 4))
    return tl.reshape(tl.join(e, o), (R, 8))


@triton.jit
def _fwd_seq_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, seq_ptr,
    out_ptr, last_ptr, ckpt_ptr,
    L, d, n, cpg,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sA_d, sA_n, sseq_b, sseq_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_SEQ: tl.constexpr, SAVE_CKPT: tl.constexpr,
    BLOCK_D: tl.constexpr, NP: tl.constexpr, CKPT_T: tl.constexpr,
):
    T: tl.constexpr = 8
    LOG2E: tl.constexpr = 1.4426950408889634
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    tt = tl.arange(0, T)
    mask_d = offs_d < d
    mask_dn = mask_d[:, None] & (offs_n[None, :] < n)
    grp = (pid_d * BLOCK_D) // cpg

    A2 = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0)
    A2 = A2.to(tl.float32) * LOG2E                                     # exp(x A) = exp2(x A2)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    dn_off = offs_d[:, None] * n + offs_n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + b * d * n + dn_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, NP), tl.float32)

    u_base = u_ptr + b * su_b + offs_d[:, None] * su_d
    dt_base = delta_ptr + b * sdt_b + offs_d[:, None] * sdt_d
    z_base = z_ptr + b * sz_b + offs_d[:, None] * sz_d
    o_base = out_ptr + b * d * L + offs_d[:, None] * L
    B_base = B_ptr + b * sB_b + grp * sB_g + offs_n[:, None] * sB_n
    C_base = C_ptr + b * sC_b + grp * sC_g + offs_n[:, None] * sC_n
    mask_nn = offs_n[:, None] < n
    n_ckpt = tl.cdiv(L, CKPT_T)
    for t0 in range(0, L, T):
        if SAVE_CKPT:
            if t0 % CKPT_T == 0:
                tl.store(ckpt_ptr + (b * n_ckpt + t0 // CKPT_T) * d * n + dn_off, h, mask=mask_dn)
        offs_t = t0 + tt
        mask_t = offs_t < L
        m2 = mask_d[:, None] & mask_t[None, :]
        mnt = mask_nn & mask_t[None, :]
        u = tl.load(u_base + offs_t[None, :] * su_l, mask=m2, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + offs_t[None, :] * sdt_l, mask=m2, other=0.0).to(tl.float32)
        Bt = tl.load(B_base + offs_t[None, :] * sB_l, mask=mnt, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + offs_t[None, :] * sC_l, mask=mnt, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_base + offs_t[None, :] * sz_l, mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(m2, dt, 0.0)                 # padded steps: a = 1, no input (identity)
        dtu = dt * u
        dtc = _cols8(dt)
        dtuc = _cols8(dtu)
        Bc = _cols8(Bt)
        Cc = _cols8(Ct)
        if HAS_SEQ:
            cut = _restarts(seq_ptr + b * sseq_b, offs_t, L, sseq_l)
            keep = _cols8(tl.where(cut[None, :], 0.0, 1.0) + tl.zeros((BLOCK_D, T), tl.float32))
        ys = ()
        for j in tl.static_range(T):
            a = tl.exp2(dtc[j][:, None] * A2)
            if HAS_SEQ:
                a = a * keep[j][:, None]
            h = a * h + dtuc[j][:, None] * Bc[j][None, :]
            ys = ys + (tl.sum(h * Cc[j][None, :], axis=1),)
        y = _join8(ys)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            y = y * zt * tl.sigmoid(zt)
        tl.store(o_base + offs_t[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)
    tl.store(last_ptr + b * d * n + dn_off, h, mask=mask_dn)


# ----------------------------------------------------------------------------------------------
# backward
@triton.jit
def _bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr, ckpt_ptr,
    dout_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, d, n, cpg, G,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sA_d, sA_n, sseq_b, sseq_l,
    sdo_b, sdo_d, sdo_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_DLAST: tl.constexpr, WANT_DH0: tl.constexpr,
    BLOCK_D: tl.constexpr, NP: tl.constexpr, BLOCK_T: tl.constexpr, CKPT_T: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    tt = tl.arange(0, BLOCK_T)
    mask_d = offs_d < d
    mask_dn = mask_d[:, None] & (offs_n[None, :] < n)
    grp = (pid_d * BLOCK_D) // cpg

    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0)
    A = A.to(tl.float32)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    dn_off = offs_d[:, None] * n + offs_n[None, :]
    if HAS_DLAST:       # the last state's own gradient enters the adjoint at t = L-1
        g_carry = tl.load(dlast_ptr + b * d * n + dn_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        g_carry = tl.zeros((BLOCK_D, NP), tl.float32)
    dA_acc = tl.zeros((BLOCK_D, NP), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)

    u_base = u_ptr + b * su_b
    dt_base = delta_ptr + b * sdt_b
    B_base = B_ptr + b * sB_b + grp * sB_g
    C_base = C_ptr + b * sC_b + grp * sC_g
    dBC_off = (b * G + grp) * n * L
    n_tiles = tl.cdiv(L, BLOCK_T)
    n_ckpt = tl.cdiv(L, CKPT_T)
    for it in range(0, n_tiles):
        t0 = (n_tiles - 1 - it) * BLOCK_T
        offs_t = t0 + tt
        mask_t = offs_t < L
        m2 = mask_d[:, None] & mask_t[None, :]
        mnt = (offs_n[:, None] < n) & mask_t[None, :]
        io2 = offs_d[:, None] * L + offs_t[None, :]                     # contiguous (d, l) outputs

        # -- recompute the tile's forward from its checkpoint
        h = tl.load(ckpt_ptr + (b * n_ckpt + t0 // CKPT_T) * d * n + dn_off, mask=mask_dn, other=0.0)
        u = tl.load(u_base + offs_d[:, None] * su_d + offs_t[None, :] * su_l, mask=m2, other=0.0)
        u = u.to(tl.float32)
        dt, raw = _tile_dt(dt_base, bias, offs_d, offs_t, m2, sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_base + offs_n[:, None] * sB_n + offs_t[None, :] * sB_l, mask=mnt, other=0.0)
        Ct = tl.load(C_base + offs_n[:, None] * sC_n + offs_t[None, :] * sC_l, mask=mnt, other=0.0)
        Bt = Bt.to(tl.float32)
        Ct = Ct.to(tl.float32)
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        if HAS_SEQ:
            cut = _restarts(seq_ptr + b * sseq_b, offs_t, L, sseq_l)
            a = tl.where(cut[None, None, :], 0.0, a)
        dtu = dt * u
        bu = dtu[:, None, :] * Bt[None, :, :]
        pa, pb = tl.associative_scan((a, bu), axis=2, combine_fn=_combine)
        hs = pa * h[:, :, None] + pb
        y = tl.sum(hs * Ct[None, :, :], axis=1)
        if HAS_D:
            y += Dv[:, None] * u

        # -- output gate
        dout = tl.load(dout_ptr + b * sdo_b + offs_d[:, None] * sdo_d + offs_t[None, :] * sdo_l,
                       mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_ptr + b * sz_b + offs_d[:, None] * sz_d + offs_t[None, :] * sz_l,
                         mask=m2, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zt)
            dy = dout * zt * sg
            dz = dout * y * sg * (1.0 + zt * (1.0 - sg))
            tl.store(dz_ptr + b * d * L + io2, dz.to(dz_ptr.dtype.element_ty), mask=m2)
        else:
            dy = dout
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)

        # dC_t = sum_d h_t dy_t
        dCt = tl.sum(hs * dy[:, None, :], axis=0)
        tl.atomic_add(dC_ptr + dBC_off + offs_n[:, None] * L + offs_t[None, :], dCt, mask=mnt,
                      sem="relaxed")
        hmb = hs - bu                                                   # = a_t h_{t-1}

        # -- adjoint: g_t = C_t dy_t + a_{t+1} g_{t+1}, reverse scan with the carry from the right
        offs_t1 = offs_t + 1
        m1 = mask_d[:, None] & (offs_t1 < L)[None, :]
        dt1, _ = _tile_dt(dt_base, bias, offs_d, offs_t1, m1, sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
        al = tl.exp(dt1[:, None, :] * A[:, :, None])                   # 1 past the end
        if HAS_SEQ:
            cut1 = _restarts(seq_ptr + b * sseq_b, offs_t1, L, sseq_l)
            al = tl.where(cut1[None, None, :], 0.0, al)
        c = Ct[None, :, :] * dy[:, None, :]
        pg, gb = tl.associative_scan((al, c), axis=2, combine_fn=_combine, reverse=True)
        g = gb + pg * g_carry[:, :, None]
        g_carry = tl.sum(tl.where((tt == 0)[None, None, :], g, 0.0), axis=2)

        # -- parameter / input gradients
        dBt = tl.sum(g * dtu[:, None, :], axis=0)
        tl.atomic_add(dB_ptr + dBC_off + offs_n[:, None] * L + offs_t[None, :], dBt, mask=mnt,
                      sem="relaxed")
        ga = g * hmb                                                    # dL/da_t * a_t
        dA_acc += tl.sum(ga * dt[:, None, :], axis=2)
        gB = tl.sum(g * Bt[None, :, :], axis=1)                         # dL/d(dt*u)
        ddt = gB * u + tl.sum(ga * A[:, :, None], axis=1)
        du = gB * dt
        if HAS_D:
            du += dy * Dv[:, None]
        if SOFTPLUS:
            ddt = ddt * _softplus_grad(raw)
        ddt = tl.where(m2, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + b * d * L + io2, du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddelta_ptr + b * d * L + io2, ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)

    tl.store(dA_ptr + b * d * n + dn_off, dA_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + b * d + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + b * d + offs_d, dbias_acc, mask=mask_d)
    if WANT_DH0:        # d h_{-1} = a_0 g_0
        dt0 = tl.load(dt_base + offs_d * sdt_d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt0 += bias
        if SOFTPLUS:
            dt0 = _softplus(dt0)
        a0 = tl.exp(dt0[:, None] * A)
        tl.store(dh0_ptr + b * d * n + dn_off, a0 * g_carry, mask=mask_dn)


# ----------------------------------------------------------------------------------------------
# host side
def _pow2_divisor(x: int, cap: int) -> int:
    """Largest power of two <= cap that divides x."""
    p = 1
    while p * 2 <= cap and x % (p * 2) == 0:
        p *= 2
    return p


#: Tuning knobs. MAX_BLOCK_T: longest time tile (a power of two; the interpreter tests shrink it so
#: that short sequences span several tiles). TILE_FWD / TILE_BWD: fp32 elements per
#: (BLOCK_D, N, BLOCK_T) tile, which sets BLOCK_D (the backward keeps ~5 such tiles live).
MAX_BLOCK_T = 64
TILE_FWD, TILE_BWD = 8192, 4096
#: forward kernel: "seq" (_fwd_seq_kernel, state in registers, 8-step tiles) or "scan" (v1,
#: associative_scan over the time tile). SEQ_BLOCK_D channels per program, SEQ_WARPS warps.
FWD_IMPL = "seq"
#: backward kernel: "scan" (v1)
BWD_IMPL = "scan"
SEQ_BLOCK_D, SEQ_WARPS = 32, 4


def _tiles(d: int, n: int, cpg: int, grouped: bool):
    """(NP, BLOCK_T, BLOCK_D fwd, BLOCK_D bwd): ~8K fp32 per 3-D tile forward, ~4K backward."""
    NP = max(2, triton.next_power_of_2(n))
    BT = min(MAX_BLOCK_T, 64 if NP <= 16 else (32 if NP <= 64 else 16))
    out = []
    for budget in (TILE_FWD, TILE_BWD):
        bd = max(1, min(64, budget // (NP * BT), triton.next_power_of_2(d)))
        out.append(_pow2_divisor(cpg, bd) if grouped else bd)
    return NP, BT, out[0], out[1]


def _bc_view(M: torch.Tensor):
    """B/C (b,n,l) or (b,g,n,l) -> (tensor, G, strides b, g, n, l)."""
    if M.dim() == 3:
        return M, 1, (M.stride(0), 0, M.stride(1), M.stride(2))
    return M, M.shape[1], tuple(M.stride())


def _f32c(t):
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, save):
    b, d, L = u.shape
    n = A.shape[1]
    B, G, sB = _bc_view(B)
    C, Gc, sC = _bc_view(C)
    if G != Gc or d % G:
        raise ValueError(f"B and C need the same number of groups dividing d={d}: {G} vs {Gc}")
    NP, BT, BD, _ = _tiles(d, n, d // G, G > 1)
    D_, bias_, h0_ = _f32c(D), _f32c(delta_bias), _f32c(initial_state)
    seq = seq_idx.to(torch.int32).contiguous() if seq_idx is not None else None
    out = torch.empty(b, d, L, device=u.device, dtype=u.dtype)
    last = torch.empty(b, d, n, device=u.device, dtype=torch.float32)
    n_tiles = triton.cdiv(L, BT)
    ckpt = torch.empty(b, n_tiles, d, n, device=u.device, dtype=torch.float32) if save else last
    zz = z if z is not None else u
    if FWD_IMPL == "seq":
        BDs = min(SEQ_BLOCK_D, triton.next_power_of_2(d))
        if G > 1:
            BDs = _pow2_divisor(d // G, BDs)
        ckpt = (torch.empty(b, triton.cdiv(L, BT), d, n, device=u.device, dtype=torch.float32)
                if save else last)
        _fwd_seq_kernel[(triton.cdiv(d, BDs), b)](
            u, delta, A, B, C, D_ if D_ is not None else last, zz,
            bias_ if bias_ is not None else last, h0_ if h0_ is not None else last,
            seq if seq is not None else last, out, last, ckpt,
            L, d, n, d // G,
            *u.stride(), *delta.stride(), *zz.stride(), *sB, *sC, *A.stride(),
            *(seq.stride() if seq is not None else (0, 0)),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), HAS_H0=initial_state is not None, HAS_SEQ=seq is not None,
            SAVE_CKPT=save, BLOCK_D=BDs, NP=NP, CKPT_T=BT, num_warps=SEQ_WARPS,
        )
        return out, last, (ckpt if save else None), seq
    grid = (triton.cdiv(d, BD), b)
    _fwd_kernel[grid](
        u, delta, A, B, C, D_ if D_ is not None else last, zz,
        bias_ if bias_ is not None else last, h0_ if h0_ is not None else last,
        seq if seq is not None else last, out, last, ckpt,
        L, d, n, d // G,
        *u.stride(), *delta.stride(), *zz.stride(), *sB, *sC, *A.stride(),
        *(seq.stride() if seq is not None else (0, 0)),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), HAS_H0=initial_state is not None, HAS_SEQ=seq is not None,
        SAVE_CKPT=save, BLOCK_D=BD, NP=NP, BLOCK_T=BT, num_warps=8 if NP * BT * BD >= 8192 else 4,
    )
    return out, last, (ckpt if save else None), seq


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus):
        save = any(ctx.needs_input_grad)
        out, last, ckpt, seq = _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    initial_state, seq_idx, save)
        ctx.set_materialize_grads(False)      # no zero-filled dlast when last_state is unused
        ctx.softplus = bool(delta_softplus)
        ctx.has_h0 = initial_state is not None
        ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, seq, ckpt)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, seq, ckpt = ctx.saved_tensors
        b, d, L = u.shape
        n = A.shape[1]
        if dout is None:
            dout = torch.zeros(b, d, L, device=u.device, dtype=u.dtype)
        Bv, G, sB = _bc_view(B)
        Cv, _, sC = _bc_view(C)
        NP, BT, _, BD = _tiles(d, n, d // G, G > 1)
        dev = u.device
        f32 = dict(device=dev, dtype=torch.float32)
        du = torch.empty(b, d, L, device=dev, dtype=u.dtype)
        ddelta = torch.empty(b, d, L, device=dev, dtype=delta.dtype)
        dz = torch.empty(b, d, L, device=dev, dtype=z.dtype) if z is not None else None
        dB = torch.zeros(b, G, n, L, **f32)
        dC = torch.zeros(b, G, n, L, **f32)
        dA = torch.empty(b, d, n, **f32)
        dD = torch.empty(b, d, **f32) if D is not None else None
        dbias = torch.empty(b, d, **f32) if delta_bias is not None else None
        dh0 = torch.empty(b, d, n, **f32) if ctx.has_h0 else None
        D_, bias_ = _f32c(D), _f32c(delta_bias)
        dlast_ = _f32c(dlast)
        zz = z if z is not None else u
        dummy = dA
        _bwd_kernel[(triton.cdiv(d, BD), b)](
            u, delta, A, Bv, Cv, D_ if D_ is not None else dummy, zz,
            bias_ if bias_ is not None else dummy, seq if seq is not None else dummy, ckpt,
            dout, dlast_ if dlast_ is not None else dummy,
            du, ddelta, dz if dz is not None else dummy, dB, dC, dA,
            dD if dD is not None else dummy, dbias if dbias is not None else dummy,
            dh0 if dh0 is not None else dummy,
            L, d, n, d // G, G,
            *u.stride(), *delta.stride(), *zz.stride(), *sB, *sC, *A.stride(),
            *(seq.stride() if seq is not None else (0, 0)), *dout.stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.softplus, HAS_SEQ=seq is not None, HAS_DLAST=dlast is not None,
            WANT_DH0=ctx.has_h0, BLOCK_D=BD, NP=NP, BLOCK_T=BT, CKPT_T=BT,
            num_warps=8 if NP * BT * BD >= 8192 else 4,
        )
        dB = dB.to(B.dtype) if B.dim() == 4 else dB[:, 0].to(B.dtype)
        dC = dC.to(C.dtype) if C.dim() == 4 else dC[:, 0].to(C.dtype)
        return (du, ddelta, dA.sum(0).to(A.dtype), dB, dC,
                dD.sum(0).to(D.dtype) if D is not None else None, dz,
                dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
                dh0.to(ctx.h0_dtype) if dh0 is not None else None, None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False, seq_idx=None):
    """Triton selective scan; see reference.selective_scan for shapes and semantics."""
    out, last = _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                     delta_softplus)
    return (out, last) if return_last_state else out


# ----------------------------------------------------------------------------------------------
# decode step
@triton.jit
def _update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    d, n, cpg,
    ss_b, ss_d, ss_n, sx_b, sx_d, sdt_b, sdt_d, sA_d, sA_n, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
    sz_b, sz_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, NP: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    mask_d = offs_d < d
    mask_n = offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]
    grp = (pid_d * BLOCK_D) // cpg
    sp = state_ptr + b * ss_b + offs_d[:, None] * ss_d + offs_n[None, :] * ss_n
    h = tl.load(sp, mask=mask_dn, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + b * sx_b + offs_d * sx_d, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * sdt_b + offs_d * sdt_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = _softplus(dt)
    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0)
    Bv = tl.load(B_ptr + b * sB_b + grp * sB_g + offs_n * sB_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * sC_b + grp * sC_g + offs_n * sC_n, mask=mask_n, other=0.0).to(tl.float32)
    h = tl.exp(dt[:, None] * A.to(tl.float32)) * h + (dt * x)[:, None] * Bv[None, :]
    tl.store(sp, h.to(state_ptr.dtype.element_ty), mask=mask_dn)
    y = tl.sum(h * Cv[None, :], axis=1)
    if HAS_D:
        y += tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) * x
    if HAS_Z:
        zv = tl.load(z_ptr + b * sz_b + offs_d * sz_d, mask=mask_d, other=0.0).to(tl.float32)
        y = y * zv * tl.sigmoid(zv)
    tl.store(y_ptr + b * d + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Triton decode step; see reference.selective_state_update."""
    b, d = x.shape
    n = A.shape[1]
    G = 1 if B.dim() == 2 else B.shape[1]
    sB = (B.stride(0), 0, B.stride(1)) if B.dim() == 2 else tuple(B.stride())
    sC = (C.stride(0), 0, C.stride(1)) if C.dim() == 2 else tuple(C.stride())
    NP = max(2, triton.next_power_of_2(n))
    BD = max(1, min(64, 4096 // NP, triton.next_power_of_2(d)))
    if G > 1:
        BD = _pow2_divisor(d // G, BD)
    y = torch.empty(b, d, device=x.device, dtype=x.dtype)
    zz = z if z is not None else x
    _update_kernel[(triton.cdiv(d, BD), b)](
        state, x, dt, A, B, C, D if D is not None else x, zz,
        dt_bias if dt_bias is not None else x, y, d, n, d // G,
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *sB, *sC, *zz.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(dt_softplus), BLOCK_D=BD, NP=NP, num_warps=4,
    )
    return y
