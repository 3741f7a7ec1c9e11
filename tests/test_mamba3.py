"""Mamba-3: the chunked torch reference against a naive step-by-step recurrence written straight
from the equations (float64), the Mamba-2 special case, and the block (decode == forward,
causality, gradients, state accounting)."""
import math

import pytest
import torch
import torch.nn.functional as F

from hybridlab.blocks import ForwardContext, LayerContext, get_block
from hybridlab.blocks.mamba3 import Mamba3Config
from hybridlab.kernels.ops.mamba3.reference import mamba3, mamba3_state_update

f64 = torch.float64


# ---------------------------------------------------------------------------------------------
# independent naive recurrence (one head, one step at a time, float64)
# ---------------------------------------------------------------------------------------------
def _rot(vec, theta):
    out = vec.clone()
    for i in range(theta.shape[0]):
        c, s = torch.cos(theta[i]), torch.sin(theta[i])
        out[2 * i] = vec[2 * i] * c - vec[2 * i + 1] * s
        out[2 * i + 1] = vec[2 * i] * s + vec[2 * i + 1] * c
    return out


def naive_mamba3(x, dt, A, trap, B, C, angles=None, B_bias=None, C_bias=None, D=None, z=None,
                 W_x=None, W_z=None, W_o=None, init=None):
    """H_t = a H_{t-1} + b sum_r v_{t-1,r} k_{t-1,r}^T + c sum_r v_{t,r} k_{t,r}^T, y_{t,r} = H_t q_{t,r} + D v_{t,r}."""
    b, L, H, P = x.shape
    siso = B.dim() == 4
    if siso:
        B, C = B.unsqueeze(2), C.unsqueeze(2)
    R, G, N = B.shape[2:]
    S = 0 if angles is None else angles.shape[-1]
    lam = torch.sigmoid(trap) if trap is not None else torch.ones_like(dt)
    ones = torch.ones(H, R, P, dtype=f64)
    Wx = ones if W_x is None else W_x.reshape(H, R, P)
    Wz = ones if W_z is None else W_z.reshape(H, R, P)
    per_rank = not siso and W_o is None
    y = torch.zeros((b, L, R, H, P) if per_rank else (b, L, H, P), dtype=f64)
    fin = (torch.zeros(b, H, S, dtype=f64), torch.zeros(b, H, P, N, dtype=f64),
           torch.zeros(b, R, H, N, dtype=f64), torch.zeros(b, H, P, dtype=f64))
    for bi in range(b):
        for h in range(H):
            g = h // (H // G)
            theta, Hs = torch.zeros(S, dtype=f64), torch.zeros(P, N, dtype=f64)
            k_prev, x_prev = torch.zeros(R, N, dtype=f64), torch.zeros(P, dtype=f64)
            if init is not None:
                a0, s0, k0, v0 = init
                theta = theta if a0 is None else a0[bi, h].clone()
                Hs = Hs if s0 is None else s0[bi, h].clone()
                k_prev = k_prev if k0 is None else k0.reshape(b, R, H, N)[bi, :, h].clone()
                x_prev = x_prev if v0 is None else v0[bi, h].clone()
            for t in range(L):
                d = dt[bi, t, h]
                if S:
                    theta = theta + math.pi * torch.tanh(angles[bi, t]) * d
                ks, qs = [], []
                for r in range(R):
                    kk, qq = B[bi, t, r, g].clone(), C[bi, t, r, g].clone()
                    if B_bias is not None:
                        kk = kk + B_bias.reshape(H, R, N)[h, r]
                    if C_bias is not None:
                        qq = qq + C_bias.reshape(H, R, N)[h, r]
                    ks.append(_rot(kk, theta))
                    qs.append(_rot(qq, theta))
                alpha = torch.exp(d * A[bi, t, h])
                beta = (1 - lam[bi, t, h]) * d * alpha
                gamma = lam[bi, t, h] * d
                Hs = (alpha * Hs
                      + beta * sum(torch.outer(x_prev * Wx[h, r], k_prev[r]) for r in range(R))
                      + gamma * sum(torch.outer(x[bi, t, h] * Wx[h, r], ks[r]) for r in range(R)))
                outs = []
                for r in range(R):
                    o = Hs @ qs[r]
                    if D is not None:
                        o = o + D[h] * x[bi, t, h] * Wx[h, r]
                    if z is not None:
                        o = o * F.silu(z[bi, t, h] * Wz[h, r])
                    outs.append(o)
                if per_rank:
                    for r in range(R):
                        y[bi, t, r, h] = outs[r]
                elif siso:
                    y[bi, t, h] = outs[0]
                else:
                    y[bi, t, h] = sum(outs[r] * W_o.reshape(H, R, P)[h, r] for r in range(R))
                k_prev, x_prev = torch.stack(ks), x[bi, t, h].clone()
            fin[0][bi, h], fin[1][bi, h], fin[2][bi, :, h], fin[3][bi, h] = theta, Hs, k_prev, x_prev
    return y, (fin[0], fin[1], fin[2][:, 0] if siso else fin[2], fin[3])


