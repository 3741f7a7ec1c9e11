"""Triton rmsnorm_gated (interpreted on CPU) against the torch reference: output and x, z, weight grads."""
import pytest
import torch

from hybridlab.kernels.ops.rmsnorm_gated import fused, reference

TOL = 1e-4
DEV = "cuda" if torch.cuda.is_available() else "cpu"   # CPU: the interpreter (conftest)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("norm_before_gate", [False, True], ids=["gate_then_norm", "norm_then_gate"])
@pytest.mark.parametrize("group_size", [None, 8, 12], ids=["one_group", "g8", "g12_not_pow2"])
@pytest.mark.parametrize("with_z", [True, False], ids=["z", "no_z"])
def test_fused_matches_reference(norm_before_gate, group_size, with_z):
    x = torch.randn(3, 7, 24, requires_grad=True, device=DEV)
    z = torch.randn(3, 7, 24, requires_grad=True, device=DEV) if with_z else None
    w = (1 + 0.3 * torch.randn(24, device=DEV)).requires_grad_(True)
    kw = dict(z=z, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate)
    y, y_ref = fused.rmsnorm_gated(x, w, **kw), reference.rmsnorm_gated(x, w, **kw)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert rel(y, y_ref) <= TOL
    leaves = [x, w] + ([z] if with_z else [])
    gy = torch.randn_like(y)
    got = torch.autograd.grad((y * gy).sum(), leaves)
    want = torch.autograd.grad((y_ref * gy).sum(), leaves)
    for name, a, b in zip(["x", "weight", "z"], got, want):
        assert rel(a, b) <= TOL, name


def test_strided_gate_and_many_rows():
    # z as a column slice of a wider projection (how Mamba2 passes it); more rows than strips
    zx = torch.randn(2, 50, 40, requires_grad=True, device=DEV)
    z = zx[..., :16]
    x = torch.randn(2, 50, 16, requires_grad=True, device=DEV)
    w = torch.randn(16, requires_grad=True, device=DEV)
    y, y_ref = fused.rmsnorm_gated(x, w, z), reference.rmsnorm_gated(x, w, z)
    assert rel(y, y_ref) <= TOL
    gy = torch.randn_like(y)
    got = torch.autograd.grad((y * gy).sum(), [x, w, zx])
    want = torch.autograd.grad((y_ref * gy).sum(), [x, w, zx])
    for a, b in zip(got, want):
        assert rel(a, b) <= TOL
