"""The one place that decides which implementation of a kernel runs.

Rule: fused Triton kernels on CUDA tensors, the pure-torch reference elsewhere.
``HYBRIDLAB_KERNELS=reference|triton`` overrides the rule (``triton`` on CPU needs
``TRITON_INTERPRET=1``, which is how CI tests the kernels).

Each op lives in its own folder, ``hybridlab/kernels/ops/<folder>/``, with ``reference.py`` (torch)
next to ``fused.py`` (Triton); both expose a function of the op's name with the same signature.
The fused scans also take ``plan=``, their launch plan (``plan.py`` beside them): one frozen
value of launch settings, chosen once at import from the environment (knobs.py), as this module
chooses the implementation; a caller may pass another (``dataclasses.replace``).
(The folders sit under ``ops/`` so that ``hybridlab.kernels.ssd`` stays the dispatched function
rather than being shadowed by a sub-package of the same name.)
"""
from __future__ import annotations

import importlib
import os

import torch

from hybridlab.errors import SettingError

BACKENDS = ("reference", "triton")
_MODULE_FOR_BACKEND = {"reference": "reference", "triton": "fused"}

# op name -> package (relative to hybridlab.kernels) holding reference.py and fused.py
OPS = {
    "selective_scan": "ops.selective_scan",
    "selective_state_update": "ops.selective_scan",
    "ssd": "ops.ssd",
    "ssd_state_update": "ops.ssd",
    "mamba3": "ops.mamba3",
    "mamba3_state_update": "ops.mamba3",
    "causal_conv1d": "ops.causal_conv1d",
    "causal_conv1d_update": "ops.causal_conv1d",
    "rmsnorm_gated": "ops.rmsnorm_gated",
}

_cache: dict[tuple[str, str], object] = {}


def backend_for(t: torch.Tensor) -> str:
    forced = os.environ.get("HYBRIDLAB_KERNELS", "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"HYBRIDLAB_KERNELS={forced!r}: expected one of {', '.join(BACKENDS)}")
        return forced
    return "triton" if t.is_cuda else "reference"


def implementation(op: str, backend: str):
    key = (op, backend)
    fn = _cache.get(key)
    if fn is None:
        try:
            module = importlib.import_module(f"hybridlab.kernels.{OPS[op]}.{_MODULE_FOR_BACKEND[backend]}")
        except ModuleNotFoundError as e:
            # triton is a Linux-only dependency: elsewhere asking for the fused kernels is a
            # setting to change, not a traceback
            if (e.name or "").split(".")[0] != "triton":
                raise
            raise SettingError("the fused kernels need the triton package, which is Linux-only; unset "
                               "HYBRIDLAB_KERNELS or use reference (HYBRIDLAB_KERNELS=reference)") from None
        fn = _cache[key] = getattr(module, op)
    return fn


def _first_tensor(args, kwargs) -> torch.Tensor:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    raise TypeError("kernel called without any tensor argument")


def make_op(op: str):
    def dispatched(*args, **kwargs):
        return implementation(op, backend_for(_first_tensor(args, kwargs)))(*args, **kwargs)

    dispatched.__name__ = op
    dispatched.__qualname__ = op
    dispatched.__doc__ = f"Dispatches to hybridlab.kernels.{OPS[op]}.(reference|fused).{op}; see there."
    return dispatched
