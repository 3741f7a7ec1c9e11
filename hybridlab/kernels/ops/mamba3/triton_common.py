"""Device helpers shared by the Mamba-3 Triton kernels.

Layout conventions (see fused.py for the host side):
* A chunk of Q time steps and R ranks is a tile of T = Q*R *rows*, row i = (t = i // R, r = i % R).
  B/C are (b, l, R, g, n), so the rows of one chunk are consecutive rows of B viewed as (b, l*R, g, n).
  SISO is R = 1. Per-time scalars are loaded on the rank-0 row only when they are summed along
  time (cumsums), on every row otherwise.
* The state dim N is handled as rotary *pairs*: even columns 2i and odd columns 2i+1 are separate
  (rows x pairs) tiles, so the rotation is elementwise; pairs i >= S have angle 0.
* Addresses: kernels form scalar (int64) base pointers at the chunk start once; tiles add small
  int32 offsets to them, which keeps register use down.
"""
import triton
import triton.language as tl


@triton.jit
def chunk_rows(c, L, Q: tl.constexpr, R: tl.constexpr):
    """Rows of chunk c: (row index, time within chunk, rank, valid (time < L), is-rank-0)."""
    rows = tl.arange(0, Q * R)
    t = rows // R
    r = rows % R
    return rows, t, r, c * Q + t < L, r == 0


@triton.jit
def chunk_cum(adt_base, t, valid, first, H):
    """Inclusive cumsum of dt*A along the chunk (per row) and the chunk total."""
    a = tl.load(adt_base + t * H, mask=valid & first, other=0.0)
    return tl.cumsum(a, 0), tl.sum(a, 0)


@triton.jit
def row_scalar(base, t, valid, H):
    """A (b, l, h) float32 scalar on every row (rank copies share it)."""
    return tl.load(base + t * H, mask=valid, other=0.0)


@triton.jit
def chunk_theta(ps_base, dt_base, off_base, t, valid, first, cidx, H, S):
    """theta (rows x pairs) = chunk offset + cumsum over the chunk of pi*tanh(ang)*dt; 0 for pairs >= S."""
    pm = cidx < S
    d = tl.load(dt_base + t * H, mask=valid & first, other=0.0)
    p = tl.load(ps_base + t[:, None] * S + cidx[None, :], mask=(valid & first)[:, None] & pm[None, :], other=0.0)
    o = tl.load(off_base + cidx, mask=pm, other=0.0)
    return tl.cumsum(p * d[:, None], 0) + o[None, :]


@triton.jit
def load_pairs(src_base, bias_base, rows, r, valid, cidx, GN, N, HAS_BIAS: tl.constexpr):
    """Even / odd columns of B or C rows (rows x pairs, float32), plus the per-head (R, n) bias."""
    ecol = 2 * cidx
    ocol = ecol + 1
    me = valid[:, None] & (ecol < N)[None, :]
    mo = valid[:, None] & (ocol < N)[None, :]
    ve = tl.load(src_base + rows[:, None] * GN + ecol[None, :], mask=me, other=0.0).to(tl.float32)
    vo = tl.load(src_base + rows[:, None] * GN + ocol[None, :], mask=mo, other=0.0).to(tl.float32)
    if HAS_BIAS:
        ve += tl.load(bias_base + r[:, None] * N + ecol[None, :], mask=me, other=0.0)
        vo += tl.load(bias_base + r[:, None] * N + ocol[None, :], mask=mo, other=0.0)
    return ve, vo


@triton.jit
def rotate(ve, vo, cs, sn):
    return ve * cs - vo * sn, ve * sn + vo * cs


@triton.jit
def load_rank_w(base, r, pidx, P):
    """(h, R, p) per-channel MIMO weight on every row: base = W + h*R*P."""
    return tl.load(base + r[:, None] * P + pidx[None, :], mask=(pidx < P)[None, :], other=0.0)


@triton.jit
def load_time_tile(base, t, valid, pidx, HP, P):
    """(b, l, h, p) tensor on the rows (rank copies share the time step), float32."""
    m = valid[:, None] & (pidx < P)[None, :]
    return tl.load(base + t[:, None] * HP + pidx[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def load_v(x_base, Wx_base, t, r, valid, pidx, HP, P, HAS_WX: tl.constexpr):
    """v rows = x_t * W_x[h, r] (rows x p, float32), and x itself."""
    xv = load_time_tile(x_base, t, valid, pidx, HP, P)
    v = xv
    if HAS_WX:
        v = xv * load_rank_w(Wx_base, r, pidx, P)
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
def load_dout(dout_base, rows, t, valid, pidx, HP, P, PER_RANK: tl.constexpr):
    """Output gradient on the rows: per-rank layout (b, l, R, h, p) or rank-summed (b, l, h, p)."""
    if PER_RANK:
        do = load_time_tile(dout_base, rows, valid, pidx, HP, P)
    else:
        do = load_time_tile(dout_base, t, valid, pidx, HP, P)
    return do


@triton.jit
def load_dy(dout_base, z_base, Wz_base, Wo_base, rows, t, r, valid, pidx, HP, P,
            HAS_Z: tl.constexpr, HAS_WZ: tl.constexpr, HAS_WO: tl.constexpr, PER_RANK: tl.constexpr):
    """Gradient w.r.t. the un-gated per-rank y: dout * W_o[r] * silu(z * W_z[r]) (rows x p)."""
    do = load_dout(dout_base, rows, t, valid, pidx, HP, P, PER_RANK)
    if HAS_WO:
        do *= load_rank_w(Wo_base, r, pidx, P)
    if HAS_Z:
        zz = load_time_tile(z_base, t, valid, pidx, HP, P)
        if HAS_WZ:
            zz *= load_rank_w(Wz_base, r, pidx, P)
        do *= zz * tl.sigmoid(zz)
    return do
