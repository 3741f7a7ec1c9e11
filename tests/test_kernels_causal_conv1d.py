"""Triton causal conv1d (forward, every gradient) and its decode update vs the torch reference, fp32.

On a CPU machine these run through the Triton interpreter (conftest sets TRITON_INTERPRET=1).
"""
import pytest
import torch

from hybridlab.kernels.ops.causal_conv1d import fused, reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def run(fn, kw, act, w_y, w_fin):
    leaves = {k: (v.clone().requires_grad_() if v is not None and v.is_floating_point() else v)
              for k, v in kw.items()}
    y, fin = fn(**leaves, activation=act, return_final_state=True)
    ((y.float() * w_y).sum() + (fin.float() * w_fin).sum()).backward()
    return y, fin, {k: v.grad for k, v in leaves.items() if v is not None and v.is_floating_point()}


@pytest.mark.parametrize("case", [
    # b, d, l, W, bias, activation, initial_state, seq_idx, (b, l, d) layout
    (2, 5, 20, 4, True, "silu", True, False, False),
    (1, 3, 70, 3, False, None, False, True, True),      # l spans two 64-position tiles
    (2, 20, 9, 1, True, "silu", False, False, False),   # W = 1: no state
    (1, 4, 13, 2, True, "swish", True, True, False),
    (2, 4, 3, 4, False, "silu", True, False, True),     # l < W - 1: final state reaches h0
    (1, 17, 6, 4, True, None, False, False, False),     # d not a multiple of the block
])
def test_conv_forward_and_grads(case):
    b, d, l, W, bias, act, h0, seq, strided = case
    x = torch.randn(b, l, d, device=DEV).transpose(1, 2) if strided else torch.randn(b, d, l, device=DEV)
    cut = [0] * (l // 3) + [1] * 2 + [2] * (l - l // 3 - 2)
    kw = dict(x=x, weight=torch.randn(d, W, device=DEV),
              bias=torch.randn(d, device=DEV) if bias else None,
              initial_state=torch.randn(b, d, W - 1, device=DEV) if h0 else None,
              seq_idx=torch.tensor([cut] * b, dtype=torch.int32, device=DEV) if seq else None)
    w_y, w_fin = torch.randn(b, d, l, device=DEV), torch.randn(b, d, W - 1, device=DEV)
    y, fin, g = run(fused.causal_conv1d, kw, act, w_y, w_fin)
    ry, rfin, rg = run(reference.causal_conv1d, kw, act, w_y, w_fin)
    assert y.shape == ry.shape and y.dtype == x.dtype
    assert rel(y, ry) <= 1e-4
    assert torch.equal(fin, rfin)
    assert set(g) == set(rg)
    for k in rg:
        assert g[k].shape == kw[k].shape, k
        assert rel(g[k], rg[k]) <= 1e-4, k
    if h0 and not seq:      # the initial state really feeds the output
        assert g["initial_state"].abs().sum() > 0


def test_conv_bf16():
    b, d, l, W = 2, 6, 11, 4
    kw = dict(x=torch.randn(b, d, l, device=DEV).bfloat16(), weight=torch.randn(d, W, device=DEV),
              bias=torch.randn(d, device=DEV), initial_state=None, seq_idx=None)
    y = fused.causal_conv1d(**kw, activation="silu")
    ry = reference.causal_conv1d(**kw, activation="silu")
    assert y.dtype == torch.bfloat16 and rel(y, ry) <= 1e-2


@pytest.mark.parametrize("W", [1, 2, 4])
@pytest.mark.parametrize("act", [None, "silu"])
def test_conv_update(W, act):
    b, d = 3, 70
    x, w, bias = torch.randn(b, d, device=DEV), torch.randn(d, W, device=DEV), torch.randn(d, device=DEV)
    state = torch.randn(b, d, W - 1, device=DEV)
    s1, s2 = state.clone(), state.clone()
    y1 = fused.causal_conv1d_update(x, s1, w, bias, act)
    y2 = reference.causal_conv1d_update(x, s2, w, bias, act)
    assert rel(y1, y2) <= 1e-5
    assert torch.equal(s1, s2)
    if W > 1:
        assert torch.equal(s1[..., -1], x)
