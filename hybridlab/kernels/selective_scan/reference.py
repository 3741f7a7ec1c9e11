"""Mamba-1 selective scan, pure torch (the semantics of mamba-ssm's ``selective_scan_fn``).

Recurrence, per batch b, channel d and state n (x is the SSM state):

    delta_t = softplus(delta_t + delta_bias)            (if delta_softplus)
    x_t     = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t
    y_t     = sum_n C_t * x_t + D * u_t
    out_t   = y_t * silu(z_t)

A Python loop over every step is slow on the CPU, so the scan is two-level: the sequence is
cut into ~sqrt(L) chunks; one loop over the steps inside a chunk runs all chunks at once from a
zero state, a second loop over chunks carries the true state from chunk to chunk, and the
carried state is added back times the running product of the decays (each in [0, 1], so it
never overflows). About 2*sqrt(L) small vectorised steps instead of L; autograd does the
backward.

seq_idx (b, l) int marks packed sequences: where the id changes the state restarts at zero.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x, beta=1.0, threshold=20.0)          # = x above 20, as the CUDA kernel


def _expand_groups(M: torch.Tensor, d: int) -> torch.Tensor:
    """B or C (b,n,l) | (b,g,n,l) -> (l,b,d|1,n), time leading; channel i uses group i // (d/g)."""
    if M.dim() == 3:
        return M.permute(2, 0, 1)[:, :, None]
    g = M.shape[1]
    return M.permute(3, 0, 1, 2).repeat_interleave(d // g, dim=2)


def _restart_mask(seq_idx: torch.Tensor, dtype) -> torch.Tensor:
    """(b, l): 0 where a new packed sequence starts (the decay into that step is cut), else 1."""
    keep = torch.ones(seq_idx.shape, dtype=dtype, device=seq_idx.device)
    keep[:, 1:] = (seq_idx[:, 1:] == seq_idx[:, :-1]).to(dtype)
    return keep


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False, seq_idx=None):
    """u, delta, z: (b,d,l); A: (d,n); B, C: (b,n,l) or (b,g,n,l); D, delta_bias: (d,);
    initial_state: (b,d,n); seq_idx: (b,l) int. Math in fp32 (fp64 stays fp64); out in u's dtype.
    Returns out (b,d,l), or (out, last_state (b,d,n) in the compute dtype)."""
    b, d, l = u.shape
    ct = _compute_dtype(u)
    n = A.shape[-1]
    uf, dt = u.to(ct), delta.to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)[:, None]
    if delta_softplus:
        dt = _softplus(dt)
    # Time-leading layout (l,b,d,n): every per-step slice below is one contiguous block.
    Bf, Cf = _expand_groups(B.to(ct), d), _expand_groups(C.to(ct), d)
    dt_l = dt.permute(2, 0, 1)                                      # (l,b,d)
    dA = dt_l[..., None] * A.to(ct)                                 # (l,b,d,n) log-decay <= 0
    if seq_idx is not None:                                         # exp(-inf) = 0: restart
        cut = _restart_mask(seq_idx, ct).t()[:, :, None, None]
        dA = torch.where(cut > 0, dA, torch.full_like(dA, -math.inf))
    dBu = (dt_l * uf.permute(2, 0, 1))[..., None] * Bf              # (l,b,d,n)

    # Two-level scan: pad L to nc*T with identity steps (log-decay 0, input 0).
    T = max(1, math.isqrt(l))
    nc = -(-l // T)
    pad = nc * T - l
    if pad:
        dA, dBu = F.pad(dA, (0, 0, 0, 0, 0, 0, 0, pad)), F.pad(dBu, (0, 0, 0, 0, 0, 0, 0, pad))
    dA = dA.reshape(nc, T, b, d, n)
    dBu = dBu.reshape(nc, T, b, d, n)
    # (1) every chunk from a zero state, all chunks at once. (unbind, not indexing: the
    # backward of t separate index ops would zero-fill t full-size gradients.)
    # The running product of decays (cum) is the decay from the chunk start to step t.
    h, hs = torch.zeros_like(dBu[:, 0]), []
    cum, cums = torch.ones_like(h), []
    for a_t, bu_t in zip(torch.exp(dA).unbind(1), dBu.unbind(1)):
        h = a_t * h + bu_t
        cum = a_t * cum
        hs.append(h)
        cums.append(cum)
    h_local, cum = torch.stack(hs, dim=1), torch.stack(cums, dim=1)  # (nc,T,b,d,n)
    # (2) carry the true state across chunks.
    h = initial_state.to(ct) if initial_state is not None else dBu.new_zeros(b, d, n)
    starts = []
    for a_c, h_c in zip(cums[-1].unbind(0), hs[-1].unbind(0)):
        starts.append(h)
        h = a_c * h + h_c
    last_state = h
    # (3) state at every step = local part + carried start state decayed to that step.
    states = h_local + cum * torch.stack(starts)[:, None]
    states = states.reshape(nc * T, b, d, n)[:l]

    y = (states * Cf).sum(dim=-1).permute(1, 2, 0)                  # (b,d,l)
    if D is not None:
        y = y + D.to(ct)[:, None] * uf
    if z is not None:
        y = y * F.silu(z.to(ct))
    out = y.to(u.dtype)
    return (out, last_state) if return_last_state else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decode step. state: (b,d,n), updated in place; x, dt, z: (b,d); A: (d,n);
    B, C: (b,n) or (b,g,n); D, dt_bias: (d,). Returns y (b,d) in x's dtype."""
    ct = _compute_dtype(x)
    d = x.shape[1]
    delta = dt.to(ct)
    if dt_bias is not None:
        delta = delta + dt_bias.to(ct)
    if dt_softplus:
        delta = _softplus(delta)
    Bf = B.to(ct)[:, None] if B.dim() == 2 else B.to(ct).repeat_interleave(d // B.shape[1], dim=1)
    Cf = C.to(ct)[:, None] if C.dim() == 2 else C.to(ct).repeat_interleave(d // C.shape[1], dim=1)
    xf = x.to(ct)
    h = torch.exp(delta[..., None] * A.to(ct)) * state.to(ct) + (delta * xf)[..., None] * Bf
    state.copy_(h)
    y = (h * Cf).sum(-1)
    if D is not None:
        y = y + D.to(ct) * xf
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(x.dtype)
