"""Mamba-1 selective scan in Triton: forward, backward and the decode step.

Same signatures and semantics as ``reference.py`` (math in fp32, also for fp64 inputs).
NOTES.md has the design; docs/kernel-tuning.md the measurements.

One program per (batch, channel block[, time chunk]) keeps the (BLOCK_D, N) state in registers
and walks time in 8-step tiles: (BLOCK_D, 8) tile loads one tile ahead, per-channel math on the
tile (kept off the state's repeated lanes: ``_pin``), ``tl.split`` into 8 columns and an
unrolled recurrence (``_fwd_seq_kernel``; the state in rows of 8 or 16 states per thread at
n >= 32, ``_to_rows``; B and C read per step from time-major copies, ``_time_major``, a tile
ahead where registers allow, ``bc_prefetch``; at n16 y is summed across a channel's lanes by a
reduce-scatter, ``_sum_lanes8``). Small grids split time into chunks (a states-only pass,
``_chunk_carry_kernel``, the real pass). The backward (``_bwd_seq_kernel``) walks the
tiles in reverse from per-tile checkpoints, recomputing the 8 states in registers; dB/dC are
reduced over the channel block per tile and added with fp32 atomics.

The first version (``tl.associative_scan`` over time tiles, ~6x slower: time landed across the
lanes) is described in NOTES.md and docs/kernel-tuning.md; it is no longer in the code.

seq_idx (b, l) int marks packed sequences: where the id changes the decay is 0 (state restarts).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from hybridlab.kernels import knobs
from hybridlab.kernels.grad_mode import wants_grad
from hybridlab.kernels.launch import FastKernel

_INTERPRET = knobs.INTERPRET
#: the forward's inline PTX (softplus, gate, y's reduce-scatter: _ex2_ftz, _silu, _sum_lanes8);
#: the interpreter cannot run PTX and takes their tl twins
FAST_PTX = not _INTERPRET


# ----------------------------------------------------------------------------------------------
# helpers
@triton.jit
def _softplus(x):
    # log1p(e) as log(w) * e / (w - 1) keeps full precision for tiny e; = x above 20 (threshold)
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    sp = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
    return tl.where(x > 20.0, x, sp)


@triton.jit
def _ex2_ftz(x):
    """2^x by the GPU's ex2.approx.ftz: one MUFU op. tl.exp's ex2.approx (no ftz) costs three
    more (a compare and two scalings that keep denormal results), which only ever matter here
    below 2^-126, where ftz gives 0."""
    return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                     is_pure=True, pack=1)


@triton.jit
def _softplus_fwd(x, FAST: tl.constexpr):
    """softplus for the forward's dt, cheaper than _softplus: max(x, 0) + log1p(exp(-|x|)), with
    log1p(e) by its series below e = 0.05 (to e^4: error < e^4/5 relative), else log2(1 + e) ln 2.
    FAST: the GPU's ex2.approx.ftz and lg2.approx.ftz (absolute error 2^-22.6, so < 2.4e-6
    relative at log2(1.05); libdevice's log costs ~25 instructions, a state update ~5; 1 + e is
    never denormal); the interpreter cannot run PTX and takes tl.exp, tl.log2. = x above 20, as
    _softplus. The series to e^6 below 0.1 (< 1e-6 relative) made the b4 forward 0.514 ms,
    against 0.483-0.487 for this one in other calls (H100, 2026-11-23, scripts/gpu/ss_bench.py;
    selective_scan/NOTES.md)."""
    if FAST:
        e = _ex2_ftz(-tl.abs(x) * 1.4426950408889634)
        w = 1.0 + e
        lg = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [w], dtype=tl.float32,
                                       is_pure=True, pack=1)
    else:
        e = tl.exp(-tl.abs(x))
        w = 1.0 + e
        lg = tl.log2(w)
    series = e * (1.0 + e * (-0.5 + e * (0.3333333333333333 - 0.25 * e)))
    lp = tl.where(e < 0.05, series, lg * 0.6931471805599453)
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + lp)


@triton.jit
def _silu(z, FAST: tl.constexpr):
    """z * sigmoid(z); FAST: as 1 / (1 + 2^(-z log2 e)) by ex2.approx.ftz and rcp.approx.ftz (two
    MUFU ops; tl.sigmoid adds denormal handling to both, ~6 instructions per element)."""
    if FAST:
        r = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r",
                                      [1.0 + _ex2_ftz(z * -1.4426950408889634)], dtype=tl.float32,
                                      is_pure=True, pack=1)
        return z * r
    return z * tl.sigmoid(z)


@triton.jit
def _pin(x, PIN: tl.constexpr):
    """x, through a sum over a new unit-size axis (one add): the layout pass does not carry a
    conversion back through a reduction, so the math that made x stays in x's own layout."""
    if PIN:
        return tl.sum(tl.join(x, tl.zeros_like(x)), axis=len(x.shape))
    return x


@triton.jit
def _softplus_grad(x):
    return tl.where(x > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-tl.minimum(x, 20.0))))


@triton.jit
def _restarts(seq_ptr, offs_t, L, s_t):
    """(BLOCK_T,) True where a new packed sequence starts at t (t > 0 and the id changes)."""
    m = (offs_t > 0) & (offs_t < L)
    cur = tl.load(seq_ptr + offs_t * s_t, mask=m, other=0)
    prev = tl.load(seq_ptr + (offs_t - 1) * s_t, mask=m, other=0)
    return m & (cur != prev)


# ----------------------------------------------------------------------------------------------
# forward
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
def _steps8(row, t0, s_l: tl.constexpr):
    """The (NP,) vectors row[t * s_l] of the 8 steps t0..t0+7, unmasked: B or C time-major
    (SEQ_BC_TIME_MAJOR, _time_major pads time to whole tiles), each step's vector in the state's
    column layout."""
    at = row + t0 * s_l                         # then constant offsets: immediates in the loads
    out = ()
    for j in tl.static_range(8):
        out = out + (tl.load(at + j * s_l),)
    return out


@triton.jit
def _tile8(base, t, s_l, mask_rows, t_hi):
    """The (rows, 8) tile base[row, (t..t+7) * s_l] (base: (rows, 1) pointers), zeros at masked
    rows and from step t_hi on."""
    offs = t + tl.arange(0, 8)
    return tl.load(base + offs[None, :] * s_l, mask=mask_rows[:, None] & (offs < t_hi)[None, :], other=0.0)


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



# y_t = sum_n h_n C_tn with a channel's 16 states on 4 lanes (4 per thread): summing each step
# across the lanes takes 2 shuffle rounds per step (16 per tile), and the 8 results, the same on
# all 4 lanes, then change layout through shared memory to be stored. A reduce-scatter instead
# (SEQ_REDUCE_SCATTER): in round 1 lanes trade 4 of their 8 steps' partials with the lane 2
# away, in round 2 one of the remaining 2 pairs with the lane 1 away: 6 shuffles per tile, and
# lane k ends with the sums of steps 2k and 2k + 1, the tile's load layout.
_RS_ASM = tl.constexpr("""{
.reg .pred p1, p0;
.reg .b32 l, s, r, k0, k1, k2, k3, w;
mov.u32 l, %laneid;
and.b32 s, l, 2; setp.ne.u32 p1, s, 0;
and.b32 s, l, 1; setp.ne.u32 p0, s, 0;
selp.b32 s, $2, $6, p1; shfl.sync.bfly.b32 r, s, 2, 31, -1; selp.b32 k0, $6, $2, p1; add.f32 k0, k0, r;
selp.b32 s, $3, $7, p1; shfl.sync.bfly.b32 r, s, 2, 31, -1; selp.b32 k1, $7, $3, p1; add.f32 k1, k1, r;
selp.b32 s, $4, $8, p1; shfl.sync.bfly.b32 r, s, 2, 31, -1; selp.b32 k2, $8, $4, p1; add.f32 k2, k2, r;
selp.b32 s, $5, $9, p1; shfl.sync.bfly.b32 r, s, 2, 31, -1; selp.b32 k3, $9, $5, p1; add.f32 k3, k3, r;
selp.b32 s, k0, k2, p0; shfl.sync.bfly.b32 r, s, 1, 31, -1; selp.b32 w, k2, k0, p0; add.f32 $0, w, r;
selp.b32 s, k1, k3, p0; shfl.sync.bfly.b32 r, s, 1, 31, -1; selp.b32 w, k3, k1, p0; add.f32 $1, w, r;
}""")


