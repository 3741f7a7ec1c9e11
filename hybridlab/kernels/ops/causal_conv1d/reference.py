"""Depthwise causal 1-D convolution (the short conv of Mamba-1/2), pure torch."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation in ("silu", "swish"):
        return F.silu(y)
    if activation is None:
        return y
    raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")


def causal_conv1d(x, weight, bias=None, activation=None, initial_state=None, seq_idx=None,
                  return_final_state=False):
    """y[b,d,t] = act(bias[d] + sum_k weight[d,k] * x[b,d,t-(W-1)+k]).

    x: (b, d, l); weight: (d, W); bias: (d,); initial_state: (b, d, W-1), the W-1 inputs
    before x[...,0] (zeros when None); seq_idx: (b, l) int, taps across a change of id are dropped.
    Returns y (b, d, l) and, if asked, the final state (b, d, W-1): the last W-1 inputs.
    """
    b, d, l = x.shape
    W = weight.shape[1]
    if initial_state is None:
        initial_state = x.new_zeros(b, d, W - 1)
    xp = torch.cat([initial_state.to(x.dtype), x], dim=-1)          # (b, d, W-1+l)
    y = torch.zeros(b, d, l, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    for k in range(W):
        shift = W - 1 - k                                          # tap k reads x[t - shift]
        tap = xp[..., k:k + l] * weight[:, k, None]
        if seq_idx is not None and shift > 0:
            same = torch.zeros_like(seq_idx, dtype=torch.bool)
            same[:, shift:] = seq_idx[:, shift:] == seq_idx[:, :-shift]
            tap = tap * same[:, None, :]
        y = y + tap
    if bias is not None:
        y = y + bias[:, None]
    y = _activate(y, activation).to(x.dtype)
    if return_final_state:
        return y, xp[..., -(W - 1):].clone() if W > 1 else x.new_zeros(b, d, 0)
    return y


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    """One decode step. x: (b, d); conv_state: (b, d, W-1), updated in place. Returns y (b, d)."""
    W = weight.shape[1]
    window = torch.cat([conv_state.to(x.dtype), x[..., None]], dim=-1)   # (b, d, W)
    y = (window * weight).sum(-1)
    if bias is not None:
        y = y + bias
    if W > 1:
        conv_state.copy_(window[..., 1:])
    return _activate(y, activation).to(x.dtype)
