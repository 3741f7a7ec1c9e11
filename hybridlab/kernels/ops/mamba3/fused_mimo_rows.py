"""Triton kernels for what MIMO adds around the SSD kernels (fused_mimo.py): the rows v = x W_x,
the per-step R x R term and the output gate, forward and backward.

A tile holds ROWS = TS * RB rows (t, r): TS steps of RB ranks. Per step, with s[(t,r), u] =
q_(t,r) . k_(t,u) (from the rotation kernel) and m = s * coef, coef[(t,r), u] = wd_t - [u <= r] w_t:

    yf_(t,r)  = y_(t,r) + sum_u m[(t,r), u] v_(t,u)           (y: the SSD's output on the rows, D included)
    out_t     = sum_r W_o[r] * yf_(t,r) * silu(z_t * W_z[r])   (per-rank rows instead when W_o is absent)

The backward gives the SSD its output gradient dyf, and the gradients of v (the term's part), s, wd,
w, z, W_z and W_o (the weights as per-program partial sums: deterministic, summed by torch).
"""
import triton
import triton.language as tl


@triton.jit
def step_scores(a, b, ROWS: tl.constexpr, BN: tl.constexpr, RB: tl.constexpr):
    """(ROWS, RB): out[(t, r), u] = a_(t,r) . b_(t,u), rows of one step t."""
    T: tl.constexpr = ROWS // RB
    a3 = tl.reshape(a, (T, RB, BN))
    b3 = tl.reshape(b, (T, RB, BN))
    ridx = tl.arange(0, RB)
    out = tl.zeros((T, RB, RB), dtype=tl.float32)
    for u in tl.static_range(RB):
        b_u = tl.sum(tl.where((ridx == u)[None, :, None], b3, 0.0), axis=1)          # (T, BN)
        s_u = tl.sum(a3 * b_u[:, None, :], axis=2)                                   # (T, RB)
        out += tl.where((ridx == u)[None, None, :], s_u[:, :, None], 0.0)
    return tl.reshape(out, (ROWS, RB))


@triton.jit
def step_mix(a, w, ROWS: tl.constexpr, BN: tl.constexpr, RB: tl.constexpr):
    """(ROWS, BN): out_(t,r) = sum_u w[(t, r), u] a_(t,u)."""
    T: tl.constexpr = ROWS // RB
    a3 = tl.reshape(a, (T, RB, BN))
    w3 = tl.reshape(w, (T, RB, RB))
    ridx = tl.arange(0, RB)
    out = tl.zeros((T, RB, BN), dtype=tl.float32)
    for u in tl.static_range(RB):
        a_u = tl.sum(tl.where((ridx == u)[None, :, None], a3, 0.0), axis=1)          # (T, BN)
        w_u = tl.sum(tl.where((ridx == u)[None, None, :], w3, 0.0), axis=2)          # (T, RB)
        out += w_u[:, :, None] * a_u[:, None, :]
    return tl.reshape(out, (ROWS, BN))


