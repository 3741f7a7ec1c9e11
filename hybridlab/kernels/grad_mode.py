"""Whether a call of an op will be differentiated, decided where the op is called.

Inside ``torch.autograd.Function.forward`` grad mode is always off and ``ctx.needs_input_grad``
still reports the inputs' ``requires_grad``, also under ``torch.no_grad()``. So a forward that
saves work for its backward (checkpoints, pre-gate outputs) must ask here, before ``apply``:
a model evaluated under ``no_grad`` has parameters that require grad, and would otherwise pay
for a backward that never runs.
"""
from __future__ import annotations

import torch


def wants_grad(*tensors) -> bool:
    """True when grad mode is on and one of ``tensors`` (None allowed) requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
