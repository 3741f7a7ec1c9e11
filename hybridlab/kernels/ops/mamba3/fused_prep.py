"""Triton kernels for Mamba-3 SISO's per-step scalars and angle offsets (the work that feeds the
rotation and the SSD), forward and backward. Before them this was ~70 small torch ops per
forward+backward (fused_siso.py's ``step_weights`` and ``angle_offsets``, still used by MIMO).

Forward, per (b, chunk c of QA steps), all heads at once (reference.py's chunked form):
    adt = dt A,  lam = sigmoid(trap),  bnext_t = (1 - lam_{t+1}) dt_{t+1}  (0 at the last step),
    w = lam dt + bnext   (no trap: lam = 1, w = dt, no bnext),
    ps = pi tanh(angles)  (b, l, S),   tot_c = sum_{t in c} dt_t ps_t     (b, nc, h, S)
then per (b, h), over the chunks in float64 (long sequences keep their angle precision):
    off_c = (ang0 + sum_{c' < c} tot_c') mod 2 pi,   final = (ang0 + sum_c tot_c) mod 2 pi.

Backward: the scan's transpose, d tot_c = sum_{c' > c} d off_c' + d final (float64, as torch
did), then per chunk the chain rule back to dt, A, trap and angles, with the gradients the
rotation and the SSD hand over (their per-block partial sums are added here).
"""
import triton
import triton.language as tl

PI = tl.constexpr(3.141592653589793)
TWO_PI = tl.constexpr(6.283185307179586)


@triton.jit
def _tanh(x):
    """tanh from one exp (~1e-7 absolute error): the interpreter cannot run libdevice's."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _mod_2pi(v):
    return v - tl.floor(v / TWO_PI) * TWO_PI


@triton.jit
def _step_tile(L, H, QA: tl.constexpr, BH: tl.constexpr):
    """This program's (QA steps, BH heads) tile of a (b, l, h) tensor: rows t, their mask, the
    tile's mask and element offsets, and the batch index."""
    c = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    t = c * QA + tl.arange(0, QA)
    hh = tl.arange(0, BH)
    valid = t < L
    m = valid[:, None] & (hh[None, :] < H)
    return c, b, t, hh, valid, m, (b * L + t[:, None]) * H + hh[None, :]


@triton.jit
def prep_fwd_kernel(
    dt_ptr, A_ptr, trap_ptr, ang_ptr, adt_ptr, w_ptr, bnext_ptr, ps_ptr, tot_ptr,
    L, H, S, nc,
    QA: tl.constexpr, BH: tl.constexpr, BS: tl.constexpr, HAS_TRAP: tl.constexpr, HAS_ROT: tl.constexpr,
    PREC: tl.constexpr,
):
    c, b, t, hh, valid, m, idx = _step_tile(L, H, QA, BH)
    dt = tl.load(dt_ptr + idx, mask=m, other=0.0).to(tl.float32)
    tl.store(adt_ptr + idx, dt * tl.load(A_ptr + idx, mask=m, other=0.0).to(tl.float32), mask=m)
    w = dt
    if HAS_TRAP:
        lam = tl.sigmoid(tl.load(trap_ptr + idx, mask=m, other=0.0).to(tl.float32))
        m1 = ((t + 1) < L)[:, None] & (hh[None, :] < H)           # step t+1: zero past the end
        dt1 = tl.load(dt_ptr + idx + H, mask=m1, other=0.0).to(tl.float32)
        lam1 = tl.sigmoid(tl.load(trap_ptr + idx + H, mask=m1, other=0.0).to(tl.float32))
        bnext = (1.0 - lam1) * dt1
        tl.store(bnext_ptr + idx, bnext, mask=m)
        w = lam * dt + bnext
    tl.store(w_ptr + idx, w, mask=m)
    if HAS_ROT:
        s = tl.arange(0, BS)
        ms = valid[:, None] & (s[None, :] < S)
        pidx = (b * L + t[:, None]) * S + s[None, :]
        ps = PI * _tanh(tl.load(ang_ptr + pidx, mask=ms, other=0.0).to(tl.float32))
        tl.store(ps_ptr + pidx, ps, mask=ms)
        tot = tl.dot(tl.trans(dt), ps, input_precision=PREC)                # (BH, BS)
        tl.store(tot_ptr + ((b * nc + c) * H + hh[:, None]) * S + s[None, :], tot,
                 mask=(hh[:, None] < H) & (s[None, :] < S))


@triton.jit
def _chunk_block(c0, nc, b, h, H, S, s, sm, CB: tl.constexpr):
    """Offsets (CB, BS) into a (b, nc, h, S) tensor for chunks c0 .. c0 + CB - 1, and their mask."""
    cc = c0 + tl.arange(0, CB)
    return ((b * nc + cc[:, None]) * H + h) * S + s[None, :], (cc[:, None] < nc) & sm[None, :]


@triton.jit
def angle_scan_kernel(tot_ptr, ang0_ptr, off_ptr, fin_ptr, H, S, nc,
                      CB: tl.constexpr, BS: tl.constexpr, HAS_INIT: tl.constexpr):
    h = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    s = tl.arange(0, BS)
    sm = s < S
    if HAS_INIT:
        carry = tl.load(ang0_ptr + (b * H + h) * S + s, mask=sm, other=0.0).to(tl.float64)
    else:
        carry = tl.zeros([BS], dtype=tl.float64)
    for c0 in range(0, nc, CB):
        p, mm = _chunk_block(c0, nc, b, h, H, S, s, sm, CB)
        tot = tl.load(tot_ptr + p, mask=mm, other=0.0).to(tl.float64)
        off = carry[None, :] + tl.cumsum(tot, axis=0) - tot              # entering each chunk
        tl.store(off_ptr + p, _mod_2pi(off).to(tl.float32), mask=mm)
        carry += tl.sum(tot, axis=0)
    tl.store(fin_ptr + (b * H + h) * S + s, _mod_2pi(carry).to(tl.float32), mask=sm)


