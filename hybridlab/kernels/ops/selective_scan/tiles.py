"""Triton helpers of the Mamba-1 kernels (fused_fwd.py, fused_bwd.py, fused_step.py).

- fp32 math: softplus (exact, and the forward's cheaper one), silu, 2^x, through the GPU's
  ``.approx.ftz`` PTX where FAST (the interpreter cannot run PTX and takes their tl twins).
- ``_pin``: keeps the per-channel tile math in the tile's own layout.
- 8-step tiles: load a (BLOCK_D, 8) tile, split it into its 8 columns, join columns back; y's
  sum across a channel's lanes by a reduce-scatter (``_sum_lanes8``).
- The state in rows of 8 or 16 states per thread (``_to_rows``, ``_from_rows``) and its loads
  and stores in either layout.
"""
import triton
import triton.language as tl


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
    _softplus. (A longer series, to e^6 below 0.1, measured slower: DESIGN.md.)"""
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
def _channel_block(d, n, cpg, BLOCK_D: tl.constexpr, NP: tl.constexpr):
    """What a (channel block, ...) program works on: its channels, the state lanes, the 8 steps
    of a tile, the channel mask, the (NP, 1) state mask, the (BLOCK_D, NP) element mask and the
    B, C group of its first channel."""
    pid_d = tl.program_id(0)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    mask_d = offs_d < d
    return (offs_d, offs_n, tl.arange(0, 8), mask_d, offs_n[:, None] < n,
            mask_d[:, None] & (offs_n[None, :] < n), (pid_d * BLOCK_D) // cpg)


@triton.jit
def _restarts(seq_ptr, offs_t, L, s_t):
    """(BLOCK_T,) True where a new packed sequence starts at t (t > 0 and the id changes)."""
    m = (offs_t > 0) & (offs_t < L)
    cur = tl.load(seq_ptr + offs_t * s_t, mask=m, other=0)
    prev = tl.load(seq_ptr + (offs_t - 1) * s_t, mask=m, other=0)
    return m & (cur != prev)


# ----------------------------------------------------------------------------------------------
# 8-step tiles and the state's layouts
#
# An associative_scan (the first version) puts time across the lanes of a warp (Triton's layout
# for the 3-D tile): every step of the scan is log2(lanes) shuffle rounds of a 3-flop combine, ~25 ops per
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
    (the plan's bc_time_major; _time_major pads time to whole tiles), each step's vector in the state's
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
# (the plan's reduce_scatter): in round 1 lanes trade 4 of their 8 steps' partials with the lane 2
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
