"""Device helpers shared by the Mamba-3 Triton kernels.

Layout conventions (see fused.py for the host side):
* A chunk of Q time steps and R ranks is a tile of T = Q*R *rows*, row i = (t = i // R, r = i % R).
  B/C are (b, l, R, g, n), so the rows of one chunk are consecutive rows of B viewed as (b, l*R, g, n).
  SISO is R = 1. Per-time scalars are loaded on the rank-0 row only when they are summed along
  time (cumsums), on every row otherwise.
* The state dim N is handled as rotary *pairs*: even columns 2i and odd columns 2i+1 are separate
  (rows x pairs) tiles, so the rotation is elementwise; pairs i >= S have angle 0.
"""
import triton
import triton.language as tl


@triton.jit
def chunk_rows(c, L, Q: tl.constexpr, R: tl.constexpr):
    """Row indices of chunk c: (t within chunk, rank, absolute time, valid, is-rank-0)."""
    rows = tl.arange(0, Q * R)
    t = rows // R
    r = rows % R
    tau = c * Q + t
    return t, r, tau, tau < L, r == 0


@triton.jit
def chunk_cum(adt_ptr, b, h, tau, valid, first, L, H):
    """Inclusive cumsum of dt*A along the chunk (per row) and the chunk total."""
    a = tl.load(adt_ptr + (b * L + tau) * H + h, mask=valid & first, other=0.0)
    return tl.cumsum(a, 0), tl.sum(a, 0)


@triton.jit
def row_scalar(ptr, b, h, tau, valid, L, H):
    """A (b, l, h) float32 scalar on every row (rank copies share it)."""
    return tl.load(ptr + (b * L + tau) * H + h, mask=valid, other=0.0)


@triton.jit
def chunk_theta(ps_ptr, dt_ptr, off_ptr, b, c, h, tau, valid, first, cidx, L, H, S, NC):
    """theta (rows x pairs) = chunk offset + cumsum over the chunk of pi*tanh(ang)*dt; 0 for pairs >= S."""
    pm = cidx < S
    d = tl.load(dt_ptr + (b * L + tau) * H + h, mask=valid & first, other=0.0)
    p = tl.load(ps_ptr + (b * L + tau)[:, None] * S + cidx[None, :],
                mask=(valid & first)[:, None] & pm[None, :], other=0.0)
    o = tl.load(off_ptr + ((b * NC + c) * H + h) * S + cidx, mask=pm, other=0.0)
    return tl.cumsum(p * d[:, None], 0) + o[None, :]


@triton.jit
def load_pairs(src_ptr, bias_ptr, b, g, h, r, tau, valid, cidx, L, G, N,
               R: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Even / odd columns of B or C rows (rows x pairs, float32), plus the per-head (h, R, n) bias."""
    ecol = 2 * cidx
    ocol = ecol + 1
    base = ((b * L + tau) * R + r) * G * N + g * N
    me = valid[:, None] & (ecol < N)[None, :]
    mo = valid[:, None] & (ocol < N)[None, :]
    ve = tl.load(src_ptr + base[:, None] + ecol[None, :], mask=me, other=0.0).to(tl.float32)
    vo = tl.load(src_ptr + base[:, None] + ocol[None, :], mask=mo, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bb = (h * R + r) * N
        ve += tl.load(bias_ptr + bb[:, None] + ecol[None, :], mask=me, other=0.0)
        vo += tl.load(bias_ptr + bb[:, None] + ocol[None, :], mask=mo, other=0.0)
    return ve, vo


@triton.jit
def rotate(ve, vo, cs, sn):
    return ve * cs - vo * sn, ve * sn + vo * cs


@triton.jit
def load_v(x_ptr, Wx_ptr, b, h, r, tau, valid, pidx, L, H, P, R: tl.constexpr, HAS_WX: tl.constexpr):
    """v rows = x_t * W_x[h, r] (rows x p, float32), and x itself."""
    pm = pidx < P
    xv = tl.load(x_ptr + ((b * L + tau) * H + h)[:, None] * P + pidx[None, :],
                 mask=valid[:, None] & pm[None, :], other=0.0).to(tl.float32)
    v = xv
    if HAS_WX:
        v = xv * tl.load(Wx_ptr + (h * R + r)[:, None] * P + pidx[None, :], mask=pm[None, :], other=0.0)
    return v, xv


@triton.jit
def chunk_mask(cum, w, wd, t):
    """Intra-chunk weights: exp(cum_i - cum_j) w_j for t_i > t_j, wd_i for t_i == t_j (ranks share t).
    Returns (weights, the strictly-lower decay exp(cum_i - cum_j) alone)."""
    lower = t[:, None] > t[None, :]
    decay = tl.exp(tl.where(lower, cum[:, None] - cum[None, :], float("-inf")))
    M = tl.where(lower, decay * w[None, :], tl.where(t[:, None] == t[None, :], wd[:, None], 0.0))
    return M, decay


@triton.jit
def per_time(v, Q: tl.constexpr, R: tl.constexpr):
    """(Q*R,) row vector -> (Q,) by summing the ranks of each time step."""
    out = v
    if R > 1:
        out = tl.sum(tl.reshape(v, (Q, R)), 1)
    return out


@triton.jit
def per_time2(v, Q: tl.constexpr, R: tl.constexpr, BC: tl.constexpr):
    """(Q*R, BC) rows -> (Q, BC) by summing the ranks of each time step."""
    out = v
    if R > 1:
        out = tl.sum(tl.reshape(v, (Q, R, BC)), 1)
    return out


@triton.jit
def per_rank2(v, Q: tl.constexpr, R: tl.constexpr, BC: tl.constexpr):
    """(Q*R, BC) rows -> (R, BC) by summing over the time steps of each rank."""
    return tl.sum(tl.reshape(v, (Q, R, BC)), 0)


@triton.jit
def load_dy(dout_ptr, z_ptr, Wz_ptr, Wo_ptr, b, h, r, tau, valid, pidx, L, H, P,
            R: tl.constexpr, HAS_Z: tl.constexpr, HAS_WZ: tl.constexpr, HAS_WO: tl.constexpr,
            PER_RANK: tl.constexpr):
    """Gradient w.r.t. the un-gated per-rank y: dout * W_o[r] * silu(z * W_z[r]) (rows x p)."""
    pm = pidx < P
    m = valid[:, None] & pm[None, :]
    if PER_RANK:
        do = tl.load(dout_ptr + (((b * L + tau) * R + r) * H + h)[:, None] * P + pidx[None, :], mask=m, other=0.0)
    else:
        do = tl.load(dout_ptr + ((b * L + tau) * H + h)[:, None] * P + pidx[None, :], mask=m, other=0.0)
    do = do.to(tl.float32)
    if HAS_WO:
        do *= tl.load(Wo_ptr + (h * R + r)[:, None] * P + pidx[None, :], mask=pm[None, :], other=0.0)
    if HAS_Z:
        zz = tl.load(z_ptr + ((b * L + tau) * H + h)[:, None] * P + pidx[None, :], mask=m, other=0.0).to(tl.float32)
        if HAS_WZ:
            zz *= tl.load(Wz_ptr + (h * R + r)[:, None] * P + pidx[None, :], mask=pm[None, :], other=0.0)
        do *= zz * tl.sigmoid(zz)
    return do
