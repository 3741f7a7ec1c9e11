"""Triton forward kernels of the Mamba-1 selective scan (fused.py launches them).

- ``_fwd_seq_kernel``: one program per (channel block, batch[, time chunk]) walks time in 8-step
  tiles with the (BLOCK_D, N) state in registers; it also runs a chunked scan's states-only pass.
- ``_chunk_carry_kernel``: carries states across time chunks (forward, and the backward's adjoint
  carry in reverse).
"""
import triton
import triton.language as tl

from .tiles import (_channel_block, _cols8, _join8, _pin, _restarts, _silu, _softplus, _softplus_fwd, _state_load,
                    _state_store, _steps8, _sum_lanes8, _tile8)


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
    b = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2)
    offs_d, offs_n, tt, mask_d, _, _, grp = _channel_block(d, n, cpg, BLOCK_D, NP)

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
    # time in its layout (16 scalar loads per pair, 226 registers; benchmarks/kernel_regs.py).
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
                if CHEAP_SP:    # see the plan's cheap_softplus_max_np
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