@triton.jit
def _sum_lanes8(p, FAST: tl.constexpr):
    """8 steps' (R, 4) per-lane partial sums -> the (R, 8) tile of their sums over the 4."""
    if FAST:
        lo, hi = tl.inline_asm_elementwise(_RS_ASM, "=r,=r,r,r,r,r,r,r,r,r",
                                           [p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]],
                                           dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        R: tl.constexpr = lo.shape[0]
        return tl.reshape(tl.join(lo, hi), (R, 8))
    ys = ()
    for j in tl.static_range(8):
        ys = ys + (tl.sum(p[j], axis=1),)
    return _join8(ys)


# The state in rows (ROWS_LOG > 0): Triton lays a (BLOCK_D, NP) tile out from its n-contiguous
# loads, 4 states per thread, so at n64 a channel spans 16 lanes: its per-channel math runs 16
# times and y_t needs 4 shuffle rounds. tl.join makes its new (last) dimension thread-local, so a
# state built from 2**ROWS_LOG joined (BLOCK_D, K) columns keeps that many states per thread and a
# channel on K = NP >> ROWS_LOG lanes. The state's loads and stores go column by column.
@triton.constexpr_function
def _bitrev(p, bits):
    """p with its `bits` low bits reversed: the order in which tl.split hands out columns."""
    return int(format(p, f"0{bits}b")[::-1], 2) if bits else 0


@triton.jit
def _to_rows(cols, LOG_S: tl.constexpr):
    """2**LOG_S (R, K) columns (column j: states k*S + j) -> (R, K*S), each thread's S in
    registers."""
    S: tl.constexpr = 1 << LOG_S
    R: tl.constexpr = cols[0].shape[0]
    K: tl.constexpr = cols[0].shape[1]
    parts = ()
    for p in tl.static_range(S):
        parts = parts + (cols[_bitrev(p, LOG_S)],)
    for lev in tl.static_range(LOG_S):      # each level joins pairs: one more thread-local dim
        nxt = ()
        for i in tl.static_range(S >> (lev + 1)):
            nxt = nxt + (tl.join(parts[2 * i], parts[2 * i + 1]),)
        parts = nxt
    return tl.reshape(parts[0], (R, K * S))


@triton.jit
def _from_rows(x, K: tl.constexpr, LOG_S: tl.constexpr):
    """The inverse of _to_rows: (R, K*S) -> its S (R, K) columns, in order."""
    S: tl.constexpr = 1 << LOG_S
    R: tl.constexpr = x.shape[0]
    tl.static_assert(LOG_S >= 1 and LOG_S <= 4, "rows of 2 to 16 states")
    if LOG_S == 1:
        parts = (tl.reshape(x, (R, K, 2)),)
    elif LOG_S == 2:
        parts = (tl.reshape(x, (R, K, 2, 2)),)
    elif LOG_S == 3:
        parts = (tl.reshape(x, (R, K, 2, 2, 2)),)
    else:
        parts = (tl.reshape(x, (R, K, 2, 2, 2, 2)),)
    for lev in tl.static_range(LOG_S):
        nxt = ()
        for i in tl.static_range(1 << lev):
            a, b = tl.split(parts[i])
            nxt = nxt + (a, b)
        parts = nxt
    cols = ()
    for j in tl.static_range(S):
        cols = cols + (parts[_bitrev(j, LOG_S)],)
    return cols


