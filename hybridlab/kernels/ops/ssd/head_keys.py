"""Per-head keys and queries built inside the SSD kernels (Mamba-3 SISO).

Mamba-2's SSD reads B, C per group. Mamba-3 gives each head its own keys and queries,

    k_t = Rot(theta_t) (B_t + B_bias_h),   q_t = Rot(theta_t) (C_t + C_bias_h),
    theta_t = (angle entering t's block of RA rows) + sum_{s in that block, s <= t} ps_s dt_s,

with ps = pi*tanh(angles) (b, l, S), dt the head's step (b, l, h), and the entering angles
``off`` (b, cdiv(l, RA), h, S) that torch computes in float64, modulo 2 pi. Rotation pairs are
(2i, 2i+1) for i < S; the other pairs stay as they are.

Building a tile from the group's (cached) B or C in registers costs a cos and a sin per element
pair, instead of a round trip of per-head k and q through memory (2 x 134 MB at b4 l4096 h32
n128 in bf16, read by five kernels). ``head_tile`` is a no-op wrapper around the plain load when
both HAS_KBIAS and HAS_ROT are off, so Mamba-2 compiles to the same code as before.

Every tile these helpers see starts at a multiple of RA rows and has a multiple of RA rows.
"""
import triton
import triton.language as tl


@triton.jit
def theta_tile(ps_ptr, rdt_ptr, off_ptr, b, h, t, valid, L, H, S, nA,
               R: tl.constexpr, BN2: tl.constexpr, RA: tl.constexpr):
    """theta (R, BN2) fp32 of head h at rows t (0 for pairs i >= S and rows past L), with the
    ps tile (R, BN2) and dt column (R,) it came from."""
    i = tl.arange(0, BN2)
    m = valid[:, None] & (i[None, :] < S)
    ps = tl.load(ps_ptr + (b * L + t[:, None]) * S + i[None, :], mask=m, other=0.0)
    dt = tl.load(rdt_ptr + (b * L + t) * H + h, mask=valid, other=0.0)
    cum = tl.reshape(tl.cumsum(tl.reshape(ps * dt[:, None], (R // RA, RA, BN2)), axis=1), (R, BN2))
    off = tl.load(off_ptr + ((b * nA + t[:, None] // RA) * H + h) * S + i[None, :], mask=m, other=0.0)
    return cum + off, ps, dt


@triton.jit
def split_pairs(v, R: tl.constexpr, BN2: tl.constexpr):
    """(R, 2*BN2) -> its even and odd columns, (R, BN2) each."""
    return tl.split(tl.reshape(v, (R, BN2, 2)))


@triton.jit
def join_pairs(e, o, R: tl.constexpr, BN2: tl.constexpr):
    return tl.reshape(tl.join(e, o), (R, 2 * BN2))


@triton.jit
def rotate(v, cs, sn, R: tl.constexpr, BN2: tl.constexpr):
    """Rot(theta) v for a (R, 2*BN2) tile, given cos and sin of theta (R, BN2)."""
    e, o = split_pairs(v, R, BN2)
    return join_pairs(e * cs - o * sn, e * sn + o * cs, R, BN2)


@triton.jit
def biased_tile(ptr, base, s_l, bias_ptr, h, t, valid, N, R: tl.constexpr, BN: tl.constexpr,
                HAS_KBIAS: tl.constexpr):
    """Rows t of the group's B (or C) plus head h's bias, (R, BN): fp32 with a bias, else the
    tensor's dtype; zero past L and N."""
    on = tl.arange(0, BN)
    nm = on < N
    v = tl.load(ptr + base + t[:, None] * s_l + on[None, :], mask=valid[:, None] & nm[None, :], other=0.0)
    if HAS_KBIAS:       # in fp32 from here: one rounding, at the end
        v = tl.where(valid[:, None], v.to(tl.float32) + tl.load(bias_ptr + h * N + on, mask=nm, other=0.0)[None, :], 0.0)
    return v


@triton.jit
def head_tile(ptr, base, s_l, bias_ptr, ps_ptr, rdt_ptr, off_ptr, b, h, t, valid, L, N, H, S, nA,
              R: tl.constexpr, BN: tl.constexpr, RA: tl.constexpr,
              HAS_KBIAS: tl.constexpr, HAS_ROT: tl.constexpr):
    """Rows t of head h's keys (or queries), (R, BN) in the tensor's dtype: the group rows at
    ``ptr + base`` plus the head's bias, rotated by the head's angles; zero past L and N."""
    v = biased_tile(ptr, base, s_l, bias_ptr, h, t, valid, N, R, BN, HAS_KBIAS)
    if HAS_ROT:
        th, _, _ = theta_tile(ps_ptr, rdt_ptr, off_ptr, b, h, t, valid, L, H, S, nA, R, BN // 2, RA)
        v = rotate(v.to(tl.float32), tl.cos(th), tl.sin(th), R, BN // 2)
    return v.to(ptr.dtype.element_ty)