@triton.jit
def _same_step(ROWS: tl.constexpr, RB: tl.constexpr):
    """(ROWS, ROWS // RB, 1): row i belongs to step s."""
    row = tl.arange(0, ROWS)
    return (row[:, None, None] // RB) == tl.arange(0, ROWS // RB)[None, :, None]


@triton.jit
def step_scores_mma(a, b, ROWS: tl.constexpr, RB: tl.constexpr, PREC: tl.constexpr):
    """step_scores as one (ROWS x ROWS) tensor-core product a bᵀ, keeping each row's own step:
    a dot of ROWS x N x ROWS is cheaper than the (steps, RB, N) register tiles (it needs
    ROWS, N >= 16)."""
    full = tl.reshape(tl.dot(a, tl.trans(b), input_precision=PREC), (ROWS, ROWS // RB, RB))
    return tl.sum(tl.where(_same_step(ROWS, RB), full, 0.0), axis=1)


@triton.jit
def step_block(ptr, b, h, row, valid, LR, H, RB: tl.constexpr):
    """A (b, l*R, h, R) per-step block at a tile's rows, (ROWS, RB) fp32, and its per-step transpose
    wt[(t, u), r] = w[(t, r), u] (gathered from memory: a register permute of the (steps, R, R)
    tile gave wrong results on the GPU at R = 4)."""
    ridx = tl.arange(0, RB)
    w = tl.load(ptr + ((b * LR + row[:, None]) * H + h) * RB + ridx[None, :], mask=valid[:, None], other=0.0)
    first = row - row % RB
    wt = tl.load(ptr + ((b * LR + first[:, None] + ridx[None, :]) * H + h) * RB + (row % RB)[:, None],
                 mask=valid[:, None], other=0.0)
    return w, wt


@triton.jit
def per_rank_sum(v, ROWS: tl.constexpr, BP: tl.constexpr, RB: tl.constexpr):
    """(RB, BP): the sum of v's rows of each rank."""
    return tl.sum(tl.reshape(v, (ROWS // RB, RB, BP)), axis=0)


@triton.jit
def _per_step_sum(v, ROWS: tl.constexpr, BP: tl.constexpr, RB: tl.constexpr):
    """(TS, BP): the sum of v's rows of each step."""
    return tl.sum(tl.reshape(v, (ROWS // RB, RB, BP)), axis=1)


@triton.jit
def _tile(c, b, h, L, H, P, ROWS: tl.constexpr, RB: tl.constexpr, BP: tl.constexpr):
    row = c * ROWS + tl.arange(0, ROWS)
    valid = row < L * RB
    op = tl.arange(0, BP)
    m2 = valid[:, None] & (op[None, :] < P)
    rows_off = ((b * L * RB + row[:, None]) * H + h) * P + op[None, :]
    steps_off = ((b * L + row[:, None] // RB) * H + h) * P + op[None, :]
    return row, valid, op, m2, rows_off, steps_off


@triton.jit
def _coef(wd_ptr, w_ptr, b, h, row, valid, L, H, RB: tl.constexpr):
    """coef[(t, r), u] = wd_t - [u <= r] w_t, (ROWS, RB) fp32, and its per-step transpose."""
    ridx = tl.arange(0, RB)
    st = (b * L + row // RB) * H + h
    wd = tl.load(wd_ptr + st, mask=valid, other=0.0)[:, None]
    w = tl.load(w_ptr + st, mask=valid, other=0.0)[:, None]
    rank = (row % RB)[:, None]
    return wd - tl.where(ridx[None, :] <= rank, w, 0.0), wd - tl.where(rank <= ridx[None, :], w, 0.0)


@triton.jit
def _rank_w(W_ptr, h, row, op, P, RB: tl.constexpr):
    """Rows of a (h, R, p) per-rank weight, (ROWS, BP) fp32."""
    return tl.load(W_ptr + (h * RB + (row % RB)[:, None]) * P + op[None, :], mask=op[None, :] < P, other=0.0)


@triton.jit
def mimo_out_fwd_kernel(
    y_ptr, x_ptr, s_ptr, wd_ptr, w_ptr, z_ptr, Wz_ptr, Wo_ptr, out_ptr,
    L, H, P,
    ROWS: tl.constexpr, RB: tl.constexpr, BP: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_WZ: tl.constexpr, HAS_WO: tl.constexpr,
):
    c = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    row, valid, op, m2, rows_off, steps_off = _tile(c, b, h, L, H, P, ROWS, RB, BP)
    s, _ = step_block(s_ptr, b, h, row, valid, L * RB, H, RB)
    coef, _ = _coef(wd_ptr, w_ptr, b, h, row, valid, L, H, RB)
    x = tl.load(x_ptr + rows_off, mask=m2, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + rows_off, mask=m2, other=0.0).to(tl.float32) + step_mix(x, s * coef, ROWS, BP, RB)
    if HAS_Z:
        a = tl.load(z_ptr + steps_off, mask=m2, other=0.0).to(tl.float32)
        if HAS_WZ:
            a *= _rank_w(Wz_ptr, h, row, op, P, RB)
        y *= a * tl.sigmoid(a)
    DT = out_ptr.dtype.element_ty
    if HAS_WO:
        o = _per_step_sum(y * _rank_w(Wo_ptr, h, row, op, P, RB), ROWS, BP, RB)
        ts = c * (ROWS // RB) + tl.arange(0, ROWS // RB)
        tl.store(out_ptr + ((b * L + ts[:, None]) * H + h) * P + op[None, :], o.to(DT),
                 mask=(ts < L)[:, None] & (op[None, :] < P))
    else:
        tl.store(out_ptr + rows_off, y.to(DT), mask=m2)


@triton.jit
def mimo_out_bwd_kernel(
    dout_ptr, y_ptr, x_ptr, s_ptr, wd_ptr, w_ptr, z_ptr, Wz_ptr, Wo_ptr,
    dy_ptr, dx_ptr, ds_ptr, dwd_ptr, dw_ptr, dz_ptr, dWz_ptr, dWo_ptr,
    L, H, P, nprog,
    ROWS: tl.constexpr, RB: tl.constexpr, BP: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_WZ: tl.constexpr, HAS_WO: tl.constexpr,
):
    c = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    TS: tl.constexpr = ROWS // RB
    row, valid, op, m2, rows_off, steps_off = _tile(c, b, h, L, H, P, ROWS, RB, BP)
    ridx = tl.arange(0, RB)
    s, s_t = step_block(s_ptr, b, h, row, valid, L * RB, H, RB)
    coef, coef_t = _coef(wd_ptr, w_ptr, b, h, row, valid, L, H, RB)
    m = s * coef
    x = tl.load(x_ptr + rows_off, mask=m2, other=0.0).to(tl.float32)
    yf = tl.load(y_ptr + rows_off, mask=m2, other=0.0).to(tl.float32) + step_mix(x, m, ROWS, BP, RB)
    if HAS_WO:
        d = tl.load(dout_ptr + steps_off, mask=m2, other=0.0).to(tl.float32)
    else:
        d = tl.load(dout_ptr + rows_off, mask=m2, other=0.0).to(tl.float32)
    wpart = (((b * nprog + c) * H + h) * RB + ridx[:, None]) * P + op[None, :]
    pmask = op[None, :] < P
    if HAS_Z:
        z = tl.load(z_ptr + steps_off, mask=m2, other=0.0).to(tl.float32)
        a = z
        if HAS_WZ:
            wz = _rank_w(Wz_ptr, h, row, op, P, RB)
            a = z * wz
        sg = tl.sigmoid(a)
        g = a * sg
        if HAS_WO:
            tl.store(dWo_ptr + wpart, per_rank_sum(d * yf * g, ROWS, BP, RB), mask=pmask)
            d *= _rank_w(Wo_ptr, h, row, op, P, RB)
        da = d * yf * sg * (1.0 + a * (1.0 - sg))
        dyf = d * g
        if HAS_WZ:
            tl.store(dWz_ptr + wpart, per_rank_sum(da * z, ROWS, BP, RB), mask=pmask)
            da *= wz
        ts = c * TS + tl.arange(0, TS)
        tl.store(dz_ptr + ((b * L + ts[:, None]) * H + h) * P + op[None, :], _per_step_sum(da, ROWS, BP, RB),
                 mask=(ts < L)[:, None] & pmask)
    else:
        if HAS_WO:
            tl.store(dWo_ptr + wpart, per_rank_sum(d * yf, ROWS, BP, RB), mask=pmask)
            d *= _rank_w(Wo_ptr, h, row, op, P, RB)
        dyf = d
    tl.store(dy_ptr + rows_off, dyf.to(dy_ptr.dtype.element_ty), mask=m2)
    # the same-step term: yf += (s * coef) mix v
    tl.store(dx_ptr + rows_off, step_mix(dyf, s_t * coef_t, ROWS, BP, RB), mask=m2)
    dm = step_scores(dyf, x, ROWS, BP, RB)
    tl.store(ds_ptr + ((b * L * RB + row[:, None]) * H + h) * RB + ridx[None, :], dm * coef, mask=valid[:, None])
    dcoef = dm * s
    later = ridx[None, :] <= (row % RB)[:, None]
    dwd = tl.sum(tl.reshape(tl.sum(dcoef, axis=1), (TS, RB)), axis=1)
    dw = -tl.sum(tl.reshape(tl.sum(tl.where(later, dcoef, 0.0), axis=1), (TS, RB)), axis=1)
    ts = c * TS + tl.arange(0, TS)
    tl.store(dwd_ptr + (b * L + ts) * H + h, dwd, mask=ts < L)
    tl.store(dw_ptr + (b * L + ts) * H + h, dw, mask=ts < L)


@triton.jit
def _x_steps(x_ptr, L, H, P, TS: tl.constexpr, BP: tl.constexpr):
    """This program's TS steps of x (b, l, h, p) for one head, fp32, with their indices."""
    c = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    t = c * TS + tl.arange(0, TS)
    op = tl.arange(0, BP)
    m2 = (t[:, None] < L) & (op[None, :] < P)
    xx = tl.load(x_ptr + ((b * L + t[:, None]) * H + h) * P + op[None, :], mask=m2, other=0.0).to(tl.float32)
    return c, h, b, t, op, m2, xx


@triton.jit
def v_rows_fwd_kernel(x_ptr, wx_ptr, v_ptr, L, H, P, RB: tl.constexpr, TS: tl.constexpr, BP: tl.constexpr):
    """The SSD's input rows v_(t,r) = x_t * W_x[r] in x's dtype, (b, l*R, h, p), from x (b, l, h, p)
    and wx (R, h, p) fp32: TS steps of one head per program."""
    c, h, b, t, op, m2, xx = _x_steps(x_ptr, L, H, P, TS, BP)
    for r in tl.static_range(RB):
        wr = tl.load(wx_ptr + (r * H + h) * P + op, mask=op < P, other=0.0)
        tl.store(v_ptr + ((b * L * RB + t[:, None] * RB + r) * H + h) * P + op[None, :],
                 (xx * wr[None, :]).to(v_ptr.dtype.element_ty), mask=m2)


@triton.jit
def v_rows_bwd_kernel(x_ptr, wx_ptr, dv_ptr, dvs_ptr, dx_ptr, dwx_ptr, L, H, P, nblk,
                      RB: tl.constexpr, TS: tl.constexpr, BP: tl.constexpr):
    """The backward of v_rows_fwd_kernel for dv = dv_ssd (x's dtype, the SSD's) + dvs (fp32, the
    same-step term's): dx_t = sum_r dv_(t,r) W_x[r] in x's dtype, and per program the partial sums
    sum_t dv_(t,r) x_t of dW_x, (b, nblk, h, R, p) fp32 (summed by torch: deterministic)."""
    c, h, b, t, op, m2, xx = _x_steps(x_ptr, L, H, P, TS, BP)
    dx = tl.zeros((TS, BP), dtype=tl.float32)
    for r in tl.static_range(RB):
        off = ((b * L * RB + t[:, None] * RB + r) * H + h) * P + op[None, :]
        g = tl.load(dv_ptr + off, mask=m2, other=0.0).to(tl.float32) + tl.load(dvs_ptr + off, mask=m2, other=0.0)
        dx += g * tl.load(wx_ptr + (r * H + h) * P + op, mask=op < P, other=0.0)[None, :]
        tl.store(dwx_ptr + (((b * nblk + c) * H + h) * RB + r) * P + op, tl.sum(g * xx, axis=0), mask=op < P)
    tl.store(dx_ptr + ((b * L + t[:, None]) * H + h) * P + op[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m2)
