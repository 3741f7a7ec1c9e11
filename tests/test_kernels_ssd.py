"""Triton SSD (interpreted on CPU) against the torch reference: forward and every gradient."""
import math
from dataclasses import replace

import pytest
import torch

from hybridlab.kernels.ops.ssd import fused, reference
from hybridlab.kernels.ops.ssd.plan import DEFAULT_PLAN

from test_mamba2 import make_inputs, rel

TOL = 1e-4
DEV = "cuda" if torch.cuda.is_available() else "cpu"   # CPU: the interpreter (conftest)
OPTIONS = ("D", "D_hp", "z", "dt_bias", "softplus", "dt_limit", "initial_states", "seq_idx")
ALL = tuple(o for o in OPTIONS if o != "D_hp")
ALL_HP = tuple(o for o in OPTIONS if o != "D")


def on_dev(kw):
    """make_inputs builds CPU tensors: move them to the test device (CUDA when there is one)."""
    return {k: (v.to(DEV) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}


#: 16-row blocks so a chunk of 32 has two blocks (the off-diagonal block paths run)
SMALL = replace(DEFAULT_PLAN, block_t_max=16)


def check(shape, opts, final_grad=True, dtype=torch.float32, plan=SMALL):
    b, l, h, p, g, n, chunk = shape
    kw = on_dev(make_inputs(b, l, h, p, g, n, opts, dtype=dtype))
    leaves = {k: v.requires_grad_(True) for k, v in kw.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point()}
    y, s = fused.ssd(chunk_size=chunk, return_final_states=True, plan=plan, **kw)
    y_ref, s_ref = reference.ssd(chunk_size=chunk, return_final_states=True, **kw)
    assert y.dtype == dtype and y.shape == (b, l, h, p) and s.shape == (b, h, p, n)
    assert rel(y, y_ref) <= TOL, "out"
    assert rel(s, s_ref) <= TOL, "final_states"
    gy, gs = torch.randn_like(y_ref), torch.randn_like(s_ref)

    def loss(yy, ss):
        if final_grad == "sum":     # autograd hands the backward an expanded (stride-0) gradient
            return (yy * gy).sum() + ss.sum()
        return (yy * gy).sum() + ((ss * gs).sum() if final_grad else 0.0)

    grads = torch.autograd.grad(loss(y, s), list(leaves.values()))
    grads_ref = torch.autograd.grad(loss(y_ref, s_ref), list(leaves.values()))
    for name, a, r in zip(leaves, grads, grads_ref):
        assert a.dtype == r.dtype and a.shape == r.shape, name
        assert torch.isfinite(a).all(), name
        assert rel(a, r) <= TOL, f"d{name}: {rel(a, r):.2e}"


SHAPES = {
    "l40_c16_g2": (1, 40, 4, 8, 2, 16, 16),      # 3 chunks, last one partial, one block per chunk
    "l45_c32_g1": (1, 45, 4, 16, 1, 32, 32),     # two blocks per chunk, partial last chunk
    "b2_l32_p4n4": (2, 32, 2, 4, 1, 4, 16),      # p, n far below the 16-wide tiles
    "l36_c32_g3": (1, 36, 6, 8, 3, 16, 32),      # three groups of two heads
    "l45_c32_g2h2": (1, 45, 2, 8, 2, 16, 32),    # one head per group: C Bᵀ computed in place, not stored
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("opts", [ALL, ALL_HP], ids=["all", "all_Dhp"])
def test_fused_matches_reference(shape, opts):
    check(shape, opts)


@pytest.mark.parametrize("shape", [SHAPES["l45_c32_g1"], SHAPES["b2_l32_p4n4"]], ids=["l45", "b2_l32"])
def test_no_options(shape):
    check(shape, ())


@pytest.mark.parametrize("opt", OPTIONS)
def test_each_option_alone(opt):
    check((1, 37, 4, 8, 2, 16, 16), (opt,))


@pytest.mark.parametrize("target", [0, 10**9], ids=["all_heads_in_one_program", "one_head_per_program"])
def test_backward_head_split(target):
    check((1, 40, 4, 8, 2, 16, 16), ("D", "z", "softplus", "seq_idx", "initial_states"),
          plan=replace(SMALL, head_split_target=target))


def test_without_final_state_gradient():
    check((1, 40, 4, 8, 2, 16, 16), ("D", "z", "softplus", "initial_states"), final_grad=False)


def test_final_state_gradient_from_a_sum():
    """final.sum(): the state-passing backward once read that stride-0 gradient as a dense
    (b, h, p, n) tensor, past its one-element storage (found by tests/bounds_check.py)."""
    check((2, 40, 4, 8, 2, 16, 16), ("D", "z", "softplus", "initial_states"), final_grad="sum")


def test_chunk_size_not_power_of_two():
    # the kernels round 24 up to 32; the SSD is the same function
    check((1, 45, 2, 8, 1, 16, 24), ("D", "softplus", "seq_idx"))


def test_strided_inputs_like_the_block():
    # x, B, C, dt as views into one packed projection, as Mamba2.forward passes them
    b, l, h, p, g, n = 1, 40, 4, 8, 2, 16
    packed = torch.randn(b, l, h * p + 2 * g * n + h, device=DEV, requires_grad=True)
    x, B, C, dt = torch.split(packed, [h * p, g * n, g * n, h], dim=-1)
    A = -torch.rand(h, device=DEV) - 0.5
    args = (x.reshape(b, l, h, p), dt, A, B.reshape(b, l, g, n), C.reshape(b, l, g, n), 16)
    kw = dict(D=torch.randn(h, device=DEV), dt_softplus=True)
    y = fused.ssd(*args, **kw, plan=SMALL)
    y_ref = reference.ssd(*args, **kw)
    assert rel(y, y_ref) <= TOL
    gy = torch.randn_like(y)
    (g1,) = torch.autograd.grad((y * gy).sum(), packed)
    (g2,) = torch.autograd.grad((y_ref * gy).sum(), packed)
    assert rel(g1, g2) <= TOL


def test_float64_runs_reference():
    kw = on_dev(make_inputs(1, 20, 2, 4, 1, 4, ("D", "softplus"), dtype=torch.float64))
    assert torch.equal(fused.ssd(chunk_size=16, **kw), reference.ssd(chunk_size=16, **kw))


@pytest.mark.parametrize("opts", [(), ("D", "z", "dt_bias", "softplus", "dt_limit"), ("D_hp", "z")],
                         ids=["plain", "all", "Dhp"])
@pytest.mark.parametrize("gh", [(1, 2), (2, 4)], ids=["g1", "g2"])
def test_state_update_kernel(opts, gh):
    g, h = gh
    b, p, n = 2, 8, 16
    kw = on_dev(make_inputs(b, 3, h, p, g, n, opts))
    state = torch.randn(b, h, p, n, device=DEV)
    state_ref = state.clone()
    for t in range(3):
        step = dict(x=kw["x"][:, t], dt=kw["dt"][:, t], A=kw["A"], B=kw["B"][:, t], C=kw["C"][:, t],
                    D=kw.get("D"), z=kw["z"][:, t] if "z" in kw else None, dt_bias=kw.get("dt_bias"),
                    dt_softplus=kw.get("dt_softplus", False), dt_limit=kw.get("dt_limit", (0.0, math.inf)))
        y = fused.ssd_state_update(state, **step)
        y_ref = reference.ssd_state_update(state_ref, **step)
        assert rel(y, y_ref) <= TOL
    assert rel(state, state_ref) <= TOL


# ---- the decoupled form Mamba-3 runs on: decay and input scale separate, per-position skip

def decoupled_inputs(b, l, h, p, g, n, opts, dtype=torch.float32):
    gen = torch.Generator().manual_seed(l * 31 + h)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=gen) * scale)  # noqa: E731
    kw = dict(x=r(b, l, h, p).to(dtype), scale=torch.rand(b, l, h, generator=gen) * 0.2,
              log_decay=-torch.rand(b, l, h, generator=gen) * 0.3,
              B=r(b, l, g, n).to(dtype), C=r(b, l, g, n).to(dtype))
    if "D" in opts:
        kw["D"] = r(h)
    if "D_pos" in opts:
        kw["D_pos"] = r(b, l, h, scale=0.5)
    if "z" in opts:
        kw["z"] = r(b, l, h, p).to(dtype)
    if "initial_states" in opts:
        kw["initial_states"] = r(b, h, p, n, scale=0.3)
    return on_dev(kw)


