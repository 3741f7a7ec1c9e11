"""Mamba-1 Triton kernels (selective scan, decode step, causal conv1d) on the GPU in bf16, against
the torch reference in fp32 run on the same bf16-rounded inputs; and the block on the Triton path.
Outputs are allocated from memory poisoned with NaN (an unwritten element shows), inputs are fresh
random tensors on every run (the seed is in the failure message).
Run on the GPU machine: python -m pytest -m gpu tests/gpu/test_gpu_mamba1.py"""
import pytest
import torch

from hybridlab.blocks import ForwardContext, LayerContext, get_block
from hybridlab.kernels.ops.causal_conv1d import fused as conv_fused, reference as conv_ref
from hybridlab.kernels.ops.selective_scan import fused, reference
from gpu_helpers import block_backends_agree, fresh_gen, poison, rel

pytestmark = pytest.mark.gpu
BF16_TOL = 1e-2   # relative L2 error: bf16 inputs/outputs, fp32 math on both sides


def run_scan(fn, kw, flags, w_out, w_last, upcast):
    leaves = {k: ((v.float() if upcast else v).detach().requires_grad_() if v.is_floating_point() else v)
              for k, v in kw.items()}
    poison()
    out, last = fn(**leaves, **flags, return_last_state=True)
    ((out.float() * w_out).sum() + (last.float() * w_last).sum()).backward()
    torch.cuda.synchronize()
    return out, last, {k: v.grad for k, v in leaves.items() if v.is_floating_point()}


