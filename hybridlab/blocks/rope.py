"""Rotary position embedding (RoPE) over the first ``fraction`` of each head's dimensions.

Pairs are split in halves (dim i rotates with dim i + rot_dim/2, the GPT-NeoX/Llama layout).
Angles are computed on the fly in float32 (float64 for float64 inputs): no cached buffer that a
``model.to(bfloat16)`` could round, and nothing to move between devices.
"""
from __future__ import annotations

import torch
from torch import nn


def rotary_dim(head_dim: int, fraction: float) -> int:
    """Number of dimensions that rotate: head_dim * fraction, rounded down to even."""
    return 2 * int(head_dim * fraction // 2)


class Rotary(nn.Module):
    def __init__(self, head_dim: int, fraction: float = 1.0, theta: float = 10000.0):
        super().__init__()
        self.rot_dim = rotary_dim(head_dim, fraction)
        self.theta = theta

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: (B, H, L, head_dim); positions: (L,) absolute positions of the L tokens."""
        r = self.rot_dim
        if r == 0:
            return x
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        inv_freq = self.theta ** (-torch.arange(0, r, 2, device=x.device, dtype=acc) / r)
        angles = positions.to(acc)[:, None] * inv_freq[None, :]          # (L, r/2)
        cos, sin = angles.cos(), angles.sin()
        x1, x2, rest = x[..., : r // 2].to(acc), x[..., r // 2 : r].to(acc), x[..., r:]
        rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
        return torch.cat([rotated, rest], dim=-1)