@triton.jit
def _state_load(ptr, row_off, n, s_n, mask_d, NP: tl.constexpr, ROWS_LOG: tl.constexpr):
    """(BLOCK_D, NP) fp32 of ptr[row_off[i] + j * s_n] (0 where j >= n or the row is masked),
    in rows of 2**ROWS_LOG states per thread, or in Triton's layout (ROWS_LOG 0)."""
    if ROWS_LOG == 0:
        offs_n = tl.arange(0, NP)
        return tl.load(ptr + row_off[:, None] + offs_n[None, :] * s_n,
                       mask=mask_d[:, None] & (offs_n[None, :] < n), other=0.0).to(tl.float32)
    else:
        S: tl.constexpr = 1 << ROWS_LOG
        offs_k = tl.arange(0, NP // S) * S
        cols = ()
        for j in tl.static_range(S):
            cols = cols + (tl.load(ptr + row_off[:, None] + (offs_k + j)[None, :] * s_n,
                                   mask=mask_d[:, None] & (offs_k + j < n)[None, :], other=0.0).to(tl.float32),)
        return _to_rows(cols, ROWS_LOG)


@triton.jit
def _state_store(ptr, row_off, x, n, mask_d, NP: tl.constexpr, ROWS_LOG: tl.constexpr):
    """Store a (BLOCK_D, NP) state as _state_load reads it (unit n stride)."""
    if ROWS_LOG == 0:
        offs_n = tl.arange(0, NP)
        tl.store(ptr + row_off[:, None] + offs_n[None, :], x, mask=mask_d[:, None] & (offs_n[None, :] < n))
    else:
        S: tl.constexpr = 1 << ROWS_LOG
        offs_k = tl.arange(0, NP // S) * S
        cols = _from_rows(x, NP // S, ROWS_LOG)
        for j in tl.static_range(S):
            tl.store(ptr + row_off[:, None] + (offs_k + j)[None, :], cols[j],
                     mask=mask_d[:, None] & (offs_k + j < n)[None, :])


@triton.jit
def _fwd_seq_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hin_ptr, seq_ptr,
    out_ptr, last_ptr, ckpt_ptr, S_ptr, P_ptr,
    L, d, n, cpg, CHUNK, NC,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sA_d, sA_n, sseq_b, sseq_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_HIN: tl.constexpr, HAS_SEQ: tl.constexpr, SAVE_CKPT: tl.constexpr,
    STATES_ONLY: tl.constexpr,
    BLOCK_D: tl.constexpr, NP: tl.constexpr, CKPT_T: tl.constexpr, FAST: tl.constexpr,
    ROWS_LOG: tl.constexpr, CHEAP_SP: tl.constexpr, PIN: tl.constexpr, BC_T: tl.constexpr,
    BC_PF: tl.constexpr, RS: tl.constexpr,
):
    """Program (channel block, batch, time chunk c of CHUNK steps).
    STATES_ONLY (pass 1 of a chunked scan): run chunk c from a zero state, store its end state
    S[b, c] and its decay P[b, c] = prod_t a_t = exp(A sum_t dt_t) (0 if a packed sequence starts
    inside), nothing else. Otherwise: start from hin[b, c] (HAS_HIN) or 0, store out (and the
    checkpoints), and the last state from the last chunk."""
    T: tl.constexpr = 8
    LOG2E: tl.constexpr = 1.4426950408889634
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    tt = tl.arange(0, T)
    mask_d = offs_d < d
    grp = (pid_d * BLOCK_D) // cpg

    # exp(x A) = exp2(x A2)
    A2 = _state_load(A_ptr, offs_d * sA_d, n, sA_n, mask_d, NP, ROWS_LOG) * LOG2E
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    d_off = offs_d * n                          # a (d, n) state's rows
    if HAS_HIN and not STATES_ONLY:
        h = _state_load(hin_ptr + (b * NC + c) * d * n, d_off, n, 1, mask_d, NP, ROWS_LOG)
    else:
        h = tl.zeros_like(A2)                   # in A2's layout (rows or Triton's)
    sdt = tl.zeros((BLOCK_D,), tl.float32)
    nrestart = tl.zeros((BLOCK_D,), tl.float32)

    u_base = u_ptr + b * su_b + offs_d[:, None] * su_d
    dt_base = delta_ptr + b * sdt_b + offs_d[:, None] * sdt_d
    z_base = z_ptr + b * sz_b + offs_d[:, None] * sz_d
    o_base = out_ptr + b * d * L + offs_d[:, None] * L
    B_row = B_ptr + b * sB_b + grp * sB_g + offs_n * sB_n      # BC_T: one step's (NP,) vector
    C_row = C_ptr + b * sC_b + grp * sC_g + offs_n * sC_n
    B_base = B_row[:, None]                                     # else (NP, 8) tiles
    C_base = C_row[:, None]
    n_ckpt = tl.cdiv(L, CKPT_T)
    t_lo = c * CHUNK
    t_hi = tl.minimum(t_lo + CHUNK, L)
    # the next tile's inputs are loaded one iteration ahead (their latency hides behind a tile)
    mask_n = offs_n < n
    u_nx = _tile8(u_base, t_lo, su_l, mask_d, t_hi)
    dt_nx = _tile8(dt_base, t_lo, sdt_l, mask_d, t_hi)
    if not BC_T:
        B_nx = _tile8(B_base, t_lo, sB_l, mask_n, t_hi)
    elif BC_PF:     # time-major B and C a tile ahead too (_time_major pads one more tile)
        B_nx = _steps8(B_row, t_lo, NP)
    if not STATES_ONLY:
        if not BC_T:
            C_nx = _tile8(C_base, t_lo, sC_l, mask_n, t_hi)
        elif BC_PF:
            C_nx = _steps8(C_row, t_lo, NP)
        if HAS_Z:
            z_nx = _tile8(z_base, t_lo, sz_l, mask_d, t_hi)
    # BC_PF: unrolled by 2 in the source (static_range), so the two tiles' B, C registers
    # alternate with no moves between them. The tile count is rounded up to even (a last tile past
    # t_hi is all masked: a = 1, no input, nothing stored), so there is no remainder loop: with
    # Triton's loop_unroll_factor=2 the remainder's copy made the main loop load B and C a second
    # time in its layout (16 scalar loads per pair, 226 registers; scripts/kernel_regs.py).
    UNROLL: tl.constexpr = 2 if BC_PF else 1
    t_end = t_lo + tl.cdiv(t_hi - t_lo, UNROLL * T) * (UNROLL * T)
    for t00 in tl.range(t_lo, t_end, UNROLL * T):
        for k in tl.static_range(UNROLL):
            t0 = t00 + k * T
            if SAVE_CKPT:
                if (t0 % CKPT_T == 0) & (t0 < t_hi):
                    _state_store(ckpt_ptr + (b * n_ckpt + t0 // CKPT_T) * d * n, d_off, h, n, mask_d, NP, ROWS_LOG)
            if BC_T and not BC_PF:      # L2-resident (every channel block of the batch reads them)
                B_nx = _steps8(B_row, t0, NP)       # time-major rows are NP apart (_time_major):
                if not STATES_ONLY:                 # constant offsets, no address math per load
                    C_nx = _steps8(C_row, t0, NP)
            u = u_nx.to(tl.float32)
            dt = dt_nx.to(tl.float32)
            Bt = B_nx
            if not STATES_ONLY:
                Ct = C_nx
                if HAS_Z:
                    zt = z_nx.to(tl.float32)
            if BC_PF:                   # the next tile's, issued a whole tile before their use
                B_nx = _steps8(B_row, t0 + T, NP)
                if not STATES_ONLY:
                    C_nx = _steps8(C_row, t0 + T, NP)
            u_nx = _tile8(u_base, t0 + T, su_l, mask_d, t_hi)
            dt_nx = _tile8(dt_base, t0 + T, sdt_l, mask_d, t_hi)
            if not BC_T:
                B_nx = _tile8(B_base, t0 + T, sB_l, mask_n, t_hi)
            if not STATES_ONLY:
                if not BC_T:
                    C_nx = _tile8(C_base, t0 + T, sC_l, mask_n, t_hi)
                if HAS_Z:
                    z_nx = _tile8(z_base, t0 + T, sz_l, mask_d, t_hi)
            offs_t = t0 + tt
            mask_t = offs_t < L
            m2 = mask_d[:, None] & mask_t[None, :]
            if HAS_BIAS:
                dt = dt + bias[:, None]
            if SOFTPLUS:
                if CHEAP_SP:    # see SEQ_CHEAP_SOFTPLUS_MAX_NP
                    dt = _softplus_fwd(dt, FAST)
                else:
                    dt = _softplus(dt)
            dt = _pin(tl.where(m2, dt, 0.0), PIN)     # padded steps: a = 1, no input (identity)
            dtu = _pin(dt * u, PIN)
            dtc = _cols8(dt)
            dtuc = _cols8(dtu)
            Bc = Bt if BC_T else _cols8(Bt.to(tl.float32))
            if not STATES_ONLY:
                Cc = Ct if BC_T else _cols8(Ct.to(tl.float32))
            if HAS_SEQ:
                cut = _restarts(seq_ptr + b * sseq_b, offs_t, L, sseq_l)
                keep = _cols8(tl.where(cut[None, :], 0.0, 1.0) + tl.zeros((BLOCK_D, T), tl.float32))
                if STATES_ONLY:
                    nrestart += tl.sum(tl.where(cut[None, :], 1.0, 0.0) + tl.zeros((BLOCK_D, T), tl.float32), axis=1)
            if STATES_ONLY:
                sdt += tl.sum(dt, axis=1)
                for j in tl.static_range(T):
                    a = tl.exp2(dtc[j][:, None] * A2)
                    if HAS_SEQ:
                        a = a * keep[j][:, None]
                    h = a * h + dtuc[j][:, None] * Bc[j][None, :]
            else:
                ys = ()
                for j in tl.static_range(T):
                    a = tl.exp2(dtc[j][:, None] * A2)
                    if HAS_SEQ:
                        a = a * keep[j][:, None]
                    h = a * h + dtuc[j][:, None] * Bc[j][None, :]
                    if RS:      # each thread's partial sum over its own 4 states; lanes next
                        ys = ys + (tl.sum(tl.reshape(h * Cc[j][None, :], (BLOCK_D, NP // 4, 4)), axis=2),)
                    else:
                        ys = ys + (tl.sum(h * Cc[j][None, :], axis=1),)
                y = _sum_lanes8(ys, FAST) if RS else _join8(ys)
                if HAS_D:
                    y += Dv[:, None] * u
                if HAS_Z:
                    y = y * _silu(zt, FAST)
                tl.store(o_base + offs_t[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)
    if STATES_ONLY:
        cb = (b * NC + c) * d * n
        _state_store(S_ptr + cb, d_off, h, n, mask_d, NP, ROWS_LOG)
        P = tl.exp2(sdt[:, None] * A2)
        if HAS_SEQ:
            P = tl.where(nrestart[:, None] > 0.0, 0.0, P)
        _state_store(P_ptr + cb, d_off, P, n, mask_d, NP, ROWS_LOG)
    else:
        if c == NC - 1:
            _state_store(last_ptr + b * d * n, d_off, h, n, mask_d, NP, ROWS_LOG)


@triton.jit
def _chunk_carry_kernel(P_ptr, S_ptr, X_ptr, NC, DN, REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """Carry states across time chunks, per batch b over (d, n) elements, all (b, NC, d, n) fp32.
    Forward: X[c] = P[c-1] X[c-1] + S[c-1] for c = 1..NC-1 (X[0] given: the initial state).
    Reverse (the backward's adjoint carry): X[c] = P[c+1] X[c+1] + S[c+1] for c = NC-2..0
    (X[NC-1] given: d last_state)."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < DN
    base = b * NC * DN + offs
    if REVERSE:
        x = tl.load(X_ptr + base + (NC - 1) * DN, mask=m, other=0.0)
        for i in range(0, NC - 1):
            c = NC - 2 - i
            x = tl.load(P_ptr + base + (c + 1) * DN, mask=m, other=0.0) * x + \
                tl.load(S_ptr + base + (c + 1) * DN, mask=m, other=0.0)
            tl.store(X_ptr + base + c * DN, x, mask=m)
    else:
        x = tl.load(X_ptr + base, mask=m, other=0.0)
        for c in range(1, NC):
            x = tl.load(P_ptr + base + (c - 1) * DN, mask=m, other=0.0) * x + \
                tl.load(S_ptr + base + (c - 1) * DN, mask=m, other=0.0)
            tl.store(X_ptr + base + c * DN, x, mask=m)


# ----------------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------------
# backward, sequential in registers (v2)
@triton.jit
def _join8_3d(c):
    """8 (R, S) tensors -> (R, S, 8), in order."""
    R: tl.constexpr = c[0].shape[0]
    S: tl.constexpr = c[0].shape[1]
    e0 = tl.join(c[0], c[4])
    e1 = tl.join(c[2], c[6])
    o0 = tl.join(c[1], c[5])
    o1 = tl.join(c[3], c[7])
    e = tl.reshape(tl.join(e0, e1), (R, S, 4))
    o = tl.reshape(tl.join(o0, o1), (R, S, 4))
    return tl.reshape(tl.join(e, o), (R, S, 8))


@triton.jit
def _bwd_seq_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr, ckpt_ptr,
    dout_ptr, xin_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, d, n, cpg, G, CHUNK, NC,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sA_d, sA_n, sseq_b, sseq_l,
    sdo_b, sdo_d, sdo_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_XIN: tl.constexpr, WANT_DH0: tl.constexpr,
    BLOCK_D: tl.constexpr, NP: tl.constexpr, PREFETCH: tl.constexpr, PIN: tl.constexpr,
    BC_T: tl.constexpr,
):
    """Program (channel block, batch, time chunk c of CHUNK steps): the adjoint carry entering
    the chunk from the right is xin[b, c] (HAS_XIN; else 0); dA, dD, d bias partials go to row
    (b, c). Reverse walk over 8-step tiles. Per tile: the 8 states are recomputed from the tile's
    checkpoint (the forward saved one per tile) and kept in registers with their decays, then
    the adjoint runs backwards: g_t = C_t dy_t + a_{t+1} g_{t+1}, carried as ga = a_t g_t.
    h_{t-1} is the recomputed state itself (no h_t - dt u B difference). dB and dC (sums over
    channels) are reduced over the block once per tile and added with one atomic per (n, t)."""
    T: tl.constexpr = 8
    LOG2E: tl.constexpr = 1.4426950408889634
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    tt = tl.arange(0, T)
    mask_d = offs_d < d
    mask_nn = offs_n[:, None] < n
    mask_dn = mask_d[:, None] & (offs_n[None, :] < n)
    grp = (pid_d * BLOCK_D) // cpg

    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0)
    A = A.to(tl.float32)
    A2 = A * LOG2E
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    dn_off = offs_d[:, None] * n + offs_n[None, :]
    if HAS_XIN:
        ga = tl.load(xin_ptr + (b * NC + c) * d * n + dn_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        ga = tl.zeros((BLOCK_D, NP), tl.float32)
    dA_acc = tl.zeros((BLOCK_D, NP), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)

    u_base = u_ptr + b * su_b + offs_d[:, None] * su_d
    dt_base = delta_ptr + b * sdt_b + offs_d[:, None] * sdt_d
    z_base = z_ptr + b * sz_b + offs_d[:, None] * sz_d
    do_base = dout_ptr + b * sdo_b + offs_d[:, None] * sdo_d
    io_base = b * d * L + offs_d[:, None] * L
    B_row = B_ptr + b * sB_b + grp * sB_g + offs_n * sB_n      # BC_T: one step's (NP,) vector
    C_row = C_ptr + b * sC_b + grp * sC_g + offs_n * sC_n
    B_base = B_row[:, None]                                     # else (NP, 8) tiles
    C_base = C_row[:, None]
    dBC_base = (b * G + grp) * n * L + offs_n[:, None] * L
    n_tiles = tl.cdiv(L, T)
    tile_lo = c * (CHUNK // T)
    tile_hi = tl.minimum(tile_lo + CHUNK // T, n_tiles)
    # PREFETCH: the previous tile's inputs (next in this walk) are loaded one iteration ahead
    if PREFETCH:
        tile = tile_hi - 1
        offs_t = tile * T + tt
        m2 = mask_d[:, None] & (offs_t < L)[None, :]
        mnt = mask_nn & (offs_t < L)[None, :]
        h_nx = tl.load(ckpt_ptr + (b * n_tiles + tile) * d * n + dn_off, mask=mask_dn, other=0.0)
        u_nx = tl.load(u_base + offs_t[None, :] * su_l, mask=m2, other=0.0)
        dt_nx = tl.load(dt_base + offs_t[None, :] * sdt_l, mask=m2, other=0.0)
        if not BC_T:
            B_nx = tl.load(B_base + offs_t[None, :] * sB_l, mask=mnt, other=0.0)
            C_nx = tl.load(C_base + offs_t[None, :] * sC_l, mask=mnt, other=0.0)
        do_nx = tl.load(do_base + offs_t[None, :] * sdo_l, mask=m2, other=0.0)
        if HAS_Z:
            z_nx = tl.load(z_base + offs_t[None, :] * sz_l, mask=m2, other=0.0)
    for it in range(0, tile_hi - tile_lo):
        tile = tile_hi - 1 - it
        t0 = tile * T
        if PREFETCH:
            h = h_nx
            u = u_nx.to(tl.float32)
            raw = dt_nx.to(tl.float32)
            if not BC_T:
                Bt = B_nx.to(tl.float32)
                Ct = C_nx.to(tl.float32)
            dout = do_nx.to(tl.float32)
            if HAS_Z:
                zt = z_nx.to(tl.float32)
            pv = tile - 1                                   # masked off below the chunk
            offs_p = pv * T + tt
            okp = offs_p >= tile_lo * T                    # (T,): the tile is in the chunk
            m2p = mask_d[:, None] & okp[None, :]
            mntp = mask_nn & okp[None, :]
            okh = (tl.zeros((BLOCK_D, NP), tl.int32) + pv) >= tile_lo
            h_nx = tl.load(ckpt_ptr + (b * n_tiles + pv) * d * n + dn_off, mask=mask_dn & okh, other=0.0)
            u_nx = tl.load(u_base + offs_p[None, :] * su_l, mask=m2p, other=0.0)
            dt_nx = tl.load(dt_base + offs_p[None, :] * sdt_l, mask=m2p, other=0.0)
            if not BC_T:
                B_nx = tl.load(B_base + offs_p[None, :] * sB_l, mask=mntp, other=0.0)
                C_nx = tl.load(C_base + offs_p[None, :] * sC_l, mask=mntp, other=0.0)
            do_nx = tl.load(do_base + offs_p[None, :] * sdo_l, mask=m2p, other=0.0)
            if HAS_Z:
                z_nx = tl.load(z_base + offs_p[None, :] * sz_l, mask=m2p, other=0.0)
        else:
            offs_c = t0 + tt
            m2c = mask_d[:, None] & (offs_c < L)[None, :]
            mntc = mask_nn & (offs_c < L)[None, :]
            h = tl.load(ckpt_ptr + (b * n_tiles + tile) * d * n + dn_off, mask=mask_dn, other=0.0)
            u = tl.load(u_base + offs_c[None, :] * su_l, mask=m2c, other=0.0).to(tl.float32)
            raw = tl.load(dt_base + offs_c[None, :] * sdt_l, mask=m2c, other=0.0).to(tl.float32)
            if not BC_T:
                Bt = tl.load(B_base + offs_c[None, :] * sB_l, mask=mntc, other=0.0).to(tl.float32)
                Ct = tl.load(C_base + offs_c[None, :] * sC_l, mask=mntc, other=0.0).to(tl.float32)
            dout = tl.load(do_base + offs_c[None, :] * sdo_l, mask=m2c, other=0.0).to(tl.float32)
            if HAS_Z:
                zt = tl.load(z_base + offs_c[None, :] * sz_l, mask=m2c, other=0.0).to(tl.float32)
        offs_t = t0 + tt
        mask_t = offs_t < L
        m2 = mask_d[:, None] & mask_t[None, :]
        mnt = mask_nn & mask_t[None, :]
        if HAS_BIAS:
            raw = raw + bias[:, None]
        dt = raw
        if SOFTPLUS:
            dt = _softplus(raw)
        dt = _pin(tl.where(m2, dt, 0.0), PIN)
        dtu = _pin(dt * u, PIN)
        dtc = _cols8(dt)
        dtuc = _cols8(dtu)
        if BC_T:
            Bc = _steps8(B_row, t0, NP)
            Cc = _steps8(C_row, t0, NP)
        else:
            Bc = _cols8(Bt)
            Cc = _cols8(Ct)
        if HAS_SEQ:
            cut = _restarts(seq_ptr + b * sseq_b, offs_t, L, sseq_l)
            keep = _cols8(tl.where(cut[None, :], 0.0, 1.0) + tl.zeros((BLOCK_D, T), tl.float32))

        # -- recompute the tile's states (h_{t-1} of step j is hp[j]) and decays
        hp = ()
        av = ()
        ys = ()
        for j in tl.static_range(T):
            a = tl.exp2(dtc[j][:, None] * A2)
            if HAS_SEQ:
                a = a * keep[j][:, None]
            hp = hp + (h,)
            av = av + (a,)
            h = a * h + dtuc[j][:, None] * Bc[j][None, :]
            ys = ys + (tl.sum(h * Cc[j][None, :], axis=1),)
        hp = hp + (h,)                                      # hp[j + 1] = h_t of step j

        # -- output gate and D skip (tile-wide)
        if HAS_Z:
            y = _join8(ys)
            if HAS_D:
                y += Dv[:, None] * u
            sg = tl.sigmoid(zt)
            dy = dout * zt * sg
            dz = dout * y * sg * (1.0 + zt * (1.0 - sg))
            tl.store(dz_ptr + io_base + offs_t[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m2)
        else:
            dy = dout
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)
        dyc = _cols8(_pin(dy, PIN))

        # -- adjoint, reverse over the 8 steps
        dCs = ()
        dBs = ()
        gBs = ()
        gAs = ()
        for j in tl.static_range(T - 1, -1, -1):
            g = Cc[j][None, :] * dyc[j][:, None] + ga
            dCs = (hp[j + 1] * dyc[j][:, None],) + dCs
            dBs = (g * dtuc[j][:, None],) + dBs
            gah = g * av[j] * hp[j]                           # dL/da_t * a_t
            dA_acc += gah * dtc[j][:, None]
            gBs = (tl.sum(g * Bc[j][None, :], axis=1),) + gBs
            gAs = (tl.sum(gah * A, axis=1),) + gAs
            ga = av[j] * g
        dCt = tl.sum(_join8_3d(dCs), axis=0)                   # (NP, 8)
        dBt = tl.sum(_join8_3d(dBs), axis=0)
        tl.atomic_add(dC_ptr + dBC_base + offs_t[None, :], dCt, mask=mnt, sem="relaxed")
        tl.atomic_add(dB_ptr + dBC_base + offs_t[None, :], dBt, mask=mnt, sem="relaxed")
        gB = _join8(gBs)
        ddt = gB * u + _join8(gAs)
        du = gB * dt
        if HAS_D:
            du += dy * Dv[:, None]
        if SOFTPLUS:
            ddt = ddt * _softplus_grad(raw)
        ddt = tl.where(m2, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + io_base + offs_t[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddelta_ptr + io_base + offs_t[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)

    row = b * NC + c
    tl.store(dA_ptr + row * d * n + dn_off, dA_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + row * d + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + row * d + offs_d, dbias_acc, mask=mask_d)
    if WANT_DH0:        # d h_{-1} = a_0 g_0
        if c == 0:
            tl.store(dh0_ptr + b * d * n + dn_off, ga, mask=mask_dn)


@triton.jit
def _bwd_carry_kernel(
    delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, seq_ptr, dout_ptr, Y_ptr,
    L, d, n, cpg, CHUNK, NC,
    sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l, sC_b, sC_g, sC_n, sC_l, sA_d, sA_n, sseq_b, sseq_l,
    sdo_b, sdo_d, sdo_l,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr,
    BLOCK_D: tl.constexpr, NP: tl.constexpr, PIN: tl.constexpr,
):
    """Pass 1 of the chunked backward, program (channel block, batch, chunk c >= 1): the adjoint
    of chunk c alone (zero carry from the right), g_t = C_t dy_t + a_{t+1} g_{t+1}; stores
    Y[b, c] = a_t0 g_t0 at the chunk's first step. The true carry is linear in it (factor P[b, c])."""
    T: tl.constexpr = 8
    LOG2E: tl.constexpr = 1.4426950408889634
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2) + 1
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    tt = tl.arange(0, T)
    mask_d = offs_d < d
    mask_nn = offs_n[:, None] < n
    mask_dn = mask_d[:, None] & (offs_n[None, :] < n)
    grp = (pid_d * BLOCK_D) // cpg
    A2 = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0)
    A2 = A2.to(tl.float32) * LOG2E
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    ga = tl.zeros((BLOCK_D, NP), tl.float32)
    dt_base = delta_ptr + b * sdt_b + offs_d[:, None] * sdt_d
    z_base = z_ptr + b * sz_b + offs_d[:, None] * sz_d
    do_base = dout_ptr + b * sdo_b + offs_d[:, None] * sdo_d
    C_base = C_ptr + b * sC_b + grp * sC_g + offs_n[:, None] * sC_n
    n_tiles = tl.cdiv(L, T)
    tile_lo = c * (CHUNK // T)
    tile_hi = tl.minimum(tile_lo + CHUNK // T, n_tiles)
    for it in range(0, tile_hi - tile_lo):
        t0 = (tile_hi - 1 - it) * T
        offs_t = t0 + tt
        mask_t = offs_t < L
        m2 = mask_d[:, None] & mask_t[None, :]
        mnt = mask_nn & mask_t[None, :]
        dt = tl.load(dt_base + offs_t[None, :] * sdt_l, mask=m2, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + offs_t[None, :] * sC_l, mask=mnt, other=0.0).to(tl.float32)
        dy = tl.load(do_base + offs_t[None, :] * sdo_l, mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_base + offs_t[None, :] * sz_l, mask=m2, other=0.0).to(tl.float32)
            dy = dy * zt * tl.sigmoid(zt)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        dtc = _cols8(_pin(tl.where(m2, dt, 0.0), PIN))
        dyc = _cols8(_pin(dy, PIN))
        Cc = _cols8(Ct)
        if HAS_SEQ:
            cut = _restarts(seq_ptr + b * sseq_b, offs_t, L, sseq_l)
            keep = _cols8(tl.where(cut[None, :], 0.0, 1.0) + tl.zeros((BLOCK_D, T), tl.float32))
        for j in tl.static_range(T - 1, -1, -1):
            a = tl.exp2(dtc[j][:, None] * A2)
            if HAS_SEQ:
                a = a * keep[j][:, None]
            ga = a * (Cc[j][None, :] * dyc[j][:, None] + ga)
    tl.store(Y_ptr + (b * NC + c) * d * n + offs_d[:, None] * n + offs_n[None, :], ga, mask=mask_dn)


# ----------------------------------------------------------------------------------------------
# host side
# The launches go through FastKernel (launch.py): a Triton JIT launch takes 28-61 us of host time,
# and the forward's wall time includes the host time before its one big kernel starts.
_fast_fwd_seq_kernel = FastKernel(_fwd_seq_kernel)
_fast_chunk_carry_kernel = FastKernel(_chunk_carry_kernel)
_fast_bwd_carry_kernel = FastKernel(_bwd_carry_kernel)
_fast_bwd_seq_kernel = FastKernel(_bwd_seq_kernel)


def _pow2_divisor(x: int, cap: int) -> int:
    """Largest power of two <= cap that divides x."""
    p = 1
    while p * 2 <= cap and x % (p * 2) == 0:
        p *= 2
    return p


#: Tuning knobs. *_ELEMS: BLOCK_D * N-padded elements per program (sets BLOCK_D), *_WARPS: warps
#: per program, *_ROWS_LOG: the forward's state in rows of 2**ROWS_LOG states per thread
#: (_to_rows; 0: Triton's layout, 4 states per thread, channels on NP/4 lanes). Measured on the
#: H100 (scripts/gpu/ss_bench.py, 2026-11-23 15:3x-16:4x; selective_scan/NOTES.md):
#: - n <= 16 unsplit: one warp per 8 channels in Triton's layout, both ways (b4: 0.487 ms against
#:   0.641 in rows of 8 and 0.504 in rows of 4);
#: - n = 32: rows of 8, one warp per 8 to 16 channels (b4 n32 0.764 against 1.135); n <= 16 with
#:   time split into chunks (small grids: b1 l32768) was in rows of 8 too (1.313 against 1.420)
#:   until B and C were time-major (SEQ_SPLIT_IN_ROWS);
#: - n >= 64: rows of 16, one warp per 8 channels on 4 lanes each (b4 n64 1.286 against 2.248
#:   in Triton's layout with 4 warps, 16 lanes per channel; n128 4.322 against 5.843).
SEQ_ELEMS, SEQ_WARPS, SEQ_ROWS_LOG = 128, 1, 0
SEQ_ELEMS_MID, SEQ_WARPS_MID, SEQ_ROWS_LOG_MID = 256, 1, 3        # n = 32 (or split, below)
#: n <= 16 split in time takes the MID launch (rows of 8) instead of Triton's layout: no longer,
#: since Triton's layout reads B and C time-major there (b1 l32768 n16 forward 1.199 ms in rows,
#: without time-major B and C, against 1.051; f+b 4.622 against 4.446; H200, 2026-11-23)
SEQ_SPLIT_IN_ROWS = False
SEQ_ELEMS_BIG_N, SEQ_WARPS_BIG_N, SEQ_ROWS_LOG_BIG_N = 512, 1, 4  # N padded >= 64
#: n >= 64 with grad on a grid too small for one warp per 8 channels that may not split (see
#: below): Triton's layout, 16 lanes per channel (b1 l32768 n64 f+b 21.7 ms against 24.3 in rows)
SEQ_ELEMS_BIG_N_WIDE, SEQ_WARPS_BIG_N_WIDE = 512, 4
#: the forward's softplus is _softplus_fwd up to this padded N, _softplus above (n64 in rows:
#: 1.299 ms with _softplus_fwd against 1.286)
SEQ_CHEAP_SOFTPLUS_MAX_NP = 32
#: the per-channel tile math (softplus, dt*u; the backward's gated dy) passes through _pin:
#: without it Triton recomputes that math in the state's layout, where a channel's lanes each
#: repeat it, and once more in the load's layout (n16 forward tile loop: 509 SASS instructions
#: without, 438 with; b4 n16 0.487 -> 0.473 ms, n64 1.277 -> 1.216, H100 2026-11-23 18:0x)
SEQ_PIN_TILE_MATH = True
#: the forward in Triton's layout (ROWS_LOG 0) reads B and C from fp32 time-major copies
#: (_time_major), one (NP,) vector per step, instead of (NP, 8) bf16 tiles that Triton passes
#: through shared memory to split into steps (tile loop 438 -> 360; b4 n16 0.487 -> 0.462 ms)
SEQ_BC_TIME_MAJOR = True
#: the same for the state in rows on a grid not split in time (tile loop n32 674 -> 599, n64
#: 1181 -> 1055 SASS instructions; b4 n64 1.487 -> 1.059 ms, n32 0.759 -> 0.702). Split in time
#: (b1 l32768 n16) it lost, 1.202 -> 2.050 ms (H100, 2026-11-23 18:30, BENCHMARKS.md), so it is
#: off there (bc_time_major).
SEQ_BC_TIME_MAJOR_ROWS = True
#: time-major B and C loaded a tile ahead, like u, dt and z (bc_prefetch). Read a tile at a time
#: at the top of the loop, they were the stall: 47% of the warp stall samples sat on the first
#: uses of B and C (Nsight Compute, b4 n16, H100). Ahead, in a second set of 64 registers with
#: the loop unrolled by 2: b4 n16 0.428 -> 0.407 ms (H200, 2026-11-23; without the unroll the
#: moves between the sets made it 0.441, each step's loaded after its own use 0.458)
SEQ_BC_PREFETCH = True
#: (u, dt and z two tiles ahead instead of one, SEQ_UDZ_TWO_AHEAD, lost and is gone: b4 n16
#: forward 0.400 ms against 0.395, f+b 1.814 against 1.838, H100 2026-11-23; NOTES.md)
#: y summed across a channel's 4 lanes by a reduce-scatter (_sum_lanes8) instead of a shuffle
#: all-reduce per step and a layout change (n16, Triton's layout)
SEQ_REDUCE_SCATTER = True
SEQ_BWD_ELEMS, SEQ_BWD_WARPS = 128, 1
#: the backward reads B and C time-major too (_time_major): f+b b1 l32768 n16 4.622 -> 4.504 ms,
#: b4 n64 10.064 -> 9.215 (H200, 2026-11-23, scripts/gpu/ss_bench.py)
SEQ_BWD_BC_TIME_MAJOR = True
SEQ_BWD_PREFETCH_MAX_N = 32                         # above: no prefetch (255 registers, spills)
#: v2 splits time into chunks (a pass for each chunk's end state, a carry, then the real pass)
#: when the grid has fewer than SEQ_CHUNK_BELOW warps: up to SEQ_TARGET_WARPS warps, chunks of
#: >= SEQ_MIN_CHUNK steps. (b4 d2048 n16 is faster unsplit, 1024 warps; b1 l32768 wants ~64
#: chunks.) With grad, only when the backward's grid is that small too: the backward runs the
#: forward's chunks, and a chunked backward costs more than the split saves (b1 l32768 n64 f+b
#: 25.1 ms split against 21.7 unsplit in Triton's layout).
SEQ_CHUNK_BELOW, SEQ_TARGET_WARPS, SEQ_MIN_CHUNK = 1024, 16384, 256


def fwd_launch(NP: int, split: bool) -> tuple[int, int, int]:
    """(elements per program, warps, ROWS_LOG) of the forward for a padded state width NP, with
    time split into chunks (a small grid) or not."""
    if NP > 32:
        elems, warps, rows = SEQ_ELEMS_BIG_N, SEQ_WARPS_BIG_N, SEQ_ROWS_LOG_BIG_N
    elif NP == 32 or (split and SEQ_SPLIT_IN_ROWS):
        elems, warps, rows = SEQ_ELEMS_MID, SEQ_WARPS_MID, SEQ_ROWS_LOG_MID
    else:
        elems, warps, rows = SEQ_ELEMS, SEQ_WARPS, SEQ_ROWS_LOG
    return elems, warps, min(rows, NP.bit_length() - 1)      # at most NP states per thread


def fwd_grid(b: int, d: int, L: int, NP: int, G: int, save: bool) -> tuple[int, int, int, int, int]:
    """(warps, ROWS_LOG, BLOCK_D, CHUNK, NC) of the forward: time is split into chunks when the
    grid is small (then with the split launch, and its own chunks); with grad (save) only if the
    backward's grid, which runs the same chunks, is small too."""
    elems, warps, rows_log = fwd_launch(NP, split=False)
    BDs = _seq_block_d(d, NP, G, elems)
    CH, NC = _seq_chunks(L, triton.cdiv(d, BDs) * b * warps)
    bwd_warps = triton.cdiv(d, _seq_block_d(d, NP, G, SEQ_BWD_ELEMS)) * b * SEQ_BWD_WARPS
    if NC > 1 and save and bwd_warps >= SEQ_CHUNK_BELOW and NP > 32:
        # a small grid that may not split: n >= 64 takes more lanes per channel instead
        warps, rows_log = SEQ_WARPS_BIG_N_WIDE, 0
        BDs = _seq_block_d(d, NP, G, SEQ_ELEMS_BIG_N_WIDE)
    if NC == 1 or (save and bwd_warps >= SEQ_CHUNK_BELOW):
        return warps, rows_log, BDs, triton.cdiv(L, 8) * 8, 1
    elems, warps, rows_log = fwd_launch(NP, split=True)
    BDs = _seq_block_d(d, NP, G, elems)
    CH, NC = _seq_chunks(L, triton.cdiv(d, BDs) * b * warps)
    return warps, rows_log, BDs, CH, NC


def _np(n: int) -> int:
    """N padded to a power of two (>= 2): the state tile's width."""
    return max(2, triton.next_power_of_2(n))


def _bc_view(M: torch.Tensor):
    """B/C (b,n,l) or (b,g,n,l) -> (tensor, G, strides b, g, n, l)."""
    if M.dim() == 3:
        return M, 1, (M.stride(0), 0, M.stride(1), M.stride(2))
    return M, M.shape[1], tuple(M.stride())


@triton.jit
def _pack_one(src, dst, bg, G, n, L, Lp, s_b, s_g, s_n, s_l, pid_t, NP: tl.constexpr,
              BLOCK_T: tl.constexpr):
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_n = tl.arange(0, NP)
    x = tl.load(src + (bg // G) * s_b + (bg % G) * s_g + offs_n[None, :] * s_n + offs_t[:, None] * s_l,
                mask=(offs_t < L)[:, None] & (offs_n < n)[None, :], other=0.0)
    tl.store(dst + bg * Lp * NP + offs_t[:, None] * NP + offs_n[None, :], x.to(tl.float32),
             mask=(offs_t < Lp)[:, None])


@triton.jit
def _time_major_kernel(B_ptr, C_ptr, Bt_ptr, Ct_ptr, G, n, L, Lp,
                       sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                       NP: tl.constexpr, BLOCK_T: tl.constexpr):
    """Program (time block, batch * group, B or C): its fp32 time-major rows, zeros past n and L."""
    pid_t, bg = tl.program_id(0), tl.program_id(1)
    if tl.program_id(2) == 0:
        _pack_one(B_ptr, Bt_ptr, bg, G, n, L, Lp, sB_b, sB_g, sB_n, sB_l, pid_t, NP, BLOCK_T)
    else:
        _pack_one(C_ptr, Ct_ptr, bg, G, n, L, Lp, sC_b, sC_g, sC_n, sC_l, pid_t, NP, BLOCK_T)


_fast_time_major_kernel = FastKernel(_time_major_kernel)


def _time_major(B: torch.Tensor, C: torch.Tensor, G: int, NP: int, extra_tile: bool = False):
    """B and C (b, n, l) / (b, g, n, l) -> fp32 (b, G, Lp, NP) copies (zeros past n and l), each
    with its strides b, g, n, l, in one launch: the forward in Triton's layout loads each step's
    (NP,) vector in one 16-byte load per lane, straight into the state's layout (see
    SEQ_BC_TIME_MAJOR)."""
    (Bv, _, sB), (Cv, _, sC) = _bc_view(B), _bc_view(C)
    b, n, L = B.shape[0], B.shape[-2], B.shape[-1]
    # whole 8-step tiles: the kernel's loads are unmasked. extra_tile, for a forward that loads
    # a tile ahead (SEQ_BC_PREFETCH) over an even number of tiles: zeros up to a whole pair of
    # tiles, and one tile more
    Lp = triton.cdiv(L, 16) * 16 + 8 if extra_tile else triton.cdiv(L, 8) * 8
    Bt, Ct = (torch.empty(b, G, Lp, NP, device=B.device, dtype=torch.float32) for _ in range(2))
    BLOCK_T = max(8, min(128, 2048 // NP))
    _fast_time_major_kernel[(triton.cdiv(Lp, BLOCK_T), b * G, 2)](
        Bv, Cv, Bt, Ct, G, n, L, Lp, *sB, *sC, NP=NP, BLOCK_T=BLOCK_T, num_warps=4)
    strides = (G * Lp * NP, Lp * NP, 1, NP)
    return (Bt, strides), (Ct, strides)


def _f32c(t):
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, save):
    b, d, L = u.shape
    n = A.shape[1]
    B, G, sB = _bc_view(B)
    C, Gc, sC = _bc_view(C)
    if G != Gc or d % G:
        raise ValueError(f"B and C need the same number of groups dividing d={d}: {G} vs {Gc}")
    NP = _np(n)
    D_, bias_, h0_ = _f32c(D), _f32c(delta_bias), _f32c(initial_state)
    seq = seq_idx.to(torch.int32).contiguous() if seq_idx is not None else None
    out = torch.empty(b, d, L, device=u.device, dtype=u.dtype)
    last = torch.empty(b, d, n, device=u.device, dtype=torch.float32)
    zz = z if z is not None else u
    warps, rows_log, BDs, CH, NC = fwd_grid(b, d, L, NP, G, save)
    bc_t = bc_time_major(rows_log, NC)
    bc_pf = bc_prefetch(bc_t, rows_log, NP, NC)
    if bc_t:
        (B, sB), (C, sC) = _time_major(B, C, G, NP, extra_tile=bc_pf)
    nd = triton.cdiv(d, BDs)
    ck_t = 8                                    # a checkpoint per 8-step tile
    f32 = dict(device=u.device, dtype=torch.float32)
    ckpt = torch.empty(b, triton.cdiv(L, ck_t), d, n, **f32) if save else last
    args = (L, d, n, d // G, CH, NC,
            *u.stride(), *delta.stride(), *zz.stride(), *sB, *sC, *A.stride(),
            *(seq.stride() if seq is not None else (0, 0)))
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                 SOFTPLUS=bool(delta_softplus), HAS_SEQ=seq is not None, BLOCK_D=BDs, NP=NP,
                 CKPT_T=ck_t, FAST=FAST_PTX, ROWS_LOG=rows_log,
                 CHEAP_SP=NP <= SEQ_CHEAP_SOFTPLUS_MAX_NP, PIN=SEQ_PIN_TILE_MATH, BC_T=bc_t,
                 BC_PF=bc_pf, RS=reduce_scatter(rows_log, NP, BDs, warps),
                 num_warps=warps)
    dummy = last
    P = None
    hin = h0_
    if NC > 1:      # pass 1: each chunk's own end state and decay; carry; pass 2 below
        S, P = torch.empty(b, NC, d, n, **f32), torch.empty(b, NC, d, n, **f32)
        # the backward's carry needs every chunk's decay, the forward's all but the last
        _fast_fwd_seq_kernel[(nd, b, NC if save else NC - 1)](
            u, delta, A, B, C, D_ if D_ is not None else dummy, zz,
            bias_ if bias_ is not None else dummy, dummy, seq if seq is not None else dummy,
            out, last, dummy, S, P, *args, HAS_HIN=False, SAVE_CKPT=False, STATES_ONLY=True,
            **flags)
        hin = torch.empty(b, NC, d, n, **f32)
        if h0_ is not None:
            hin[:, 0] = h0_
        else:
            hin[:, 0] = 0.0
        _chunk_carry(P, S, hin, reverse=False)
    _fast_fwd_seq_kernel[(nd, b, NC)](
        u, delta, A, B, C, D_ if D_ is not None else dummy, zz,
        bias_ if bias_ is not None else dummy, hin if hin is not None else dummy,
        seq if seq is not None else dummy, out, last, ckpt, dummy, dummy,
        *args, HAS_HIN=hin is not None, SAVE_CKPT=save, STATES_ONLY=False, **flags)
    # the time-major B and C copies, for a backward that reads them too (SEQ_BWD_BC_TIME_MAJOR)
    time_major = (B, sB, C, sC) if bc_t else None
    return out, last, (ckpt if save else None), seq, (CH, NC, P), time_major


def _chunk_carry(P, S, X, reverse):
    b, NC, d, n = P.shape
    BLOCK = min(1024, triton.next_power_of_2(d * n))
    _fast_chunk_carry_kernel[(b, triton.cdiv(d * n, BLOCK))](P, S, X, NC, d * n, REVERSE=reverse,
                                                         BLOCK=BLOCK, num_warps=4)


def bc_time_major(rows_log: int, NC: int) -> bool:
    """Whether the forward reads B and C from time-major copies (SEQ_BC_TIME_MAJOR*): in Triton's
    layout, and in rows when time is not split into chunks."""
    return SEQ_BC_TIME_MAJOR_ROWS and NC == 1 if rows_log else SEQ_BC_TIME_MAJOR


def bc_prefetch(bc_t: bool, rows_log: int, NP: int, NC: int) -> bool:
    """Whether the forward loads time-major B and C a tile ahead (SEQ_BC_PREFETCH): where a
    thread's tile of them is small (at most 4 states per thread: 64 registers), and not on a grid
    split in time, whose many programs want the registers for occupancy (b1 l32768 n16: 1.222 ms
    with, 1.051 without)."""
    return SEQ_BC_PREFETCH and bc_t and NP <= 16 and rows_log <= 2 and NC == 1


def reduce_scatter(rows_log: int, NP: int, BLOCK_D: int, warps: int) -> bool:
    """Whether the forward sums y across lanes by the reduce-scatter (SEQ_REDUCE_SCATTER): for the
    layout it is written for, Triton's for a (8, 16) state in one warp (4 lanes per channel)."""
    return SEQ_REDUCE_SCATTER and rows_log == 0 and NP == 16 and BLOCK_D == 8 and warps == 1


def _seq_chunks(L, warps):
    """(CHUNK, NC): split time into NC chunks (CHUNK a multiple of 8 steps), see SEQ_CHUNK_BELOW."""
    if warps >= SEQ_CHUNK_BELOW:
        return triton.cdiv(L, 8) * 8, 1
    nc = max(1, min(triton.cdiv(SEQ_TARGET_WARPS, max(1, warps)), L // max(8, SEQ_MIN_CHUNK)))
    ch = triton.cdiv(triton.cdiv(L, nc), 8) * 8
    return ch, triton.cdiv(L, ch)


def _seq_block_d(d, NP, G, elems):
    bd = max(1, min(elems // NP, triton.next_power_of_2(d)))
    return _pow2_divisor(d // G, bd) if G > 1 else bd


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus):
        # selective_scan calls this only when a gradient is wanted (grad_mode.wants_grad)
        out, last, ckpt, seq, (CH, NC, P), time_major = _fwd(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, True)
        ctx.chunk, ctx.nc = CH, NC
        Bt = Ct = None
        if time_major is not None and SEQ_BWD_BC_TIME_MAJOR:    # the backward reuses them
            Bt, ctx.sBt, Ct, ctx.sCt = time_major
        ctx.set_materialize_grads(False)      # no zero-filled dlast when last_state is unused
        ctx.softplus = bool(delta_softplus)
        ctx.has_h0 = initial_state is not None
        ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, seq, ckpt, P, Bt, Ct)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, seq, ckpt, P, Bt, Ct = ctx.saved_tensors
        b, d, L = u.shape
        n = A.shape[1]
        if dout is None:
            dout = torch.zeros(b, d, L, device=u.device, dtype=u.dtype)
        Bv, G, sB = _bc_view(B)
        Cv, _, sC = _bc_view(C)
        NP = _np(n)
        dev = u.device
        f32 = dict(device=dev, dtype=torch.float32)
        du = torch.empty(b, d, L, device=dev, dtype=u.dtype)
        ddelta = torch.empty(b, d, L, device=dev, dtype=delta.dtype)
        dz = torch.empty(b, d, L, device=dev, dtype=z.dtype) if z is not None else None
        dB = torch.zeros(b, G, n, L, **f32)
        dC = torch.zeros(b, G, n, L, **f32)
        NC = ctx.nc                                     # rows of the dA, dD, d bias partials
        dA = torch.empty(b * NC, d, n, **f32)
        dD = torch.empty(b * NC, d, **f32) if D is not None else None
        dbias = torch.empty(b * NC, d, **f32) if delta_bias is not None else None
        dh0 = torch.empty(b, d, n, **f32) if ctx.has_h0 else None
        D_, bias_ = _f32c(D), _f32c(delta_bias)
        dlast_ = _f32c(dlast)
        zz = z if z is not None else u
        dummy = dA
        bc_t = SEQ_BWD_BC_TIME_MAJOR
        Bk, Ck, sBk, sCk = Bv, Cv, sB, sC
        if bc_t and Bt is not None:         # the forward's copies
            Bk, Ck, sBk, sCk = Bt, Ct, ctx.sBt, ctx.sCt
        elif bc_t:
            (Bk, sBk), (Ck, sCk) = _time_major(B, C, G, NP)
        strides = (*u.stride(), *delta.stride(), *zz.stride(), *sBk, *sCk, *A.stride(),
                   *(seq.stride() if seq is not None else (0, 0)), *dout.stride())
        flags = dict(
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.softplus, HAS_SEQ=seq is not None, WANT_DH0=ctx.has_h0)
        outs = (du, ddelta, dz if dz is not None else dummy, dB, dC, dA,
                dD if dD is not None else dummy, dbias if dbias is not None else dummy,
                dh0 if dh0 is not None else dummy)
        ins = (u, delta, A, Bk, Ck, D_ if D_ is not None else dummy, zz,
               bias_ if bias_ is not None else dummy, seq if seq is not None else dummy, ckpt, dout)
        BDs = _seq_block_d(d, NP, G, SEQ_BWD_ELEMS)
        nd = triton.cdiv(d, BDs)
        xin = dlast_
        if NC > 1:      # pass 1: each chunk's own adjoint carry; carry right to left
            Y = torch.empty(b, NC, d, n, **f32)
            _fast_bwd_carry_kernel[(nd, b, NC - 1)](
                delta, A, Cv, zz, bias_ if bias_ is not None else dummy,
                seq if seq is not None else dummy, dout, Y, L, d, n, d // G, ctx.chunk, NC,
                *delta.stride(), *zz.stride(), *sC, *A.stride(),
                *(seq.stride() if seq is not None else (0, 0)), *dout.stride(),
                HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.softplus,
                HAS_SEQ=seq is not None, BLOCK_D=BDs, NP=NP, PIN=SEQ_PIN_TILE_MATH,
                num_warps=SEQ_BWD_WARPS)
            xin = torch.empty(b, NC, d, n, **f32)
            if dlast_ is not None:
                xin[:, NC - 1] = dlast_
            else:
                xin[:, NC - 1] = 0.0
            _chunk_carry(P, Y, xin, reverse=True)
        _fast_bwd_seq_kernel[(nd, b, NC)](
            *ins, xin if xin is not None else dummy, *outs,
            L, d, n, d // G, G, ctx.chunk, NC, *strides, **flags, HAS_XIN=xin is not None,
            BLOCK_D=BDs, NP=NP, PREFETCH=NP <= SEQ_BWD_PREFETCH_MAX_N, PIN=SEQ_PIN_TILE_MATH, BC_T=bc_t,
            num_warps=SEQ_BWD_WARPS)
        dB = dB.to(B.dtype) if B.dim() == 4 else dB[:, 0].to(B.dtype)
        dC = dC.to(C.dtype) if C.dim() == 4 else dC[:, 0].to(C.dtype)
        return (du, ddelta, dA.sum(0).to(A.dtype), dB, dC,
                dD.sum(0).to(D.dtype) if D is not None else None, dz,
                dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
                dh0.to(ctx.h0_dtype) if dh0 is not None else None, None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False, seq_idx=None):
    """Triton selective scan; see reference.selective_scan for shapes and semantics."""
    if not wants_grad(u, delta, A, B, C, D, z, delta_bias, initial_state):
        # no autograd node: no checkpoints (b * l/8 * d * n fp32, 268 MB at b4 l4096 d2048 n16)
        out, last, *_ = _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                             seq_idx, save=False)
        return (out, last) if return_last_state else out
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


_fast_update_kernel = FastKernel(_update_kernel)


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
    _fast_update_kernel[(triton.cdiv(d, BD), b)](
        state, x, dt, A, B, C, D if D is not None else x, zz,
        dt_bias if dt_bias is not None else x, y, d, n, d // G,
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *sB, *sC, *zz.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(dt_softplus), BLOCK_D=BD, NP=NP, num_warps=4,
    )
    return y
