"""Launch a Triton kernel for less host time: once a call has compiled it, later calls with the
same specialization go straight to the compiled kernel's own launcher.

Why: at the bench shapes the Mamba-2/3 forward+backward is partly host-bound. Triton's JIT
launch (argument binding, specialization, cache lookup, checks) took 28-61 us of host time per
launch on the H100 machines, against 10-20 us for the compiled kernel's launcher
(scripts/gpu/launch_overhead.py, 2026-11-22), and a Mamba-3 forward+backward launches a dozen
kernels.

What Triton specializes a compiled kernel on, and so what the plan key holds: each tensor's dtype
and whether its address is 16-byte aligned, every other argument's value (integers: == 1 and
divisibility by 16; None; floats and constexprs), the launch options, and the device. The first
call with a new key goes through Triton as usual and keeps the compiled kernel it returns.

    fast = FastKernel(my_kernel)          # a @triton.jit function
    fast[grid](*args, **constexprs)       # as my_kernel[grid](...)

Off (plain Triton launches) under the interpreter, or with HYBRIDLAB_FAST_LAUNCH=0.
"""
from __future__ import annotations

import inspect

import torch

from . import knobs

#: compiled kernels kept per kernel (a new shape or stride is a new key; training reuses a few)
MAX_PLANS = 256


class FastKernel:
    def __init__(self, jit_fn):
        self.fn = jit_fn
        params = list(inspect.signature(jit_fn.fn).parameters.values())
        self.names = [p.name for p in params]
        self.defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        self.plans: dict[tuple, object] = {}

    def __getitem__(self, grid):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        return lambda *args, **kwargs: self.run(grid, args, kwargs)

    def run(self, grid, args, kwargs, options=None, key=None):
        """Launch on a 3-dim ``grid``. ``options`` (num_warps, num_stages) go to Triton on a miss
        and are not in the key: a caller passing them must derive them from what the key holds
        (the autotuner's choice for these arguments does). ``key``: plan_key(args, kwargs), when
        the caller has it already."""
        options = options or {}
        if not knobs.FAST_LAUNCH:
            return self.fn[grid](*args, **kwargs, **options)
        key = plan_key(args, kwargs) if key is None else key
        compiled = self.plans.get(key)
        if compiled is None:
            compiled = self.fn[grid](*args, **kwargs, **options)   # Triton's own launch
            if compiled is not None and len(self.plans) < MAX_PLANS:   # None: the interpreter
                self.plans[key] = compiled
            return compiled
        # the launcher takes every parameter in signature order (it skips the constexprs)
        rest = (kwargs[n] if n in kwargs else self.defaults[n] for n in self.names[len(args):])
        compiled[grid](*args, *rest)
        return compiled


def plan_key(args, kwargs) -> tuple:
    """Everything Triton specializes on (see the module docstring), hashable."""
    device = None
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append((a.dtype, a.data_ptr() % 16 == 0))
            device = device or a.device
        else:
            parts.append(a)
    return (device, tuple(parts), tuple(kwargs.items()))
