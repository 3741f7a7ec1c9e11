"""Mamba-3 (SISO and MIMO), chunked, in pure torch: the reference the Triton kernel is tested against.

Recurrence, per head (state H is P x N, v = x, k from B, q from C, rank index r for MIMO):

    theta_t = theta_{t-1} + pi * tanh(ang_t) * dt_t          (per head, per rotated pair)
    k_{t,r} = Rot(theta_t) (B_{t,r} + B_bias_r),  q_{t,r} = Rot(theta_t) (C_{t,r} + C_bias_r)
    v_{t,r} = x_t * W_x[r]
    alpha_t = exp(dt_t A_t),  beta_t = (1 - lam_t) dt_t alpha_t,  gamma_t = lam_t dt_t,  lam = sigmoid(trap)
    H_t = alpha_t H_{t-1} + beta_t sum_r v_{t-1,r} k_{t-1,r}^T + gamma_t sum_r v_{t,r} k_{t,r}^T
    y_{t,r} = H_t q_{t,r} + D v_{t,r};   y_{t,r} *= silu(z_t * W_z[r]);   out_t = sum_r y_{t,r} * W_o[r]

Chunked form (what ``mamba3`` computes). Unrolling the recurrence gives, for s <= t,

    H_t = sum_{s<=t} exp(cum_t - cum_s) w_s v_s k_s^T  -  b_t v_t k_t^T  +  exp(cum_t) H'_{-1}
    w_s = lam_s dt_s + b_s,   b_s = (1 - lam_{s+1}) dt_{s+1}  (0 at the last position),

with cum the running sum of dt*A. So inside a chunk the weight of pair (s, t) is
exp(cum_t - cum_s) w_s for s < t and lam_t dt_t on the diagonal; between chunks we pass the
"folded" state H' = H_t + b_t v_t k_t^T, which at a chunk end is sum_s exp(cum_end - cum_s) w_s v_s k_s^T
plus the decayed incoming H'. An initial state folds in as H'_{-1} = H_{-1} + (1 - lam_0) dt_0 v_{-1} k_{-1}^T,
and at the sequence end b = 0, so the last folded state is the true final state.

Choices (Mamba-3 paper / mamba-ssm leave these open, see DESIGN.md):
* The caller applies the activations of dt (softplus + bias) and A (negative, floored) and the
  RMSNorm of B and C; this op adds the per-head B/C biases after that norm, applies
  lam = sigmoid(trap) and tanh of the raw angles itself.
* Rotation pairs are (2i, 2i+1) for i < S, on dims 0..2S-1 of N; the rest stay unrotated.
  The same pairing is used for MIMO. Angles are carried modulo 2*pi between chunks.
* Math in float32 (float64 stays float64); outputs in x.dtype; states in float32/float64.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TWO_PI = 2.0 * math.pi


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rotate_pairs(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1), i < S, of v's last dim by theta[..., i]; theta broadcasts to v[..., :S]."""
    S = theta.shape[-1]
    if S == 0:
        return v
    pairs = v[..., : 2 * S].unflatten(-1, (S, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)
    return torch.cat((rot, v[..., 2 * S:]), dim=-1)


def _ranked(B: torch.Tensor) -> torch.Tensor:
    """(b, l, g, n) SISO or (b, l, R, g, n) MIMO -> (b, l, R, g, n)."""
    return B.unsqueeze(-3) if B.dim() == 4 else B


def _heads(B: torch.Tensor, bias: torch.Tensor | None, nheads: int, acc) -> torch.Tensor:
    """(..., R, g, n) group tensor -> (..., R, h, n) per-head, plus the (h, [R,] n) bias."""
    G = B.shape[-2]
    k = B.to(acc).repeat_interleave(nheads // G, dim=-2)
    if bias is not None:
        R, N = k.shape[-3], k.shape[-1]
        k = k + bias.to(acc).reshape(nheads, R, N).transpose(0, 1)
    return k


def _rank_weight(W: torch.Tensor | None, R: int, H: int, P: int, acc, device) -> torch.Tensor:
    """(h, R, p) per-channel MIMO weight, or ones when absent -> (R, h, p)."""
    if W is None:
        return torch.ones(R, H, P, dtype=acc, device=device)
    return W.to(acc).reshape(H, R, P).transpose(0, 1)


def mamba3(x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
           W_x=None, W_z=None, W_o=None, initial_states=None, chunk_size=64,
           return_final_states=False):
    """Chunked Mamba-3 scan over a whole sequence.

    Arguments (b batch, l length, h heads, p headdim, g groups (h % g == 0), n state, R MIMO rank,
    S rotated pairs, 2S <= n):
      x      (b, l, h, p)          the values v (before W_x)
      dt     (b, l, h)             step size Delta > 0 (softplus and bias already applied)
      A      (b, l, h)             A_t <= 0, data-dependent (activation and floor already applied)
      trap   (b, l, h) or None     raw trapezoid gate, lam = sigmoid(trap); None means lam = 1
                                   (exponential Euler, i.e. Mamba-2)
      B, C   (b, l, g, n) SISO or (b, l, R, g, n) MIMO: RMS-normalised keys / queries
      angles (b, l, S) or None     raw rotary angles, shared across heads
      B_bias, C_bias (h, n) SISO or (h, R, n) MIMO, or None: added after the norm
      D      (h,) or None          skip, y += D v
      z      (b, l, h, p) or None  gate, y_r *= silu(z * W_z[r])
      W_x, W_z, W_o (h, R, p) or None: MIMO per-channel weights (None = ones). With R > 1 and
                                   W_o None the per-rank outputs are returned, un-summed.
      initial_states  None or a tuple (angle (b,h,S), ssm (b,h,p,n), k, v), any entry may be None
                      (zeros): k (b,h,n) SISO or (b,R,h,n) MIMO is the last rotated k (bias
                      included), v (b,h,p) the last x.
      chunk_size      any length works; l need not be a multiple of it.
    Returns y (b, l, h, p) in x.dtype ((b, l, R, h, p) for MIMO without W_o), and with
    return_final_states also the final (angle mod 2pi, ssm, k, v) in the same layout as the
    initial states, in float32 (float64 for float64 input).
    """
    bsz, L, H, P = x.shape
    siso = B.dim() == 4
    acc = _acc_dtype(x)
    dev = x.device
    Bm, Cm = _ranked(B), _ranked(C)
    R, N = Bm.shape[2], Bm.shape[-1]
    S = 0 if angles is None else angles.shape[-1]
    Q = chunk_size

    # per-position quantities (b, l, ...)
    dt = dt.to(acc)
    adt = dt * A.to(acc)
    lam = torch.sigmoid(trap.to(acc)) if trap is not None else torch.ones_like(dt)
    wd = lam * dt                                            # diagonal weight gamma_t
    bcur = (1 - lam) * dt                                    # b_{t-1}: multiplies v_{t-1} k_{t-1}^T
    bnext = F.pad(bcur[:, 1:], (0, 0, 0, 1))                 # b_t = (1 - lam_{t+1}) dt_{t+1}, 0 at end
    w = wd + bnext
    k = _heads(Bm, B_bias, H, acc)                           # (b, l, R, h, n)
    q = _heads(Cm, C_bias, H, acc)
    v = x.to(acc).unsqueeze(2) * _rank_weight(W_x, R, H, P, acc, dev)   # (b, l, R, h, p)

    # initial states (zeros where absent)
    ang0, ssm0, k0, v0 = initial_states if initial_states is not None else (None,) * 4
    ang0 = torch.zeros(bsz, H, S, dtype=acc, device=dev) if ang0 is None else ang0.to(acc)
    ssm0 = torch.zeros(bsz, H, P, N, dtype=acc, device=dev) if ssm0 is None else ssm0.to(acc)
    k0 = torch.zeros(bsz, R, H, N, dtype=acc, device=dev) if k0 is None else k0.to(acc).reshape(bsz, R, H, N)
    v0 = torch.zeros(bsz, H, P, dtype=acc, device=dev) if v0 is None else v0.to(acc)

    # pad to whole chunks: dt = 0 there, so padded steps neither decay nor write the state
    nc = -(-L // Q)
    pad = nc * Q - L

    def chunks(t):
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(bsz, nc, Q, *t.shape[2:])

    dt_c, adt_c, wd_c, w_c, k_c, q_c, v_c = map(chunks, (dt, adt, wd, w, k, q, v))

    # rotary angles: cumulative within a chunk, offsets carried chunk to chunk modulo 2 pi
    if S:
        phi = math.pi * torch.tanh(chunks(angles.to(acc))).unsqueeze(3) * dt_c.unsqueeze(-1)  # (b,c,Q,h,S)
        local = phi.cumsum(2)
        offsets, off = [], ang0
        for c in range(nc):
            offsets.append(off)
            off = torch.remainder(off + local[:, c, -1], TWO_PI)
        theta = local + torch.stack(offsets, 1).unsqueeze(2)                     # (b,c,Q,h,S)
        k_c = rotate_pairs(k_c, theta.unsqueeze(3))
        q_c = rotate_pairs(q_c, theta.unsqueeze(3))
        final_angle = torch.remainder(theta.reshape(bsz, nc * Q, H, S)[:, L - 1], TWO_PI)
    else:
        final_angle = ang0

    # 1. intra-chunk quadratic form
    cum = adt_c.cumsum(2)                                                        # (b,c,Q,h)
    seg = cum.unsqueeze(3) - cum.unsqueeze(2)                                    # [t, s] = cum_t - cum_s
    idx = torch.arange(Q, device=dev)
    lower = idx[:, None] > idx[None, :]
    diag = idx[:, None] == idx[None, :]
    lower_, diag_ = lower[:, :, None], diag[:, :, None]
    decay = torch.exp(seg.masked_fill(~lower_, float("-inf")))
    Wts = torch.where(lower_, decay * w_c.unsqueeze(2), torch.where(diag_, wd_c.unsqueeze(3), 0.0))  # (b,c,t,s,h)
    scores = torch.einsum("bctrhn,bcsuhn->bchtrsu", q_c, k_c)
    scores = scores * Wts.permute(0, 1, 4, 2, 3)[:, :, :, :, None, :, None]
    y = torch.einsum("bchtrsu,bcsuhp->bctrhp", scores, v_c)

    # 2. each chunk's own contribution to the (folded) state at its end
    to_end = torch.exp(cum[:, :, -1:] - cum) * w_c                                # (b,c,Q,h)
    states = torch.einsum("bcsh,bcsuhp,bcsuhn->bchpn", to_end, v_c, k_c)

    # 3. pass states between chunks; the initial state folds in the first step's beta term
    Hf = ssm0 + bcur[:, 0, :, None, None] * torch.einsum("brhp,brhn->bhpn", v0.unsqueeze(1) * _rank_weight(W_x, R, H, P, acc, dev), k0)
    chunk_decay = torch.exp(cum[:, :, -1])                                       # (b,c,h)
    incoming = []
    for c in range(nc):
        incoming.append(Hf)
        Hf = chunk_decay[:, c, :, None, None] * Hf + states[:, c]
    incoming = torch.stack(incoming, 1)                                          # (b,c,h,p,n)

    # 4. incoming state read by every query of the chunk
    y = y + torch.einsum("bchpn,bctrhn->bctrhp", incoming, q_c) * torch.exp(cum)[:, :, :, None, :, None]

    y = y.reshape(bsz, nc * Q, R, H, P)[:, :L]
    v_l = v.reshape(bsz, L, R, H, P)
    if D is not None:
        y = y + D.to(acc).view(H, 1) * v_l
    if z is not None:
        y = y * F.silu(z.to(acc).unsqueeze(2) * _rank_weight(W_z, R, H, P, acc, dev))
    if siso:
        y = y[:, :, 0]
    elif W_o is not None:
        y = (y * _rank_weight(W_o, R, H, P, acc, dev)).sum(2)
    y = y.to(x.dtype)
    if not return_final_states:
        return y
    k_last = k_c.reshape(bsz, nc * Q, R, H, N)[:, L - 1]
    final = (final_angle, Hf, k_last[:, 0] if siso else k_last, x[:, L - 1].to(acc))
    return y, final


def mamba3_state_update(state, x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None,
                        D=None, z=None, W_x=None, W_z=None, W_o=None):
    """One decode step; updates ``state = (angle, ssm, k, v)`` in place and returns y.

    Shapes are those of ``mamba3`` without the length axis: x (b,h,p), dt/A/trap (b,h),
    B/C (b,g,n) SISO or (b,R,g,n) MIMO, angles (b,S), z (b,h,p); the state tuple is laid out as
    mamba3's initial/final states (angle (b,h,S), ssm (b,h,p,n), k (b,h,n) or (b,R,h,n), v (b,h,p)),
    float32 (or float64). Returns y (b,h,p) ((b,R,h,p) for MIMO without W_o) in x.dtype.
    """
    angle_s, ssm_s, k_s, v_s = state
    bsz, H, P = x.shape
    siso = B.dim() == 3
    acc = ssm_s.dtype
    dev = x.device
    Bm = B.unsqueeze(1) if siso else B                                           # (b,R,g,n)
    Cm = C.unsqueeze(1) if siso else C
    R, N = Bm.shape[1], Bm.shape[-1]

    dt = dt.to(acc)
    lam = torch.sigmoid(trap.to(acc)) if trap is not None else torch.ones_like(dt)
    alpha = torch.exp(dt * A.to(acc))
    beta = (1 - lam) * dt * alpha
    gamma = lam * dt
    k = _heads(Bm, B_bias, H, acc)                                               # (b,R,h,n)
    q = _heads(Cm, C_bias, H, acc)
    if angles is not None and angles.shape[-1]:
        theta = torch.remainder(angle_s + math.pi * torch.tanh(angles.to(acc)).unsqueeze(1) * dt.unsqueeze(-1), TWO_PI)
        angle_s.copy_(theta)
        k = rotate_pairs(k, theta.unsqueeze(1))
        q = rotate_pairs(q, theta.unsqueeze(1))
    wx = _rank_weight(W_x, R, H, P, acc, dev)
    v = x.to(acc).unsqueeze(1) * wx                                              # (b,R,h,p)
    v_prev = v_s.unsqueeze(1) * wx
    k_prev = k_s.reshape(bsz, R, H, N)
    Hn = (alpha[..., None, None] * ssm_s
          + beta[..., None, None] * torch.einsum("brhp,brhn->bhpn", v_prev, k_prev)
          + gamma[..., None, None] * torch.einsum("brhp,brhn->bhpn", v, k))
    ssm_s.copy_(Hn)
    k_s.copy_(k[:, 0] if siso else k)
    v_s.copy_(x.to(acc))
    y = torch.einsum("bhpn,brhn->brhp", Hn, q)
    if D is not None:
        y = y + D.to(acc).view(H, 1) * v
    if z is not None:
        y = y * F.silu(z.to(acc).unsqueeze(1) * _rank_weight(W_z, R, H, P, acc, dev))
    if siso:
        y = y[:, 0]
    elif W_o is not None:
        y = (y * _rank_weight(W_o, R, H, P, acc, dev)).sum(1)
    return y.to(x.dtype)
