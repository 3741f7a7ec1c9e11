"""Mamba-2 SSD (state space duality), chunked, pure torch.

Per head h (group g = h // (H/G)), with Δ_t = clamp(softplus(dt_t + dt_bias), dt_limit):

    H_t = exp(Δ_t A_h) H_{t-1} + Δ_t x_t B_tᵀ        (state P×N)
    y_t = H_t C_t + D x_t,   then  y_t * silu(z_t)

computed the chunked way (ssd_minimal): quadratic form inside a chunk, one state per chunk,
then a short recurrence over chunk states. ``seq_idx`` resets the state wherever the id changes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def process_dt(dt, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf)):
    """Raw dt (fp32 or fp64) -> Δ: + bias, softplus, clamp (only when the limit is not the default)."""
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    lo, hi = dt_limit
    if lo > 0.0 or hi < math.inf:
        dt = dt.clamp(min=lo, max=hi)
    return dt


def segment_ids(seq_idx: torch.Tensor) -> torch.Tensor:
    """(b, l) ids -> (b, l) segment number: 0, then +1 at every change of id (so equality = no reset between)."""
    change = torch.zeros_like(seq_idx, dtype=torch.int64)
    change[:, 1:] = (seq_idx[:, 1:] != seq_idx[:, :-1]).to(torch.int64)
    return change.cumsum(-1)


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """a (..., T) -> (..., T, T): out[i, j] = a[j+1] + ... + a[i] for i >= j, -inf above the diagonal.

    Summed directly (masked cumsum), not as cumsum[i] - cumsum[j], so no cancellation."""
    T = a.shape[-1]
    rep = a[..., None].expand(*a.shape, T)                              # rep[..., i, j] = a[i]
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    s = rep.masked_fill(~strict, 0).cumsum(-2)
    return s.masked_fill(~torch.tril(torch.ones_like(strict)), -math.inf)


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
        dt_limit=(0.0, math.inf), initial_states=None, seq_idx=None, return_final_states=False):
    """Chunked SSD with mamba_chunk_scan_combined semantics.

    x: (b, l, h, p); dt: (b, l, h); A: (h,); B, C: (b, l, g, n); D: (h,) or (h, p);
    z: (b, l, h, p); dt_bias: (h,); initial_states: (b, h, p, n), the state before t=0 (it only
    reaches the first segment when seq_idx is given); seq_idx: (b, l) int.
    Math in fp32 (fp64 stays fp64); output in x's dtype. Returns out, or (out, final_states)
    with final_states (b, h, p, n) in the math dtype.
    """
    acc = _acc_dtype(x.dtype)
    delta = process_dt(dt.to(acc), dt_bias, dt_softplus, dt_limit)          # (b, l, h)
    return _chunked(x, delta, delta * A.to(acc), B, C, chunk_size, D, None, z, initial_states, seq_idx,
                    return_final_states)


def ssd_decoupled(x, scale, log_decay, B, C, chunk_size, D=None, D_pos=None, z=None,
                  initial_states=None, return_final_states=False):
    """SSD with the decay and the input scale as separate per-step inputs (Mamba-3 runs on this):

        H_t = exp(log_decay_t) H_{t-1} + scale_t x_t B_tᵀ,   y_t = H_t C_t + (D + D_pos_t) x_t,  y *= silu(z)

    scale, log_decay, D_pos: (b, l, h); the rest as in ``ssd``. Plain ``ssd`` is the case
    log_decay = Δ·A, scale = Δ, D_pos = None.
    """
    acc = _acc_dtype(x.dtype)
    return _chunked(x, scale.to(acc), log_decay.to(acc), B, C, chunk_size, D, D_pos, z, initial_states,
                    None, return_final_states)


def _chunked(x, delta, dA, B, C, chunk_size, D, D_pos, z, initial_states, seq_idx, return_final_states):
    """The chunked SSD on an input scale ``delta`` and a per-step log decay ``dA``, both (b, l, h)."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    acc = delta.dtype
    Q = chunk_size
    nc = -(-l // Q)
    pad = nc * Q - l
    xa, Ba, Ca = x.to(acc), B.to(acc), C.to(acc)
    Ba = Ba.repeat_interleave(h // g, dim=2)                               # (b, l, h, n)
    Ca = Ca.repeat_interleave(h // g, dim=2)
    # padding with Δ = 0 (decay 1, no input) leaves the state untouched past the end
    X = F.pad(xa * delta[..., None], (0, 0, 0, 0, 0, pad))
    dA = F.pad(dA, (0, 0, 0, pad))
    Bc, Cc = F.pad(Ba, (0, 0, 0, 0, 0, pad)), F.pad(Ca, (0, 0, 0, 0, 0, pad))

    # chunked views: X (b, c, q, h, p); B, C (b, c, q, h, n); dA (b, h, c, q)
    X = X.view(b, nc, Q, h, p)
    Bc, Cc = Bc.view(b, nc, Q, h, n), Cc.view(b, nc, Q, h, n)
    dA = dA.view(b, nc, Q, h).permute(0, 3, 1, 2)
    dA_cs = dA.cumsum(-1)

    if seq_idx is not None:
        seg = F.pad(segment_ids(seq_idx), (0, pad), mode="replicate").view(b, nc, Q)
    else:
        seg = torch.zeros(b, nc, Q, dtype=torch.int64, device=x.device)
    seg_end = seg[..., -1]                                                 # (b, c)
    seg_prev = F.pad(seg_end, (1, 0))[:, :-1]                              # segment of the state entering chunk c

    # 1. inside each chunk: y = (C Bᵀ ∘ decay) X
    decay = torch.exp(_segsum(dA))                                          # (b, h, c, q, s)
    same = (seg[..., :, None] == seg[..., None, :])[:, None]                # (b, 1, c, q, s)
    decay = decay * same
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, decay, X)

    # 2. each chunk's own contribution to the state at its end
    decay_to_end = torch.exp(dA_cs[..., -1:] - dA_cs) * (seg == seg_end[..., None])[:, None]
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_to_end, X)

    # 3. pass states across chunks: S_c = decay_c * S_{c-1} + states_c (zeroed at a reset)
    chunk_decay = torch.exp(dA_cs[..., -1]) * (seg_end == seg_prev)[:, None]   # (b, h, c)
    s = (initial_states.to(acc) if initial_states is not None
         else x.new_zeros(b, h, p, n, dtype=acc))
    entering = []
    for c in range(nc):
        entering.append(s)
        s = chunk_decay[:, :, c, None, None] * s + states[:, c]
    entering = torch.stack(entering, dim=1)                                 # (b, c, h, p, n)

    # 4. the entering state's contribution to every position of the chunk
    decay_from_start = torch.exp(dA_cs) * (seg == seg_prev[..., None])[:, None]   # (b, h, c, q)
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, entering, decay_from_start)

    y = (Y_diag + Y_off).reshape(b, nc * Q, h, p)[:, :l]
    if D is not None:
        Dv = D.to(acc)
        y = y + xa * (Dv[:, None] if Dv.dim() == 1 else Dv)
    if D_pos is not None:
        y = y + xa * D_pos.to(acc)[..., None]
    if z is not None:
        y = y * F.silu(z.to(acc))
    out = y.to(x.dtype)
    return (out, s) if return_final_states else out


def ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                     dt_limit=(0.0, math.inf)):
    """One decode step. state: (b, h, p, n), updated in place; x, z: (b, h, p); dt: (b, h);
    B, C: (b, g, n). Returns y (b, h, p) in x's dtype. dt_limit as in ``ssd`` (so decode == forward)."""
    h = x.shape[1]
    g = B.shape[1]
    acc = _acc_dtype(x.dtype)
    delta = process_dt(dt.to(acc), dt_bias, dt_softplus, dt_limit)          # (b, h)
    Bh = B.to(acc).repeat_interleave(h // g, dim=1)                         # (b, h, n)
    Ch = C.to(acc).repeat_interleave(h // g, dim=1)
    xa = x.to(acc)
    decay = torch.exp(delta * A.to(acc))[..., None, None]
    new = state.to(acc) * decay + (delta[..., None] * xa)[..., None] * Bh[:, :, None, :]
    state.copy_(new)
    y = torch.einsum("bhpn,bhn->bhp", new, Ch)
    if D is not None:
        Dv = D.to(acc)
        y = y + xa * (Dv[:, None] if Dv.dim() == 1 else Dv)
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y.to(x.dtype)