def naive_mamba2(x, dt, A, B, C, D):
    """Mamba-2: H_t = exp(dt A) H_{t-1} + dt x_t B_t^T, y_t = H_t C_t + D x_t (B, C per group)."""
    b, L, H, P = x.shape
    G, N = B.shape[2:]
    y = torch.zeros_like(x)
    for bi in range(b):
        for h in range(H):
            g = h // (H // G)
            Hs = torch.zeros(P, N, dtype=f64)
            for t in range(L):
                Hs = torch.exp(dt[bi, t, h] * A[bi, t, h]) * Hs + dt[bi, t, h] * torch.outer(x[bi, t, h], B[bi, t, g])
                y[bi, t, h] = Hs @ C[bi, t, g] + D[h] * x[bi, t, h]
    return y


# ---------------------------------------------------------------------------------------------
# random inputs
# ---------------------------------------------------------------------------------------------
def make_inputs(b=2, L=13, H=4, P=3, G=2, N=8, R=1, S=2, dtype=f64, with_init=False):
    x = torch.randn(b, L, H, P, dtype=dtype)
    dt = torch.rand(b, L, H, dtype=dtype) * 0.5 + 0.05
    A = -torch.rand(b, L, H, dtype=dtype) * 2 - 1e-3
    trap = torch.randn(b, L, H, dtype=dtype)
    bshape = (b, L, G, N) if R == 1 else (b, L, R, G, N)
    B, C = torch.randn(bshape, dtype=dtype), torch.randn(bshape, dtype=dtype)
    bias = (H, N) if R == 1 else (H, R, N)
    opt = dict(angles=torch.randn(b, L, S, dtype=dtype) if S else None,
               B_bias=torch.randn(bias, dtype=dtype), C_bias=torch.randn(bias, dtype=dtype),
               D=torch.randn(H, dtype=dtype), z=torch.randn(b, L, H, P, dtype=dtype))
    if R > 1:
        opt.update(W_x=torch.randn(H, R, P, dtype=dtype), W_z=torch.randn(H, R, P, dtype=dtype),
                   W_o=torch.randn(H, R, P, dtype=dtype))
    init = None
    if with_init:
        kshape = (b, H, N) if R == 1 else (b, R, H, N)
        init = (torch.rand(b, H, S, dtype=dtype) * 6, torch.randn(b, H, P, N, dtype=dtype),
                torch.randn(kshape, dtype=dtype), torch.randn(b, H, P, dtype=dtype))
    return (x, dt, A, trap, B, C), opt, init


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def angle_err(a, b):   # angles compare modulo 2 pi
    d = torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi
    return d.abs().max().item() if d.numel() else 0.0


