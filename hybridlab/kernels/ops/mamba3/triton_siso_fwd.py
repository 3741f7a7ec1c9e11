"""One Triton kernel for the whole Mamba-3 SISO forward: rotation, chunk states, state passing and
output, sequential over the sequence per (P tile, head, batch) with the state in registers.

Why one kernel: the split forward (rotation kernel, then the three SSD forward kernels) writes the
per-head k, q, reads them back several times, and round-trips the chunk states through memory in
fp32. Here every block of BT rows is visited once per head: its keys and queries are rotated once,
in registers, and used at once (mamba3/NOTES.md has the timings).

Per block of BT rows t (BT = the angle chunk, so the angle entering it is ``off``), head h of
group g, running state S (P x N, fp32):
    theta = off + cumsum_t(ps dt);  k = Rot(theta)(B_g + B_bias_h),  q = Rot(theta)(C_g + C_bias_h)
    lc = cumsum_t(log decay);  w = input scale;  dpos = -D_pos_scale (q . k)
    y = exp(lc) q S^T + ((q k^T) o exp(lc_t - lc_s) w_s [t >= s]) x + (D + dpos) x,  out = y silu(z)
    S = exp(lc_last) S + (x o exp(lc_last - lc) w)^T k
Everything the SSD backward (ssd/fused_bwd.py) reads is stored as ssd/fused.forward_pass would:
k, q (x's dtype) and q . k; w ("delta"), the log-decay cumsum within each SSD chunk of Q rows
("cs") and dpos, all (b, h, Lp) fp32; the state entering each SSD chunk E (x's dtype) and the
final state (fp32); the pre-gate y when z is given. Only the first P tile stores the per-row values.
"""
import triton
import triton.language as tl


@triton.jit
def _pairs(v, BT: tl.constexpr, N2: tl.constexpr):
    return tl.split(tl.reshape(v, (BT, N2, 2)))


@triton.jit
def _unpairs(e, o, BT: tl.constexpr, N: tl.constexpr):
    return tl.reshape(tl.join(e, o), (BT, N))


