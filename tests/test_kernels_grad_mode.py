"""A forward that will not be differentiated saves nothing for a backward.

Inside an autograd Function's forward, ``ctx.needs_input_grad`` reports the inputs'
``requires_grad`` even under ``torch.no_grad()``, so the ops decide before ``apply``
(hybridlab.kernels.grad_mode). A model evaluated under no_grad has parameters that require grad:
Mamba-1 must then write no checkpoints (b * l/8 * d * n fp32), and the SSD and Mamba-3 forwards
no pre-gate output. With grad they do. The outputs are the same either way.
"""
import torch

from hybridlab.kernels.grad_mode import wants_grad
from hybridlab.kernels.ops.mamba3 import fused as mamba3
from hybridlab.kernels.ops.selective_scan import fused as ss
from hybridlab.kernels.ops.ssd import fused as ssd

from test_kernels_mamba3 import make_case
from test_kernels_selective_scan import ALL, make
from test_mamba2 import make_inputs

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def leaves(kw):
    """The floating-point tensors as fresh leaves that require grad (like a model's parameters)."""
    return {k: (v.detach().clone().to(DEV).requires_grad_() if isinstance(v, torch.Tensor)
                and v.is_floating_point() else v) for k, v in kw.items()}


def spy(monkeypatch, module, name, saved):
    """Wrap module.name; saved(args, kwargs) -> what to record for each call."""
    calls, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(saved(args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def both_ways(fn):
    """fn() under torch.no_grad() and with grad on: the two outputs."""
    with torch.no_grad():
        quiet = fn()
    loud = fn()
    return quiet, loud


def test_wants_grad():
    a, b = torch.zeros(2), torch.zeros(2, requires_grad=True)
    assert not wants_grad(a, None) and wants_grad(a, b, None)
    with torch.no_grad():
        assert not wants_grad(b)


def test_selective_scan_writes_checkpoints_only_with_grad(monkeypatch):
    calls = spy(monkeypatch, ss, "_fwd", lambda a, k: k["save"] if "save" in k else a[11])
    kw, flags = make(2, 5, 4, 21, None, ALL)
    kw = leaves(kw)
    quiet, loud = both_ways(lambda: ss.selective_scan(**kw, **flags))
    assert calls == [False, True]
    torch.testing.assert_close(quiet, loud.detach(), rtol=0, atol=0)


def test_ssd_stores_pre_gate_output_only_with_grad(monkeypatch):
    calls = spy(monkeypatch, ssd, "forward_pass", lambda a, k: k.get("store_y", True))
    kw = leaves(make_inputs(1, 24, 2, 8, 1, 8, ("z", "D", "dt_bias", "softplus"), dtype=torch.float32))
    quiet, loud = both_ways(lambda: ssd.ssd(chunk_size=16, **kw))
    assert calls == [False, True]
    torch.testing.assert_close(quiet, loud.detach(), rtol=0, atol=0)


def test_mamba3_stores_pre_gate_output_only_with_grad(monkeypatch):
    calls = spy(monkeypatch, ssd, "forward_pass", lambda a, k: k.get("store_y", True))
    args, kw, ini = make_case(L=20, H=2, P=16, N=16)
    args = [a.detach().clone().to(DEV).requires_grad_() if a is not None else None for a in args]
    kw = leaves(kw)
    ini = tuple(t.to(DEV) if t is not None else None for t in ini)
    quiet, loud = both_ways(lambda: mamba3.mamba3(*args, **kw, initial_states=ini, chunk_size=16))
    assert calls == [False, True]
    torch.testing.assert_close(quiet, loud.detach(), rtol=0, atol=0)
