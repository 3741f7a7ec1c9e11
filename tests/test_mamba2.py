"""Mamba-2: the chunked SSD reference against the plain recurrence, and the block's contract."""
import math

import pytest
import torch
import torch.nn.functional as F

from hybridlab.blocks import ForwardContext, LayerContext, get_block
from hybridlab.blocks.mamba2 import Mamba2Config
from hybridlab.kernels.ops.rmsnorm_gated.reference import rmsnorm_gated
from hybridlab.kernels.ops.ssd.reference import ssd, ssd_state_update

F64 = torch.float64


def naive_ssd(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
              dt_limit=(0.0, math.inf), initial_states=None, seq_idx=None):
    """Token by token, straight from the equations, in float64:
    H_t = exp(Δ_t A) H_{t-1} + Δ_t x_t B_tᵀ ; y_t = H_t C_t + D x_t ; y_t *= silu(z_t)."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    d = dt.double() + (dt_bias.double() if dt_bias is not None else 0.0)
    if dt_softplus:
        d = torch.log1p(torch.exp(d))
    if dt_limit != (0.0, math.inf):
        d = d.clamp(*dt_limit)
    H = initial_states.double().clone() if initial_states is not None else torch.zeros(b, h, p, n, dtype=F64)
    ys = torch.zeros(b, l, h, p, dtype=F64)
    for t in range(l):
        for bi in range(b):
            if seq_idx is not None and t > 0 and seq_idx[bi, t] != seq_idx[bi, t - 1]:
                H[bi] = 0.0                      # a new sequence starts from an empty state
            for hi in range(h):
                gi = hi // (h // g)
                dh = d[bi, t, hi]
                H[bi, hi] = (torch.exp(dh * A[hi].double()) * H[bi, hi]
                             + dh * torch.outer(x[bi, t, hi].double(), B[bi, t, gi].double()))
                y = H[bi, hi] @ C[bi, t, gi].double()
                if D is not None:
                    y = y + D[hi].double() * x[bi, t, hi].double()     # D[hi]: scalar or (p,)
                if z is not None:
                    y = y * F.silu(z[bi, t, hi].double())
                ys[bi, t, hi] = y
    return ys, H


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


OPTIONS = ("D", "D_hp", "z", "dt_bias", "softplus", "dt_limit", "initial_states", "seq_idx")


def make_inputs(b, l, h, p, g, n, opts, dtype=F64):
    x = torch.randn(b, l, h, p, dtype=dtype)
    dt = torch.randn(b, l, h, dtype=dtype) * 0.5 + (0.0 if "softplus" in opts else 1.0)
    if "softplus" not in opts:
        dt = dt.abs() * 0.3                      # a valid Δ without the softplus
    kw = dict(
        x=x, dt=dt, A=-torch.rand(h, dtype=dtype) * 2 - 0.1,
        B=torch.randn(b, l, g, n, dtype=dtype), C=torch.randn(b, l, g, n, dtype=dtype),
    )
    if "D" in opts:
        kw["D"] = torch.randn(h, dtype=dtype)
    if "D_hp" in opts:
        kw["D"] = torch.randn(h, p, dtype=dtype)
    if "z" in opts:
        kw["z"] = torch.randn(b, l, h, p, dtype=dtype)
    if "dt_bias" in opts:   # without softplus keep Δ >= 0 (a growing state overflows in fp32)
        kw["dt_bias"] = torch.randn(h, dtype=dtype) * 0.5 if "softplus" in opts else torch.rand(h, dtype=dtype) * 0.2
    if "softplus" in opts:
        kw["dt_softplus"] = True
    if "dt_limit" in opts:
        kw["dt_limit"] = (0.05, 0.6)
    if "initial_states" in opts:
        kw["initial_states"] = torch.randn(b, h, p, n, dtype=dtype)
    if "seq_idx" in opts:
        # packed sequences with boundaries inside chunks, on chunk edges, and a length-1 sequence
        lens = [[3, 1, 8, l - 12], [l]][:b] if l > 12 else [[l]] * b
        kw["seq_idx"] = torch.stack([torch.repeat_interleave(torch.arange(len(s)), torch.tensor(s))
                                     for s in lens]).to(torch.int32)
    return kw


CASES = [()] + [(o,) for o in OPTIONS] + [tuple(o for o in OPTIONS if o != "D_hp"),
                                          tuple(o for o in OPTIONS if o != "D")]


@pytest.mark.parametrize("opts", CASES, ids=lambda o: "+".join(o) or "plain")
@pytest.mark.parametrize("shape", [(2, 29, 4, 3, 2, 5, 8), (1, 16, 2, 4, 1, 3, 4)],
                         ids=["l29_chunk8_g2", "l16_chunk4_g1"])
def test_chunked_reference_matches_recurrence(shape, opts):
    b, l, h, p, g, n, chunk = shape
    kw = make_inputs(b, l, h, p, g, n, opts)
    want_y, want_s = naive_ssd(**kw)
    y, s = ssd(chunk_size=chunk, return_final_states=True, **kw)
    assert y.dtype == F64 and s.shape == (b, h, p, n)
    assert rel(y, want_y) <= 1e-10
    assert rel(s, want_s) <= 1e-10


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunk_size_does_not_change_result(chunk):
    kw = make_inputs(2, 23, 4, 3, 2, 5, ("D", "z", "softplus", "initial_states", "seq_idx"))
    y, s = ssd(chunk_size=chunk, return_final_states=True, **kw)
    y1, s1 = ssd(chunk_size=7, return_final_states=True, **kw)
    assert rel(y, y1) <= 1e-10 and rel(s, s1) <= 1e-10


def test_reference_fp32_and_output_dtype():
    kw = make_inputs(1, 20, 2, 4, 1, 4, ("D", "z", "softplus"), dtype=torch.float32)
    want, _ = naive_ssd(**kw)
    y = ssd(chunk_size=8, **kw)
    assert y.dtype == torch.float32 and rel(y.double(), want) <= 1e-5
    kwb = {k: (v.bfloat16() if isinstance(v, torch.Tensor) and k in ("x", "B", "C", "z") else v)
           for k, v in kw.items()}
    assert ssd(chunk_size=8, **kwb).dtype == torch.bfloat16


@pytest.mark.parametrize("opts", [(), ("D", "z", "dt_bias", "softplus", "dt_limit"), ("D_hp",)])
def test_state_update_matches_recurrence(opts):
    b, l, h, p, g, n = 2, 6, 4, 3, 2, 5
    kw = make_inputs(b, l, h, p, g, n, opts + ("initial_states",))
    want_y, want_s = naive_ssd(**kw)
    state = kw["initial_states"].clone()
    for t in range(l):
        y = ssd_state_update(state, kw["x"][:, t], kw["dt"][:, t], kw["A"], kw["B"][:, t], kw["C"][:, t],
                             D=kw.get("D"), z=kw["z"][:, t] if "z" in kw else None,
                             dt_bias=kw.get("dt_bias"), dt_softplus=kw.get("dt_softplus", False),
                             dt_limit=kw.get("dt_limit", (0.0, math.inf)))
        assert rel(y, want_y[:, t]) <= 1e-12
    assert rel(state, want_s) <= 1e-12


# -- rmsnorm_gated reference -------------------------------------------------------------------

@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("group_size", [None, 4])
@pytest.mark.parametrize("with_z", [False, True])
def test_rmsnorm_gated_reference_vs_formula(norm_before_gate, group_size, with_z):
    x, z, w = torch.randn(3, 5, 8, dtype=F64), torch.randn(3, 5, 8, dtype=F64), torch.randn(8, dtype=F64)
    got = rmsnorm_gated(x, w, z if with_z else None, eps=1e-5, group_size=group_size,
                        norm_before_gate=norm_before_gate)
    gs = group_size or 8
    gate = z * torch.sigmoid(z) if with_z else torch.ones_like(z)
    want = torch.empty_like(x)
    for i in range(0, 8, gs):
        sl = slice(i, i + gs)
        h = x[..., sl] if norm_before_gate else x[..., sl] * gate[..., sl]
        r = h / torch.sqrt((h * h).sum(-1, keepdim=True) / gs + 1e-5) * w[sl]
        want[..., sl] = r * gate[..., sl] if norm_before_gate else r
    assert rel(got, want) <= 1e-12


# -- the block ---------------------------------------------------------------------------------

def make_block(d_model=64, **over):
    cfg = Mamba2Config(**{"headdim": 16, "d_state": 8, "chunk_size": 8, **over})
    assert cfg.validate(d_model) == []
    blk = get_block("mamba2")(cfg, LayerContext(index=0, name="M", d_model=d_model, n_layers=1))
    return blk


BLOCK_VARIANTS = [
    {},
    {"ngroups": 2, "dt_limit": [0.01, 0.05], "D_has_hdim": True},
    {"rmsnorm": False, "ngroups": 4, "bias": True},
    {"norm_before_gate": True, "conv_bias": False, "d_conv": 2},
]


@pytest.mark.parametrize("over", BLOCK_VARIANTS, ids=lambda o: ",".join(o) or "defaults")
def test_block_step_matches_forward(over):
    blk = make_block(**over).double()
    with torch.no_grad():   # non-trivial norm weight and D so they matter
        for p in blk.parameters():
            if p.dim() == 1 and p is not blk.A_log and p is not blk.dt_bias:
                p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(2, 19, 64, dtype=F64)
    want = blk(x, ForwardContext())
    state = blk.init_state(2, 19)
    assert all(t.dtype == F64 for t in state.values())
    got = []
    for t in range(19):
        y, state = blk.step(x[:, t], state, ForwardContext(position=t))
        got.append(y)
    assert rel(torch.stack(got, 1), want) <= 1e-6


def test_block_dt_limit_is_active():
    blk = make_block(dt_limit=[0.0, 1e-3]).double()
    free = make_block().double()
    free.load_state_dict(blk.state_dict())
    x = torch.randn(1, 12, 64, dtype=F64)
    assert rel(blk(x, ForwardContext()), free(x, ForwardContext())) > 1e-3


def test_block_causal():
    blk = make_block(ngroups=2).double()
    x = torch.randn(1, 20, 64, dtype=F64)
    y = blk(x, ForwardContext())
    x2 = x.clone()
    x2[:, 13:] = torch.randn(1, 7, 64, dtype=F64)
    y2 = blk(x2, ForwardContext())
    assert rel(y2[:, :13], y[:, :13]) <= 1e-12
    assert rel(y2[:, 13:], y[:, 13:]) > 1e-3


def test_block_seq_idx_equals_separate_sequences():
    blk = make_block(ngroups=2).double()
    a, b = torch.randn(1, 11, 64, dtype=F64), torch.randn(1, 14, 64, dtype=F64)
    seq_idx = torch.cat([torch.zeros(11), torch.ones(14)]).to(torch.int32)[None]
    packed = blk(torch.cat([a, b], 1), ForwardContext(seq_idx=seq_idx))
    sep = torch.cat([blk(a, ForwardContext()), blk(b, ForwardContext())], 1)
    assert rel(packed, sep) <= 1e-12


@pytest.mark.parametrize("over", BLOCK_VARIANTS, ids=lambda o: ",".join(o) or "defaults")
def test_block_gradients_reach_every_parameter(over):
    blk = make_block(**over).double()
    blk(torch.randn(2, 13, 64, dtype=F64), ForwardContext()).pow(2).sum().backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("over", BLOCK_VARIANTS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_equal_init_state(over, dtype):
    blk = make_block(**over)
    state = blk.init_state(3, 100, dtype=dtype)
    per_seq = sum(t.numel() * t.element_size() for t in state.values()) // 3
    assert blk.state_bytes(dtype) == per_seq


def test_defaults_and_validation():
    cfg = Mamba2Config()
    assert (cfg.d_state, cfg.d_conv, cfg.expand, cfg.headdim, cfg.ngroups, cfg.chunk_size) == (128, 4, 2, 64, 1, 256)
    assert cfg.dt_limit == (0.0, math.inf) and cfg.A_init_range == (1.0, 16.0)
    assert cfg.rmsnorm and not cfg.norm_before_gate and not cfg.bias and cfg.conv_bias
    assert cfg.validate(1024) == []
    assert Mamba2Config(dt_limit=None).dt_limit == (0.0, math.inf)
    assert Mamba2Config(dt_limit=[0.001, None]).dt_limit == (0.001, math.inf)
    assert [f for f, _ in Mamba2Config(headdim=48).validate(64)] == ["headdim"]
    assert [f for f, _ in Mamba2Config(headdim=16, ngroups=3).validate(64)] == ["ngroups"]
    assert [f for f, _ in Mamba2Config(d_state=0).validate(64)] == ["d_state"]
    assert [f for f, _ in Mamba2Config(dt_limit=[0.5, 0.1]).validate(1024)] == ["dt_limit"]


def test_init_and_markers():
    blk = make_block(dt_min=0.01, dt_max=0.05)
    dt = F.softplus(blk.dt_bias)
    assert ((dt >= 0.01 - 1e-6) & (dt <= 0.05 + 1e-6)).all()
    A = torch.exp(blk.A_log)
    assert ((A >= 1) & (A <= 16)).all()
    assert torch.equal(blk.D, torch.ones_like(blk.D))
    for p in (blk.A_log, blk.D, blk.dt_bias, blk.conv1d.weight, blk.conv1d.bias):
        assert getattr(p, "_no_reinit", False)
    assert not getattr(blk.in_proj.weight, "_no_reinit", False)


def test_flops_and_params_scale():
    blk = make_block(d_model=64)
    assert blk.num_parameters() == sum(p.numel() for p in blk.parameters())
    f_short, f_long = blk.flops_per_token(4), blk.flops_per_token(4096)
    assert f_long > f_short >= 2 * (blk.in_proj.weight.numel() + blk.out_proj.weight.numel())
    assert blk.flops_per_token(4096) == blk.flops_per_token(8)   # the chunk caps the quadratic part