CASES = [  # (L, chunk, R, G, S, with_init)
    (13, 4, 1, 2, 2, False),     # L not a multiple of the chunk
    (16, 8, 1, 1, 4, True),      # full rotation (2S = N), initial states
    (9, 16, 1, 4, 1, True),      # one partial chunk, g = h
    (11, 4, 2, 2, 2, False),     # MIMO
    (10, 4, 3, 1, 3, True),      # MIMO rank 3, initial states
]


@pytest.mark.parametrize("L,chunk,R,G,S,with_init", CASES)
def test_chunked_matches_naive(L, chunk, R, G, S, with_init):
    args, opt, init = make_inputs(L=L, R=R, G=G, S=S, with_init=with_init)
    y, fin = mamba3(*args, **opt, initial_states=init, chunk_size=chunk, return_final_states=True)
    y_ref, fin_ref = naive_mamba3(*args, **opt, init=init)
    assert y.dtype == f64 and y.shape == y_ref.shape
    assert rel(y, y_ref) <= 1e-10
    assert angle_err(fin[0], fin_ref[0]) <= 1e-10
    for got, want in zip(fin[1:], fin_ref[1:]):
        assert got.shape == want.shape and rel(got, want) <= 1e-10


COMMON = ["angles", "B_bias", "C_bias", "D", "z", "trap", "all"]


@pytest.mark.parametrize("drop,R", [(d, 1) for d in COMMON] + [(d, 2) for d in COMMON + ["W_x", "W_z", "W_o"]])
def test_optional_inputs_absent(drop, R):
    args, opt, init = make_inputs(L=7, R=R, H=2, G=1, N=6, S=2, b=1, with_init=True)
    args = list(args)
    if drop == "trap":
        args[3] = None
    elif drop == "all":
        args[3] = None
        opt = {}
    else:
        opt[drop] = None
    if drop in ("angles", "all"):   # no rotation: no angle state either
        init = (None,) + init[1:]
    y, fin = mamba3(*args, **opt, initial_states=init, chunk_size=4, return_final_states=True)
    y_ref, fin_ref = naive_mamba3(*args, **opt, init=init)
    assert y.shape == y_ref.shape and rel(y, y_ref) <= 1e-10
    for got, want in zip(fin[1:], fin_ref[1:]):
        assert rel(got, want) <= 1e-10


def test_partial_initial_states():
    args, opt, init = make_inputs(L=6, b=1, H=2, with_init=True)
    init = (None, init[1], None, init[3])
    y = mamba3(*args, **opt, initial_states=init, chunk_size=4)
    assert rel(y, naive_mamba3(*args, **opt, init=init)[0]) <= 1e-10


@pytest.mark.parametrize("R", [1, 2])
def test_continuation_two_halves(R):
    args, opt, init = make_inputs(L=21, R=R, with_init=True)
    y_full, fin_full = mamba3(*args, **opt, initial_states=init, chunk_size=8, return_final_states=True)
    cut = 10

    def part(sl):
        a = tuple(t[:, sl] for t in args)
        o = {k: (v[:, sl] if k in ("angles", "z") else v) for k, v in opt.items()}
        return a, o

    a1, o1 = part(slice(0, cut))
    a2, o2 = part(slice(cut, None))
    y1, mid = mamba3(*a1, **o1, initial_states=init, chunk_size=8, return_final_states=True)
    y2, fin = mamba3(*a2, **o2, initial_states=mid, chunk_size=8, return_final_states=True)
    assert rel(torch.cat([y1, y2], 1), y_full) <= 1e-10
    assert angle_err(fin[0], fin_full[0]) <= 1e-10
    for got, want in zip(fin[1:], fin_full[1:]):
        assert rel(got, want) <= 1e-10