@pytest.mark.parametrize("shape", [
    # b, d, l, n, groups, extras
    (4, 2048, 4096, 16, None, ()),                     # the gpu-baselines.md shape
    (2, 512, 1000, 16, 2, ("h0", "seq")),              # l not a multiple of the tile, g > 1
    (1, 256, 777, 64, None, ("h0",)),                  # n = 64
    (3, 96, 300, 5, 3, ("h0",)),                       # n not a power of two, small groups
    (1, 512, 3000, 32, 2, ("h0", "seq")),              # n = 32, time split (the state in rows of 8)
    (2, 256, 1500, 128, None, ()),                     # n = 128 (rows of 16 on 8 lanes per channel)
])
def test_gpu_selective_scan_bf16(shape):
    b, d, l, n, G, extras = shape
    g, seed = fresh_gen()
    rn = lambda *s, scale=1.0: (torch.randn(*s, generator=g, device="cuda") * scale)  # noqa: E731
    BC = (b, n, l) if G is None else (b, G, n, l)
    kw = dict(u=rn(b, d, l).bfloat16(), delta=rn(b, d, l, scale=0.1).bfloat16(),
              A=-(torch.arange(1, n + 1, device="cuda").float().expand(d, n)
                  * (0.9 + 0.2 * torch.rand(d, n, generator=g, device="cuda"))),
              B=rn(*BC).bfloat16(), C=rn(*BC).bfloat16(), D=rn(d), z=rn(b, d, l).bfloat16(),
              delta_bias=torch.log(torch.expm1(torch.exp(rn(d) - 4.0))))
    if "h0" in extras:
        kw["initial_state"] = rn(b, d, n, scale=0.3)
    if "seq" in extras:
        kw["seq_idx"] = (torch.arange(l, device="cuda") >= l // 3).int().add(
            (torch.arange(l, device="cuda") >= l // 2).int())[None].repeat(b, 1)
    flags = dict(delta_softplus=True)
    w_out, w_last = rn(b, d, l), rn(b, d, n)
    out, last, grads = run_scan(fused.selective_scan, kw, flags, w_out, w_last, upcast=False)
    rout, rlast, rgrads = run_scan(reference.selective_scan, kw, flags, w_out, w_last, upcast=True)
    msg = f"seed {seed}"
    assert out.dtype == torch.bfloat16 and not out.isnan().any(), msg
    assert rel(out, rout) <= BF16_TOL, msg
    assert not last.isnan().any() and rel(last, rlast) <= BF16_TOL, msg
    for k, ref in rgrads.items():
        assert grads[k] is not None and not grads[k].isnan().any(), f"{k} {msg}"
        assert rel(grads[k], ref) <= BF16_TOL, f"{k}: {rel(grads[k], ref):.2e} {msg}"


@pytest.mark.parametrize("G", [None, 4])
def test_gpu_selective_state_update(G):
    b, d, n = 64, 2048, 16
    g, seed = fresh_gen()
    rn = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    BC = (b, n) if G is None else (b, G, n)
    args = dict(x=rn(b, d).bfloat16(), dt=(rn(b, d) * 0.1).bfloat16(), A=-torch.rand(d, n, generator=g, device="cuda") * 16,
                B=rn(*BC).bfloat16(), C=rn(*BC).bfloat16(), D=rn(d), z=rn(b, d).bfloat16(),
                dt_bias=rn(d) - 4, dt_softplus=True)
    state = rn(b, d, n) * 0.3
    s1, s2 = state.clone(), state.clone()
    poison()
    y1 = fused.selective_state_update(s1, **args)
    y2 = reference.selective_state_update(s2, **{k: (v.float() if torch.is_tensor(v) else v) for k, v in args.items()})
    assert not y1.isnan().any() and rel(y1, y2) <= BF16_TOL, f"seed {seed}"
    assert rel(s1, s2) <= 1e-5, f"seed {seed}"


@pytest.mark.parametrize("shape", [(4, 2048, 4096, 4, False, False), (2, 512, 1000, 4, True, True),
                                   (2, 300, 257, 3, True, False)])
def test_gpu_causal_conv1d_bf16(shape):
    b, d, l, W, h0, seq = shape
    g, seed = fresh_gen()
    rn = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    kw = dict(x=rn(b, d, l).bfloat16(), weight=rn(d, W) * W ** -0.5, bias=rn(d) * 0.1,
              initial_state=rn(b, d, W - 1).bfloat16() if h0 else None,
              seq_idx=(torch.arange(l, device="cuda") >= l // 2).int()[None].repeat(b, 1) if seq else None)
    w_y = rn(b, d, l)
    res = []
    for fn, up in ((conv_fused.causal_conv1d, False), (conv_ref.causal_conv1d, True)):
        leaves = {k: ((v.float() if up else v).detach().requires_grad_() if v is not None and v.is_floating_point() else v)
                  for k, v in kw.items()}
        poison()
        y = fn(**leaves, activation="silu")
        (y.float() * w_y).sum().backward()
        res.append((y, {k: v.grad for k, v in leaves.items() if v is not None and v.is_floating_point()}))
    (y, gr), (ry, rgr) = res
    assert not y.isnan().any() and rel(y, ry) <= BF16_TOL, f"seed {seed}"
    for k in rgr:
        assert not gr[k].isnan().any() and rel(gr[k], rgr[k]) <= BF16_TOL, f"{k} seed {seed}"


def test_gpu_causal_conv1d_update():
    b, d, W = 64, 2048, 4
    g, seed = fresh_gen()
    x = torch.randn(b, d, generator=g, device="cuda").bfloat16()
    w, bias = torch.randn(d, W, generator=g, device="cuda"), torch.randn(d, generator=g, device="cuda")
    st = torch.randn(b, d, W - 1, generator=g, device="cuda").bfloat16()
    s1, s2 = st.clone(), st.clone()
    poison()
    y1 = conv_fused.causal_conv1d_update(x, s1, w, bias, "silu")
    y2 = conv_ref.causal_conv1d_update(x, s2, w, bias, "silu")
    assert not y1.isnan().any() and rel(y1, y2) <= BF16_TOL and torch.equal(s1, s2), f"seed {seed}"


def test_gpu_block_triton_path_matches_reference(monkeypatch):
    """The block's real call pattern (strided views, fp32) through both backends; decode == forward."""
    cls = get_block("mamba1")
    m = cls(cls.Config(), LayerContext(index=0, name="M", d_model=256, n_layers=2)).cuda()
    x = torch.randn(2, 300, 256, device="cuda")
    block_backends_agree(m, x, ForwardContext(), monkeypatch)
