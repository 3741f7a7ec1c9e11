"""Mamba-3 SISO on the SSD kernels.

The chunked form in reference.py says, per head (k, q rotated and biased, v = x):

    y_t = sum_{s<=t} exp(cum_t - cum_s) w_s (q_t . k_s) v_s + exp(cum_t) q_t H'_{-1}  -  b_t (q_t . k_t) v_t

with cum the running sum of dt*A, w_s = lam_s dt_s + b_s and b_t = (1 - lam_{t+1}) dt_{t+1}.
The first two terms are exactly an SSD whose decay (dt*A) and input scale (w) are separate inputs
(``ssd_decoupled``); the last is a per-position skip weight -b_t (q_t . k_t) on x, which that SSD
also takes (D_pos). So SISO needs no kernels of its own beyond the rotation (triton_rotate.py):

1. torch: the (b, l, h) scalars and the rotary angles theta (b, l, h, S) (in-chunk cumsum plus
   per-chunk offsets kept modulo 2 pi in float64, as the reference does);
2. ``_RotateKQ``: per-head rotated k, q in x's dtype and q . k (Triton, forward and backward);
3. ``ssd_decoupled`` (the Mamba-2 kernels) with D, the per-position skip and the z gate;
4. torch: the folded initial state and the final (angle, ssm, k, v) states.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
import triton

from ..ssd.fused import ssd_decoupled
from . import reference
from .triton_rotate import rotate_bwd_kernel, rotate_fwd_kernel

TWO_PI = 2.0 * math.pi
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
#: SSD chunk length for SISO (None: the caller's chunk_size). A speed knob only: the SSD result
#: does not depend on it. HYBRIDLAB_MAMBA3_SSD_CHUNK overrides it (for timing).
SSD_CHUNK = int(os.environ["HYBRIDLAB_MAMBA3_SSD_CHUNK"]) if os.environ.get("HYBRIDLAB_MAMBA3_SSD_CHUNK") else None
ROTATE_BT = 32       # steps per rotation program


def _p2(n: int) -> int:
    return max(2, triton.next_power_of_2(max(int(n), 1)))


class _RotateKQ(torch.autograd.Function):
    """(B, C (b, l, g, n), biases (h, n) fp32 or None, theta (b, l, h, S) fp32 or None, h heads)
    -> k, q (b, l, h, n) in ``dtype`` and qk (b, l, h) fp32."""

    @staticmethod
    def forward(ctx, B, C, Bb, Cb, theta, H, dtype):
        bsz, L, G, N = B.shape
        ctx.H = H
        S = theta.shape[-1] if theta is not None else 0
        k = torch.empty(bsz, L, H, N, device=B.device, dtype=dtype)
        q = torch.empty_like(k)
        qk = torch.empty(bsz, L, H, device=B.device, dtype=torch.float32)
        dummy = qk
        rotate_fwd_kernel[(triton.cdiv(L, ROTATE_BT), H, bsz)](
            B, C, Bb if Bb is not None else dummy, Cb if Cb is not None else dummy,
            theta if theta is not None else dummy, k, q, qk, L, H, G, N, S,
            B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
            BT=ROTATE_BT, BN2=_p2((N + 1) // 2), HAS_BIAS=Bb is not None, HAS_ROT=S > 0,
            num_warps=1 if _INTERPRET else 4)
        ctx.save_for_backward(B, C, Bb, Cb, theta)
        return k, q, qk

    @staticmethod
    def backward(ctx, dk, dq, dqk):
        B, C, Bb, Cb, theta = ctx.saved_tensors
        bsz, L, G, N = B.shape
        H = ctx.H
        S = theta.shape[-1] if theta is not None else 0
        dev, f32 = B.device, torch.float32
        nblk = triton.cdiv(L, ROTATE_BT)
        dk = torch.zeros(bsz, L, H, N, device=dev, dtype=f32) if dk is None else dk.contiguous()
        dq = torch.zeros_like(dk) if dq is None else dq.contiguous()
        dB = torch.empty(bsz, L, G, N, device=dev, dtype=f32)
        dC = torch.empty_like(dB)
        has_bias = Bb is not None
        dBb = torch.empty(bsz, nblk, H, N, device=dev, dtype=f32) if has_bias else None
        dCb = torch.empty_like(dBb) if has_bias else None
        dth = torch.empty(bsz, L, H, S, device=dev, dtype=f32) if S else None
        dummy = dB
        rotate_bwd_kernel[(nblk, G, bsz)](
            B, C, Bb if has_bias else dummy, Cb if has_bias else dummy, theta if S else dummy,
            dk, dq, dqk.contiguous() if dqk is not None else dummy,
            dB, dC, dBb if has_bias else dummy, dCb if has_bias else dummy, dth if S else dummy,
            L, H, G, N, S, nblk,
            B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
            BT=ROTATE_BT, BN2=_p2((N + 1) // 2), HAS_BIAS=has_bias, HAS_ROT=S > 0,
            HAS_QK=dqk is not None, num_warps=1 if _INTERPRET else 4)
        return (dB.to(B.dtype), dC.to(C.dtype), dBb.sum((0, 1)) if has_bias else None,
                dCb.sum((0, 1)) if has_bias else None, dth, None, None)


def _angles(angles, dtf, ang0, Q):
    """theta (b, l, h, S) fp32: in-chunk cumsum of pi*tanh(angles)*dt plus the angle entering each
    chunk (float64 cumsum of chunk totals, modulo 2 pi), and the final angle (b, h, S)."""
    bsz, L, H = dtf.shape
    S = angles.shape[-1]
    nc = triton.cdiv(L, Q)
    pad = nc * Q - L
    phi = (math.pi * torch.tanh(angles.float())).unsqueeze(2) * dtf.unsqueeze(-1)          # (b, l, h, S)
    phi = F.pad(phi, (0, 0, 0, 0, 0, pad)).view(bsz, nc, Q, H, S)
    local = phi.cumsum(2)
    start = ang0.double() if ang0 is not None else torch.zeros(bsz, H, S, dtype=torch.float64, device=dtf.device)
    ends = start.unsqueeze(1) + local[:, :, -1].double().cumsum(1)                           # (b, nc, h, S)
    off = torch.remainder(ends - local[:, :, -1].double(), TWO_PI).float()
    theta = (local + off.unsqueeze(2)).view(bsz, nc * Q, H, S)[:, :L]
    return theta.contiguous(), torch.remainder(ends[:, -1], TWO_PI).float()


def mamba3_siso(x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
                initial_states=None, chunk_size=64, return_final_states=False):
    """SISO Mamba-3, arguments and results as ``reference.mamba3`` with B, C of shape (b, l, g, n)."""
    bsz, L, H, P = x.shape
    G, N = B.shape[2:]
    S = 0 if angles is None else angles.shape[-1]
    dev = x.device
    dtf = dt.float()
    adt = dtf * A.float()
    if trap is None:                                  # lam = 1: exponential Euler (Mamba-2)
        bcur, w, D_pos_scale = None, dtf, None
    else:
        lam = torch.sigmoid(trap.float())
        bcur = (1 - lam) * dtf
        bnext = F.pad(bcur[:, 1:], (0, 0, 0, 1))      # b_t, 0 at the last position
        w, D_pos_scale = lam * dtf + bnext, bnext

    ang0, ssm0, k0, v0 = initial_states if initial_states is not None else (None,) * 4
    if S:
        theta, final_angle = _angles(angles, dtf, ang0, chunk_size)
    else:
        theta = None
        final_angle = ang0.float() if ang0 is not None else torch.zeros(bsz, H, 0, device=dev)
    if B_bias is not None or C_bias is not None:
        zero = torch.zeros(H, N, device=dev)
        Bb = B_bias.float().reshape(H, N) if B_bias is not None else zero
        Cb = C_bias.float().reshape(H, N) if C_bias is not None else zero
        Bb, Cb = Bb.contiguous(), Cb.contiguous()
    else:
        Bb = Cb = None
    k, q, qk = _RotateKQ.apply(B.contiguous(), C.contiguous(), Bb, Cb, theta, H, x.dtype)
    D_pos = -D_pos_scale * qk if D_pos_scale is not None else None

    h0 = None                                         # the folded initial state H'_{-1}
    if ssm0 is not None or (bcur is not None and k0 is not None and v0 is not None):
        h0 = ssm0.float() if ssm0 is not None else torch.zeros(bsz, H, P, N, device=dev)
        if bcur is not None and k0 is not None and v0 is not None:
            h0 = h0 + bcur[:, 0, :, None, None] * v0.float().unsqueeze(-1) * k0.float().reshape(bsz, H, N).unsqueeze(-2)

    Q = SSD_CHUNK or chunk_size
    y, hfin = ssd_decoupled(x, w, adt, k, q, Q, D=D, D_pos=D_pos, z=z, initial_states=h0,
                            return_final_states=True)
    if not return_final_states:
        return y
    k_last = reference._heads(B[:, L - 1].unsqueeze(1), B_bias, H, torch.float32)[:, 0]     # (b, h, n)
    if S:
        k_last = reference.rotate_pairs(k_last, final_angle)
    return y, (final_angle, hfin, k_last, x[:, L - 1].float())
