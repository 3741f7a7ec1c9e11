"""Triton backward kernels of the Mamba-1 selective scan (fused.py launches them).

- ``_bwd_seq_kernel``: walks the 8-step tiles in reverse from the forward's per-tile checkpoints,
  recomputing the tile's states in registers; dB, dC reduced over the channel block per tile and
  added with fp32 atomics.
- ``_bwd_carry_kernel``: a time-split grid's adjoint state at each chunk's end.
"""
import triton
import triton.language as tl

from .tiles import _channel_block, _cols8, _join8, _join8_3d, _pin, _restarts, _softplus, _softplus_grad, _steps8


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
    b = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2)
    offs_d, offs_n, tt, mask_d, mask_nn, mask_dn, grp = _channel_block(d, n, cpg, BLOCK_D, NP)

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
    b = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2) + 1
    offs_d, offs_n, tt, mask_d, mask_nn, mask_dn, grp = _channel_block(d, n, cpg, BLOCK_D, NP)
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
