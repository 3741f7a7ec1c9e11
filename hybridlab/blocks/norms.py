"""Normalisation layers: RMSNorm, and a factory picking RMSNorm or LayerNorm by name."""
from __future__ import annotations

import torch
from torch import nn

NORMS = ("rmsnorm", "layernorm")


class RMSNorm(nn.Module):
    """y = x / rms(x) * weight, computed in float32 (float64 stays float64) for stability."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        h = x.to(acc)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.weight.to(acc)).to(x.dtype)


def make_norm(kind: str, dim: int, eps: float = 1e-5) -> nn.Module:
    """The norm named by ``spec.model.norm``: "rmsnorm" or "layernorm"."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")