def decoupled_recurrence(x, scale, log_decay, B, C, D=None, D_pos=None, z=None, initial_states=None):
    """The defining recurrence, one step at a time in float64 (independent of the chunked code)."""
    b, l, h, p = x.shape
    f = lambda t: None if t is None else t.double()  # noqa: E731
    x, scale, log_decay, D, D_pos, z = map(f, (x, scale, log_decay, D, D_pos, z))
    Bh = B.double().repeat_interleave(h // B.shape[2], 2)
    Ch = C.double().repeat_interleave(h // C.shape[2], 2)
    H = f(initial_states) if initial_states is not None else x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(l):
        H = torch.exp(log_decay[:, t])[..., None, None] * H \
            + scale[:, t, :, None, None] * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        y = torch.einsum("bhpn,bhn->bhp", H, Ch[:, t])
        skip = (D[None, :] if D is not None else 0) + (D_pos[:, t] if D_pos is not None else 0)
        y = y + (skip[..., None] if torch.is_tensor(skip) else 0) * x[:, t]
        if z is not None:
            y = y * torch.nn.functional.silu(z[:, t])
        ys.append(y)
    return torch.stack(ys, 1), H


DECOUPLED_ALL = ("D", "D_pos", "z", "initial_states")


@pytest.mark.parametrize("shape", [(1, 37, 4, 8, 2, 16, 16), (2, 45, 2, 16, 1, 32, 32)], ids=["l37_g2", "b2_l45"])
def test_decoupled_reference_is_the_recurrence(shape):
    b, l, h, p, g, n, chunk = shape
    kw = {k: v.double() for k, v in decoupled_inputs(b, l, h, p, g, n, DECOUPLED_ALL).items()}
    y, s = reference.ssd_decoupled(chunk_size=chunk, return_final_states=True, **kw)
    y_seq, s_seq = decoupled_recurrence(**kw)
    assert rel(y, y_seq) <= 1e-10 and rel(s, s_seq) <= 1e-10


@pytest.mark.parametrize("opts", [DECOUPLED_ALL, ()], ids=["all", "none"])
@pytest.mark.parametrize("shape", [(1, 37, 4, 8, 2, 16, 16), (2, 45, 2, 16, 1, 32, 32)], ids=["l37_g2", "b2_l45"])
def test_decoupled_fused_matches_reference(shape, opts, plan=SMALL):
    b, l, h, p, g, n, chunk = shape
    kw = decoupled_inputs(b, l, h, p, g, n, opts)
    leaves = {k: v.requires_grad_(True) for k, v in kw.items()}
    y, s = fused.ssd_decoupled(chunk_size=chunk, return_final_states=True, plan=plan, **kw)
    y_ref, s_ref = reference.ssd_decoupled(chunk_size=chunk, return_final_states=True, **kw)
    assert rel(y, y_ref) <= TOL and rel(s, s_ref) <= TOL
    gy, gs = torch.randn_like(y_ref), torch.randn_like(s_ref)
    grads = torch.autograd.grad((y * gy).sum() + (s * gs).sum(), list(leaves.values()))
    grads_ref = torch.autograd.grad((y_ref * gy).sum() + (s_ref * gs).sum(), list(leaves.values()))
    for name, a, r in zip(leaves, grads, grads_ref):
        assert a.shape == r.shape and torch.isfinite(a).all(), name
        assert rel(a, r) <= TOL, f"d{name}: {rel(a, r):.2e}"


SEQ_CASES = {
    "all_ntiles2": ((2, 40, 4, 8, 2, 32, 16), ALL, 16),          # two N tiles per state
    "all_Dhp": ((1, 45, 2, 16, 1, 32, 32), ALL_HP, 32),
    "p80_two_p_tiles": ((1, 37, 2, 80, 1, 16, 16), ("D", "z", "softplus", "initial_states"), 16),
    "none": ((1, 33, 2, 8, 1, 16, 16), (), 16),
}


def segmented(plan, shape, segments):
    """``plan`` with the forward's state walk in one segment, two, or one per chunk (its fill: the
    programs the walk is cut until it has)."""
    b, l, h, p, g, n, chunk = shape
    progs = b * h * plan.seq_state_tiles(b, h, p, n)[2]
    plan = replace(plan, seq_state_fill={"one": 1, "two": 2 * progs, "each_chunk": 10 ** 9}[segments])
    nchunks = -(-l // plan.kernel_chunk(chunk, torch.float32))
    cps, nseg = plan.state_walk(b, h, p, n, nchunks, False)[3:]
    assert nseg == {"one": 1, "two": 2, "each_chunk": nchunks}[segments] and (nseg - 1) * cps < nchunks
    return plan


@pytest.mark.parametrize("segments", ["one", "two", "each_chunk"])
@pytest.mark.parametrize("shape, opts, bn", SEQ_CASES.values(), ids=SEQ_CASES.keys())
def test_sequential_state_kernels(shape, opts, bn, segments):
    """fused_state.py's one-program-per-state-tile kernels (the path for grids that fill the GPU),
    the forward walking the sequence whole or cut into segments (the scan adds what each
    segment's walk missed, and stores the true entering states for the backward)."""
    plan = segmented(replace(SMALL, seq_state_min=1, seq_state_bn=bn), shape, segments)
    check(shape, opts, plan=plan)


@pytest.mark.parametrize("segments", ["two", "each_chunk"])
def test_segmented_forward_without_grad(segments):
    """No backward to feed: the scan corrects the entering states it reads and stores none."""
    shape = (2, 45, 2, 16, 1, 32, 16)
    plan = segmented(replace(SMALL, seq_state_min=1), shape, segments)
    kw = on_dev(make_inputs(*shape[:6], ALL, dtype=torch.float32))
    with torch.no_grad():
        y, s = fused.ssd(chunk_size=shape[-1], return_final_states=True, plan=plan, **kw)
    y_ref, s_ref = reference.ssd(chunk_size=shape[-1], return_final_states=True, **kw)
    assert rel(y, y_ref) <= TOL and rel(s, s_ref) <= TOL


@pytest.mark.parametrize("segments", ["one", "each_chunk"])
def test_sequential_state_kernels_decoupled(segments):
    shape = (2, 45, 2, 16, 1, 32, 16)
    plan = segmented(replace(SMALL, seq_state_min=1, seq_state_bn=16), shape, segments)
    test_decoupled_fused_matches_reference(shape, DECOUPLED_ALL, plan)


def test_kernel_chunk_is_capped():
    """A caller's chunk_size is a speed hint: rounded up to a power of two, at least 16, at most
    the plan's max_chunk (longer chunks measured slower: DESIGN.md)."""
    assert [DEFAULT_PLAN.kernel_chunk(c, torch.bfloat16) for c in (8, 24, 64, 256)] == [16, 32, 64, 128]
    assert replace(DEFAULT_PLAN, max_chunk=256).kernel_chunk(256, torch.bfloat16) == 256
