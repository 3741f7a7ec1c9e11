"""Mamba-1 selective scan, pure torch (the semantics of mamba-ssm's ``selective_scan_fn``).

Recurrence, per batch b, channel d and state n (h is the SSM state):

    dt_t  = softplus(delta_t + delta_bias)              (if delta_softplus)
    h_t   = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t   = sum_n C_t * h_t + D * u_t
    out_t = y_t * silu(z_t)

Both directions are one linear recurrence H_t = a_t H_{t-1} + x_t (the backward's adjoint runs
it in reverse time), solved by ``_linear_scan``. A Python loop over every step would be slow on
the CPU, so that scan is two-level: the sequence is cut into ~sqrt(L) chunks, one loop over the
steps of a chunk runs all chunks at once from a zero state, a second loop over chunks carries the
true state across, and the carry is added back times the running product of the decays (each in
[0, 1], so nothing overflows): ~2*sqrt(L) vectorised steps instead of L. The backward is written
out (below) rather than left to autograd: it needs a fraction of the memory and time.

Tensors are laid out time-first, (l, b, g, d/g, n): every step is one contiguous block and a group
of channels shares B and C by broadcasting. seq_idx (b, l) int marks packed sequences: where the
id changes the decay is 0, so the state restarts.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x, beta=1.0, threshold=20.0)          # = x above 20, as the CUDA kernel


def _linear_scan(a, x, h0, reverse=False):
    """H_t = a_t * H_{t-1} + x_t along dim 0 (H_{t+1} if reverse), started from h0.
    Returns (H, the final carry)."""
    l = a.shape[0]
    T = max(1, math.isqrt(l))
    nc = -(-l // T)
    if nc * T > l:                        # identity steps (a=1, x=0) at the far end of time
        pad = (nc * T - l, *a.shape[1:])
        a, x = torch.cat([a, a.new_ones(pad)]), torch.cat([x, x.new_zeros(pad)])
    a, x = a.reshape(nc, T, *a.shape[1:]), x.reshape(nc, T, *x.shape[1:])
    # written straight into H and P (no per-step temporaries: fresh big tensors cost page faults)
    H, P = torch.empty_like(x), torch.empty_like(a)
    order = range(T - 1, -1, -1) if reverse else range(T)
    first = order[0]
    H[:, first], P[:, first] = x[:, first], a[:, first]
    for prev, t in zip(order, order[1:]):                        # (1) every chunk from zero
        torch.addcmul(x[:, t], a[:, t], H[:, prev], out=H[:, t])
        torch.mul(P[:, prev], a[:, t], out=P[:, t])
    end = 0 if reverse else T - 1
    starts, carry = torch.empty_like(H[:, 0]), h0                # (2) carry across chunks
    for c in (range(nc - 1, -1, -1) if reverse else range(nc)):
        starts[c] = carry
        carry = torch.addcmul(H[c, end], P[c, end], carry)
    H.addcmul_(P, starts[:, None])                               # (3) add the carry back
    return H.reshape(nc * T, *H.shape[2:])[:l], carry


def _time_first(t, shape5):
    """(b, d, l) -> (l, b, G, d/G, 1), contiguous (so products with it come out contiguous)."""
    return t.permute(2, 0, 1).reshape(shape5).contiguous()


def _bc5(M):
    """B or C (b, n, l) | (b, G, n, l) -> (l, b, G, 1, n): broadcasts over a group's channels.
    Contiguous, so products with it come out contiguous (else reshapes downstream copy)."""
    M = M.permute(2, 0, 1)[:, :, None, None] if M.dim() == 3 else M.permute(3, 0, 1, 2)[:, :, :, None]
    return M.contiguous()


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, h0, seq_idx, softplus):
        b, d, l = u.shape
        n = A.shape[-1]
        ct = _compute_dtype(u)
        G = 1 if B.dim() == 3 else B.shape[1]
        shape5 = (l, b, G, d // G, 1)
        raw = delta.to(ct) + (delta_bias.to(ct)[:, None] if delta_bias is not None else 0)
        dt = _softplus(raw) if softplus else raw
        u5, dt5 = _time_first(u.to(ct), shape5), _time_first(dt, shape5)
        A5 = A.to(ct).reshape(G, d // G, n)
        B5, C5 = _bc5(B.to(ct)), _bc5(C.to(ct))
        a = torch.mul(dt5, A5).exp_()                               # (l, b, G, d/G, n)
        if seq_idx is not None:                                     # restart: decay 0
            a[1:] *= (seq_idx[:, 1:] == seq_idx[:, :-1]).t().to(ct).reshape(l - 1, b, 1, 1, 1)
        x = (dt5 * u5) * B5
        h0_ = h0.to(ct).reshape(b, G, d // G, n) if h0 is not None else x.new_zeros(x.shape[1:])
        H, last = _linear_scan(a, x, h0_)
        y = (H @ C5.transpose(-1, -2)).reshape(l, b, d).permute(1, 2, 0)   # (b, d, l)
        if D is not None:
            y = y + D.to(ct)[:, None] * u.to(ct)
        out = y * F.silu(z.to(ct)) if z is not None else y
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h0, raw, a, H, y)
        ctx.softplus = softplus
        return out.to(u.dtype), last.reshape(b, d, n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, h0, raw, a, H, y = ctx.saved_tensors
        b, d, l = u.shape
        n = A.shape[-1]
        ct = a.dtype
        G = a.shape[2]
        shape5 = (l, b, G, d // G, 1)
        dt = _softplus(raw) if ctx.softplus else raw
        uf = u.to(ct)
        dout = dout.to(ct)
        dz = None
        if z is not None:                                           # out = y * silu(z)
            sg = torch.sigmoid(z.to(ct))
            dz = (dout * y * sg * (1 + z.to(ct) * (1 - sg))).to(z.dtype)
            dout = dout * z.to(ct) * sg
        dD = (dout * uf).sum((0, 2)).to(D.dtype) if D is not None else None
        dy5, u5, dt5 = (_time_first(t, shape5) for t in (dout, uf, dt))
        A5 = A.to(ct).reshape(G, d // G, n)
        B5, C5 = _bc5(B.to(ct)), _bc5(C.to(ct))
        # adjoint g_t = dL/dH_t = C_t dy_t + a_{t+1} g_{t+1}, from g_L = dlast (a_L = 1)
        alpha = torch.cat([a[1:], a.new_ones(1, *a.shape[1:])])
        g, _ = _linear_scan(alpha, dy5 * C5, dlast.to(ct).reshape(b, G, d // G, n), reverse=True)
        del alpha
        ga = torch.empty_like(H)                                    # dL/da_t * a_t = g a_t H_{t-1}
        if h0 is not None:
            torch.mul(a[0], h0.to(ct).reshape(b, G, d // G, n), out=ga[0])
        else:
            ga[0].zero_()
        torch.mul(a[1:], H[:-1], out=ga[1:])
        ga.mul_(g)
        dA = torch.einsum("kgcn,kgc->gcn", ga.flatten(0, 1), dt5.flatten(0, 1)[..., 0])
        dA = dA.reshape(d, n).to(A.dtype)
        gB = g @ B5.transpose(-1, -2)                               # dL/d(dt u), (.., d/G, 1)
        ga.mul_(A5)                                                 # d(a_t)/d(dt_t) = A a_t
        ddt = (gB * u5 + ga.sum(-1, keepdim=True)).reshape(l, b, d).permute(1, 2, 0)
        du = (gB * dt5).reshape(l, b, d).permute(1, 2, 0)
        if D is not None:
            du = du + dout * D.to(ct)[:, None]
        if ctx.softplus:
            ddt = ddt * torch.where(raw > 20, 1.0, torch.sigmoid(raw))
        dbias = ddt.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None

        def group_sum(t5, v5, like):        # sum over a group's channels of t5 * v5 -> B's shape
            s = (v5.transpose(-1, -2) @ t5)[..., 0, :].permute(1, 2, 3, 0)  # (b, G, n, l)
            return (s[:, 0] if like.dim() == 3 else s).to(like.dtype)

        dB = group_sum(g, dt5 * u5, B)
        dC = group_sum(H, dy5, C)
        dh0 = (a[0] * g[0]).reshape(b, d, n).to(h0.dtype) if h0 is not None else None
        return (du.to(u.dtype), ddt.to(delta.dtype), dA, dB, dC, dD, dz, dbias, dh0, None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False, seq_idx=None):
    """u, delta, z: (b,d,l); A: (d,n); B, C: (b,n,l) or (b,g,n,l), channel i uses group
    i // (d/g); D, delta_bias: (d,); initial_state: (b,d,n); seq_idx: (b,l) int. Math in fp32
    (fp64 stays fp64); out in u's dtype. Returns out (b,d,l), or (out, last_state (b,d,n) in the
    compute dtype). Every floating input gets a gradient, last_state's gradient flows back too."""
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError(f"B {tuple(B.shape)} and C {tuple(C.shape)} need the same groups")
    out, last = _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                     bool(delta_softplus))
    return (out, last) if return_last_state else out


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