@triton.jit
def siso_fwd_kernel(
    x_ptr, z_ptr, B_ptr, C_ptr, Bb_ptr, Cb_ptr, ps_ptr, dt_ptr, off_ptr, w_ptr, ld_ptr, D_ptr,
    Dps_ptr, h0_ptr,
    k_ptr, q_ptr, qk_ptr, out_ptr, y_ptr, delta_ptr, cs_ptr, dpos_ptr, E_ptr, final_ptr,
    L, H, G, P, N, S, Lp, nq, na,
    sx_b, sx_l, sx_h, sz_b, sz_l, sz_h, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    Q: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_ROT: tl.constexpr, HAS_D: tl.constexpr, D_HDIM: tl.constexpr,
    HAS_DPOS: tl.constexpr, HAS_Z: tl.constexpr, HAS_INIT: tl.constexpr, PREC: tl.constexpr,
):
    pt = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    g = h // (H // G)
    N2: tl.constexpr = BN // 2
    NBQ: tl.constexpr = Q // BT
    DT = k_ptr.dtype.element_ty
    op = pt * BP + tl.arange(0, BP)
    on = tl.arange(0, BN)
    i = tl.arange(0, N2)
    ot = tl.arange(0, BT)
    pm = op < P
    nm = on < N
    row = (b * H + h) * Lp               # (b, h, Lp) rows
    state_off = (b * H + h) * P * N + op[:, None] * N + on[None, :]
    sm = pm[:, None] & nm[None, :]
    if HAS_INIT:
        st = tl.load(h0_ptr + state_off, mask=sm, other=0.0)
    else:
        st = tl.zeros([BP, BN], dtype=tl.float32)
    if HAS_BIAS:
        bk = tl.load(Bb_ptr + h * N + on, mask=nm, other=0.0)
        bq = tl.load(Cb_ptr + h * N + on, mask=nm, other=0.0)
    if HAS_D:
        if D_HDIM:
            dskip = tl.load(D_ptr + h * P + op, mask=pm, other=0.0)[None, :]
        else:
            dskip = tl.load(D_ptr + h)
    cbase = tl.zeros((), dtype=tl.float32)
    for blk in range(0, Lp // BT):
        t = blk * BT + ot
        valid = t < L
        jq = blk % NBQ
        c = blk // NBQ
        if jq == 0:     # the state entering SSD chunk c, as the SSD backward reads it
            tl.store(E_ptr + ((b * nq + c) * H + h) * P * N + op[:, None] * N + on[None, :],
                     st.to(E_ptr.dtype.element_ty), mask=sm)

        # decay and input scale of the block; cs runs over the SSD chunk
        ld = tl.load(ld_ptr + (b * L + t) * H + h, mask=valid, other=0.0)
        w = tl.load(w_ptr + (b * L + t) * H + h, mask=valid, other=0.0)
        lc = tl.cumsum(ld, axis=0)
        cbase = tl.where(jq == 0, 0.0, cbase)
        cs = cbase + lc
        lc_last = tl.sum(ld, axis=0)
        cbase += lc_last

        # rotated keys and queries of head h, rounded to x's dtype as the backward reads them
        rm = valid[:, None] & nm[None, :]
        kb = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + g * sB_g + on[None, :], mask=rm, other=0.0).to(tl.float32)
        qb = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + g * sC_g + on[None, :], mask=rm, other=0.0).to(tl.float32)
        if HAS_BIAS:
            kb = tl.where(rm, kb + bk[None, :], 0.0)
            qb = tl.where(rm, qb + bq[None, :], 0.0)
        if HAS_ROT:
            ps = tl.load(ps_ptr + (b * L + t[:, None]) * S + i[None, :],
                         mask=valid[:, None] & (i[None, :] < S), other=0.0)
            dtv = tl.load(dt_ptr + (b * L + t) * H + h, mask=valid, other=0.0)
            ab = tl.minimum(blk, na - 1)    # padding blocks past the last angle chunk: no valid rows
            a0 = tl.load(off_ptr + ((b * na + ab) * H + h) * S + i, mask=i < S, other=0.0)
            th = tl.cumsum(ps * dtv[:, None], axis=0) + a0[None, :]
            cs_, sn = tl.cos(th), tl.sin(th)
            ke, ko = _pairs(kb, BT, N2)
            qe, qo = _pairs(qb, BT, N2)
            kb = _unpairs(ke * cs_ - ko * sn, ke * sn + ko * cs_, BT, BN)
            qb = _unpairs(qe * cs_ - qo * sn, qe * sn + qo * cs_, BT, BN)
        kr = kb.to(DT)
        qr = qb.to(DT)
        qk = tl.sum(kr.to(tl.float32) * qr.to(tl.float32), axis=1)
        if pt == 0:     # the per-row values, once per head
            kq_off = ((b * L + t[:, None]) * H + h) * N + on[None, :]
            tl.store(k_ptr + kq_off, kr, mask=rm)
            tl.store(q_ptr + kq_off, qr, mask=rm)
            tl.store(qk_ptr + (b * L + t) * H + h, qk, mask=valid)
            tl.store(cs_ptr + row + t, cs)
            tl.store(delta_ptr + row + t, w)

        # output: the state's part, the block's own scores, the skips, the gate
        xm = valid[:, None] & pm[None, :]
        xo = b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :]
        xt = tl.load(x_ptr + xo, mask=xm, other=0.0)
        acc = tl.dot(qr, tl.trans(st.to(DT)), input_precision=PREC) * tl.exp(lc)[:, None]
        sc = tl.dot(qr, tl.trans(kr), input_precision=PREC)
        keep = ot[:, None] >= ot[None, :]
        sc = tl.where(keep, sc * tl.exp(lc[:, None] - lc[None, :]) * w[None, :], 0.0)
        acc += tl.dot(sc.to(DT), xt, input_precision=PREC)
        skip = tl.zeros([BT, BP], dtype=tl.float32)
        if HAS_D:
            skip += dskip
        if HAS_DPOS:
            dpos = -tl.load(Dps_ptr + (b * L + t) * H + h, mask=valid, other=0.0) * qk
            if pt == 0:
                tl.store(dpos_ptr + row + t, dpos)
            skip += dpos[:, None]
        if HAS_D or HAS_DPOS:
            acc += xt.to(tl.float32) * skip
        oo = ((b * L + t[:, None]) * H + h) * P + op[None, :]
        if HAS_Z:
            tl.store(y_ptr + oo, acc.to(y_ptr.dtype.element_ty), mask=xm)
            zt = tl.load(z_ptr + b * sz_b + t[:, None] * sz_l + h * sz_h + op[None, :],
                         mask=xm, other=0.0).to(tl.float32)
            acc = acc * zt * tl.sigmoid(zt)
        tl.store(out_ptr + oo, acc.to(out_ptr.dtype.element_ty), mask=xm)

        # the state after the block
        xv = (xt.to(tl.float32) * (tl.exp(lc_last - lc) * w)[:, None]).to(DT)
        st = st * tl.exp(lc_last) + tl.dot(tl.trans(xv), kr, input_precision=PREC)
    tl.store(final_ptr + state_off, st, mask=sm)