@triton.jit
def angle_scan_bwd_kernel(doff_ptr, dfin_ptr, dtot_ptr, dang0_ptr, H, S, nc,
                          CB: tl.constexpr, BS: tl.constexpr, HAS_DFIN: tl.constexpr, HAS_INIT: tl.constexpr):
    h = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    s = tl.arange(0, BS)
    sm = s < S
    total = tl.zeros([BS], dtype=tl.float64)
    for c0 in range(0, nc, CB):
        p, mm = _chunk_block(c0, nc, b, h, H, S, s, sm, CB)
        total += tl.sum(tl.load(doff_ptr + p, mask=mm, other=0.0).to(tl.float64), axis=0)
    if HAS_DFIN:                       # the final angle is ang0 + every chunk's total
        total += tl.load(dfin_ptr + (b * H + h) * S + s, mask=sm, other=0.0).to(tl.float64)
    seen = tl.zeros([BS], dtype=tl.float64)
    for c0 in range(0, nc, CB):
        p, mm = _chunk_block(c0, nc, b, h, H, S, s, sm, CB)
        d = tl.load(doff_ptr + p, mask=mm, other=0.0).to(tl.float64)
        tl.store(dtot_ptr + p, (total - seen[None, :] - tl.cumsum(d, axis=0)).to(tl.float32), mask=mm)
        seen += tl.sum(d, axis=0)
    if HAS_INIT:
        tl.store(dang0_ptr + (b * H + h) * S + s, total.to(tl.float32), mask=sm)


@triton.jit
def prep_bwd_kernel(
    dt_ptr, A_ptr, trap_ptr, ps_ptr, qk_ptr, dw_ptr, dadt_ptr, ddpos_ptr, ddt_rot_ptr, dps_rot_ptr, dtot_ptr,
    ddt_ptr, dA_ptr, dtrap_ptr, dang_ptr,
    L, H, G, S, nc, npb, sdp_b, sdp_h,
    QA: tl.constexpr, BH: tl.constexpr, BS: tl.constexpr, HAS_TRAP: tl.constexpr, HAS_ROT: tl.constexpr,
    HAS_DPOS: tl.constexpr, PREC: tl.constexpr,
):
    c, b, t, hh, valid, m, idx = _step_tile(L, H, QA, BH)
    dt = tl.load(dt_ptr + idx, mask=m, other=0.0).to(tl.float32)
    dadt = tl.load(dadt_ptr + idx, mask=m, other=0.0)
    dw = tl.load(dw_ptr + idx, mask=m, other=0.0)
    tl.store(dA_ptr + idx, dadt * dt, mask=m)
    ddt = dadt * tl.load(A_ptr + idx, mask=m, other=0.0).to(tl.float32)
    if HAS_TRAP:
        # bnext_{t-1} = (1 - lam_t) dt_t enters w_{t-1} and, with -qk, the skip weight D_pos_{t-1}
        mp = ((t >= 1) & valid)[:, None] & (hh[None, :] < H)
        dbcur = tl.load(dw_ptr + idx - H, mask=mp, other=0.0)
        if HAS_DPOS:
            dpos = tl.load(ddpos_ptr + b * sdp_b + hh[None, :] * sdp_h + (t[:, None] - 1), mask=mp, other=0.0)
            dbcur -= tl.load(qk_ptr + idx - H, mask=mp, other=0.0) * dpos
        lam = tl.sigmoid(tl.load(trap_ptr + idx, mask=m, other=0.0).to(tl.float32))
        ddt += dw * lam + dbcur * (1.0 - lam)
        tl.store(dtrap_ptr + idx, (dw - dbcur) * dt * lam * (1.0 - lam), mask=m)
    else:
        ddt += dw
    if HAS_ROT:
        for j in range(npb):          # the rotation's d dt, one partial sum per block of pairs
            ddt += tl.load(ddt_rot_ptr + idx * npb + j, mask=m, other=0.0)
        s = tl.arange(0, BS)
        ms = valid[:, None] & (s[None, :] < S)
        ps = tl.load(ps_ptr + (b * L + t[:, None]) * S + s[None, :], mask=ms, other=0.0)
        dps = tl.zeros([QA, BS], dtype=tl.float32)
        for g in range(G):            # the rotation's d ps, one partial sum per group
            dps += tl.load(dps_rot_ptr + ((b * L + t[:, None]) * G + g) * S + s[None, :], mask=ms, other=0.0)
        dtot = tl.load(dtot_ptr + ((b * nc + c) * H + hh[:, None]) * S + s[None, :],
                       mask=(hh[:, None] < H) & (s[None, :] < S), other=0.0)     # (BH, BS)
        ddt += tl.dot(ps, tl.trans(dtot), input_precision=PREC)
        dps += tl.dot(dt, dtot, input_precision=PREC)
        tl.store(dang_ptr + (b * L + t[:, None]) * S + s[None, :], dps * (PI - ps * ps / PI), mask=ms)
    tl.store(ddt_ptr + idx, ddt, mask=m)
