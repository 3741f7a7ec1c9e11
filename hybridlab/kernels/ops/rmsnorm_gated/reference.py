"""RMSNorm fused with a silu gate (Mamba-2's output norm), pure torch."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rmsnorm_gated(x, weight, z=None, eps=1e-5, group_size=None, norm_before_gate=False):
    """Group RMSNorm with an optional silu(z) gate.

    x, z: (..., d); weight: (d,); group_size divides d (None = d, one group).
    norm_before_gate=False: y = rmsnorm(x * silu(z)) * weight   (Mamba-2 default)
    norm_before_gate=True:  y = rmsnorm(x) * weight * silu(z)
    Computed in float32 (float64 stays float64), returned in x's dtype.
    """
    dtype = x.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    h = x.to(acc)
    if z is not None and not norm_before_gate:
        h = h * F.silu(z.to(acc))
    d = h.shape[-1]
    g = group_size or d
    hg = h.reshape(*h.shape[:-1], d // g, g)
    hg = hg * torch.rsqrt(hg.pow(2).mean(-1, keepdim=True) + eps)
    y = hg.reshape(h.shape) * weight.to(acc)
    if z is not None and norm_before_gate:
        y = y * F.silu(z.to(acc))
    return y.to(dtype)