@pytest.mark.parametrize("R", [1, 3])
def test_state_update_steps_match_chunked(R):
    args, opt, init = make_inputs(L=9, R=R, with_init=True)
    y_full, fin_full = mamba3(*args, **opt, initial_states=init, chunk_size=4, return_final_states=True)
    state = tuple(t.clone() for t in init)
    ys = []
    for t in range(args[0].shape[1]):
        a = tuple(v[:, t] for v in args)
        o = {k: (v[:, t] if k in ("angles", "z") else v) for k, v in opt.items()}
        ys.append(mamba3_state_update(state, *a, **o))
    assert rel(torch.stack(ys, 1), y_full) <= 1e-10
    assert angle_err(state[0], fin_full[0]) <= 1e-10
    for got, want in zip(state[1:], fin_full[1:]):
        assert rel(got, want) <= 1e-10


@pytest.mark.parametrize("trap_mode", ["none", "saturated"])
def test_reduces_to_mamba2(trap_mode):
    """lam = 1 and no rotation: the trapezoid term vanishes and Mamba-3 is Mamba-2's recurrence."""
    (x, dt, A, trap, B, C), opt, _ = make_inputs(L=11, G=2, S=0)
    trap = None if trap_mode == "none" else torch.full_like(dt, 60.0)   # sigmoid(60) == 1 in float64
    y = mamba3(x, dt, A, trap, B, C, D=opt["D"], chunk_size=4)
    assert rel(y, naive_mamba2(x, dt, A, B, C, opt["D"])) <= 1e-10


def test_trapezoid_differs_from_mamba2():
    """The test above must be able to fail: with lam < 1 the outputs differ."""
    (x, dt, A, trap, B, C), opt, _ = make_inputs(L=11, G=2, S=0)
    y = mamba3(x, dt, A, trap, B, C, D=opt["D"], chunk_size=4)
    assert rel(y, naive_mamba2(x, dt, A, B, C, opt["D"])) > 1e-3


def test_float32_output_dtype_and_accuracy():
    args, opt, init = make_inputs(L=13, R=2, with_init=True)
    args32 = tuple(t.float() for t in args)
    opt32 = {k: v.float() for k, v in opt.items()}
    init32 = tuple(t.float() for t in init)
    y, fin = mamba3(*args32, **opt32, initial_states=init32, chunk_size=4, return_final_states=True)
    assert y.dtype == torch.float32 and all(t.dtype == torch.float32 for t in fin)
    assert rel(y.double(), mamba3(*args, **opt, initial_states=init, chunk_size=4)) <= 1e-5


# ---------------------------------------------------------------------------------------------
# block
# ---------------------------------------------------------------------------------------------
def make_block(**kw):
    cfg = Mamba3Config(**{**dict(d_state=16, headdim=16, chunk_size=8), **kw})
    assert cfg.validate(64) == []
    return get_block("mamba3")(cfg, LayerContext(index=0, name="M", d_model=64, n_layers=1))


BLOCK_VARIANTS = [dict(), dict(mimo_rank=2, chunk_size=4), dict(is_outproj_norm=True),
                  dict(mimo_rank=2, is_outproj_norm=True, ngroups=2), dict(a_activation="heavy_tail", rope_fraction=1.0)]


@pytest.mark.parametrize("kw", BLOCK_VARIANTS)
def test_block_decode_matches_forward(kw):
    blk = make_block(**kw).double()
    with torch.no_grad():   # non-trivial SSM params so every path is exercised
        for p in blk.parameters():
            if getattr(p, "_no_reinit", False):
                p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 19, 64, dtype=f64)
    ctx = ForwardContext()
    with torch.no_grad():
        y = blk(x, ctx)
        state = blk.init_state(2, 19, dtype=f64)
        ys = [blk.step(x[:, t], state, ctx)[0] for t in range(19)]
    assert y.shape == x.shape
    assert rel(torch.stack(ys, 1), y) <= 1e-6


