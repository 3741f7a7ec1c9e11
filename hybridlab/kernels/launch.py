"""Launch a Triton kernel for less host time: once a call has compiled it, later calls with the
same specialization go straight to the compiled kernel's own launcher (without Triton's runner
and its empty launch hooks, when no hook is installed). Host code's cdiv and next_pow2 live
here too: Triton's are constexpr functions, slow to call from the host.

Why: at the benchmark shapes the Mamba-2/3 forward+backward is partly host-bound. Triton's JIT
launch (argument binding, specialization, cache lookup, checks) takes a few times the host time
of the compiled kernel's own launcher, and a Mamba-3 forward+backward launches a dozen kernels.

What Triton specializes a compiled kernel on, and so what the plan key holds: each tensor's dtype
and whether its address is 16-byte aligned, every other argument's value (integers: == 1 and
divisibility by 16; None; floats and constexprs), the launch options, and the device. The first
call with a new key goes through Triton as usual and keeps the compiled kernel it returns.

    fast = FastKernel(my_kernel)          # a @triton.jit function
    fast[grid](*args, **constexprs)       # as my_kernel[grid](...)

Off (plain Triton launches) under the interpreter, or with HYBRIDLAB_FAST_LAUNCH=0 (``enabled``,
chosen once at import).
"""
from __future__ import annotations

import inspect

import torch
import triton

from . import knobs

#: compiled kernels kept per kernel (a new shape or stride is a new key; training reuses a few)
MAX_PLANS = 256


class FastKernel:
    def __init__(self, jit_fn, enabled: bool = knobs.FAST_LAUNCH):
        self.fn = jit_fn
        self.enabled = enabled
        params = list(inspect.signature(jit_fn.fn).parameters.values())
        self.names = [p.name for p in params]
        self.defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        #: plan key -> (compiled kernel, the parameters after the positional ones, in order)
        self.plans: dict[tuple, tuple] = {}

    def __getitem__(self, grid):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        return lambda *args, **kwargs: self.run(grid, args, kwargs)

    def run(self, grid, args, kwargs, options=None, key=None):
        """Launch on a 3-dim ``grid``. ``options`` (num_warps, num_stages) go to Triton on a miss
        and are not in the key: a caller passing them must derive them from what the key holds
        (the autotuner's choice for these arguments does). ``key``: plan_key(args, kwargs), when
        the caller has it already."""
        options = options or {}
        if not self.enabled:
            return self.fn[grid](*args, **kwargs, **options)
        key = plan_key(args, kwargs) if key is None else key
        plan = self.plans.get(key)
        if plan is None:
            compiled = self.fn[grid](*args, **kwargs, **options)   # Triton's own launch
            if compiled is not None and len(self.plans) < MAX_PLANS:   # None: the interpreter
                # the launcher takes every parameter in signature order (it skips the
                # constexprs); the key holds the keyword values, so they are fixed per plan
                rest = tuple(kwargs[n] if n in kwargs else self.defaults[n] for n in self.names[len(args):])
                self.plans[key] = (compiled, rest)
            return compiled
        compiled, rest = plan
        launch_compiled(compiled, grid, (*args, *rest))
        return compiled


def plan_key(args, kwargs) -> tuple:
    """Everything Triton specializes on (see the module docstring), hashable: the device of the
    first tensor, then per argument its dtype and alignment (a tensor) or its value, then the
    keyword arguments."""
    first = args[0] if args and isinstance(args[0], torch.Tensor) else \
        next((a for a in args if isinstance(a, torch.Tensor)), None)
    device = first.get_device() if first is not None else None
    return (device, *[(a.dtype, not a.data_ptr() & 15) if isinstance(a, torch.Tensor) else a for a in args],
            *kwargs.items())


def launch_compiled(compiled, grid, args) -> None:
    """Launch a compiled kernel with every parameter in ``args``, as ``compiled[grid](*args)``
    does, for less host time where it can: with no launch hooks installed (a profiler such as
    Proton installs them), call the kernel's launcher directly with none. Triton 3.6's runner
    otherwise builds the launch metadata and calls two empty hook chains on every launch, a large
    share of a Mamba-3 forward+backward's host time."""
    if not hasattr(compiled, "packed_metadata") or not _hooks_idle():
        compiled[grid](*args)
        return
    if not _DRIVER:
        from triton.runtime import driver
        _DRIVER.extend((driver.active.get_current_device, driver.active.get_current_stream))
    run = compiled.run                           # loads the module on the first call
    stream = _DRIVER[1](_DRIVER[0]())
    run(grid[0], grid[1], grid[2], stream, compiled.function, compiled.packed_metadata, None, None, None, *args)


_DRIVER: list = []     # (current device, current stream) functions of Triton's active driver


def _hooks_idle() -> bool:
    """No launch hooks installed (before Triton 3.4, which has no knobs: say no, take the runner)."""
    rt = getattr(getattr(triton, "knobs", None), "runtime", None)
    return rt is not None and _idle(rt.launch_enter_hook) and _idle(rt.launch_exit_hook)


def _idle(hook) -> bool:
    """No hook: None, or a hook chain with nothing in it."""
    return hook is None or getattr(hook, "calls", None) == []


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for host code. (triton.cdiv and next_power_of_2 are constexpr functions since
    Triton 3.5; a host call goes through the constexpr machinery, microseconds each, and a Mamba-3
    forward+backward made two dozen of them.)"""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (0 for n <= 0, as triton.next_power_of_2)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