def test_block_causal():
    blk = make_block(mimo_rank=2, chunk_size=4).double()
    x = torch.randn(1, 17, 64, dtype=f64)
    x2 = x.clone()
    x2[:, 9:] += torch.randn_like(x2[:, 9:])
    with torch.no_grad():
        y, y2 = blk(x, ForwardContext()), blk(x2, ForwardContext())
    assert torch.equal(y[:, :9], y2[:, :9])
    assert not torch.allclose(y[:, 9:], y2[:, 9:])


@pytest.mark.parametrize("kw", [dict(), dict(mimo_rank=2, is_outproj_norm=True)])
def test_block_gradients_reach_every_parameter(kw):
    blk = make_block(**kw)
    x = torch.randn(2, 11, 64, requires_grad=True)
    blk(x, ForwardContext()).square().sum().backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("kw", [dict(), dict(mimo_rank=4, chunk_size=4), dict(rope_fraction=0.0)])
def test_state_bytes_is_init_state_bytes(kw):
    blk = make_block(**kw)
    st = blk.init_state(3, 100, dtype=torch.bfloat16)
    assert all(t.dtype == torch.float32 for t in st.values())
    assert sum(t.numel() * t.element_size() for t in st.values()) == 3 * blk.state_bytes(torch.bfloat16)
    assert set(st) == {"angle", "ssm", "k", "v"}


def test_block_defaults_and_structure():
    cfg = Mamba3Config()
    assert (cfg.d_state, cfg.expand, cfg.headdim, cfg.ngroups, cfg.rope_fraction, cfg.chunk_size,
            cfg.mimo_rank, cfg.a_activation) == (128, 2, 64, 1, 0.5, 64, 1, "softplus")
    blk = get_block("mamba3")(cfg, LayerContext(index=0, name="M", d_model=1024, n_layers=1))
    assert blk.n_angles == 32 and blk.nheads == 32
    assert blk.in_proj.weight.shape == (2 * 2048 + 2 * 128 + 3 * 32 + 32, 1024)
    assert blk.out_proj.bias is None and blk.in_proj.bias is None
    assert torch.equal(blk.D, torch.ones(32)) and torch.equal(blk.B_bias, torch.ones(32, 1, 128))
    dt = F.softplus(blk.dt_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert all(getattr(p, "_no_reinit", False) for n, p in blk.named_parameters() if "proj" not in n)
    assert blk.state_bytes() == 4 * (32 * 32 + 32 * 64 * 128 + 32 * 128 + 32 * 64)
    assert blk.flops_per_token(4096) > 2 * blk.num_parameters()


def test_validate_rejects_bad_configs():
    def fields(**kw):
        return {f for f, _ in Mamba3Config(**kw).validate(64)}
    assert fields() == set()
    assert "d_state" in fields(d_state=0)
    assert "d_state" in fields(d_state=15)
    assert fields(d_state=15, rope_fraction=0.0) == set()
    assert "headdim" in fields(headdim=48)
    assert "ngroups" in fields(headdim=16, ngroups=3)
    assert "mimo_rank" in fields(mimo_rank=0)
    assert "mimo_rank" in fields(mimo_rank=3)
    assert fields(mimo_rank=4) == set()
    assert "chunk_size" in fields(chunk_size=48)
    assert "a_activation" in fields(a_activation="relu")
    assert "dt_min" in fields(dt_min=0.2)
    assert "A_floor" in fields(A_floor=0.0)


def test_heavy_tail_activation():
    from hybridlab.blocks.mamba3 import heavy_tail
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0], dtype=f64, requires_grad=True)
    y = heavy_tail(x)
    assert torch.allclose(y, torch.tensor([0.25, 0.5, 1.0, 1.5, 3.0], dtype=f64))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([1 / 16, 0.25, 1.0, 1.0, 1.0], dtype=f64))


def test_block_rejects_seq_idx():
    blk = make_block()
    with pytest.raises(ValueError, match="seq_idx"):
        blk(torch.randn(1, 4, 64), ForwardContext(seq_idx=torch.zeros(1, 4, dtype=torch.int32)))
