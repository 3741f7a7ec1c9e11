"""Triton selective scan (forward, every gradient) and decode step vs the torch reference, fp32.

On a CPU machine these run through the Triton interpreter (conftest sets TRITON_INTERPRET=1);
tiles are shrunk (8 steps, a few channels) so that small shapes cross several time tiles,
checkpoints and channel blocks, with a masked tail.
"""
from dataclasses import replace

import pytest
import torch
import triton
import triton.language as tl

from hybridlab.kernels.ops.selective_scan import fused, reference
from hybridlab.kernels.ops.selective_scan.plan import DEFAULT_PLAN, Layout

DEV = "cuda" if torch.cuda.is_available() else "cpu"

#: small tiles: n <= 4 has 4 channels per forward block and 2 per backward block, and time is
#: split into chunks of 8 steps (l > 8: carries)
SMALL = replace(DEFAULT_PLAN, small=Layout(16, 1, 0), bwd_elems=8, chunk_below=1 << 20, target_warps=1 << 20,
                min_chunk=8)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def make(b, d, n, l, g, opts, dtype=torch.float32, seq=False):
    BC = (b, n, l) if g is None else (b, g, n, l)
    r = lambda *s: torch.randn(*s, device=DEV)                      # noqa: E731
    kw = dict(u=r(b, d, l), delta=r(b, d, l) * 0.5, A=-torch.rand(d, n, device=DEV) * 3 - 0.1,
              B=r(*BC), C=r(*BC))
    if "D" in opts:
        kw["D"] = r(d)
    if "z" in opts:
        kw["z"] = r(b, d, l)
    if "bias" in opts:
        kw["delta_bias"] = r(d) * 0.5
    if "h0" in opts:
        kw["initial_state"] = r(b, d, n)
    if "softplus" not in opts:
        kw["delta"] = kw["delta"].abs()        # keep dt > 0 without the softplus
    if seq:
        cut = [0] * (l // 3) + [1] * 2 + [2] * (l - l // 3 - 2)
        kw["seq_idx"] = torch.tensor([cut] * b, dtype=torch.int32, device=DEV)
    kw = {k: (v.to(dtype) if k in ("u", "delta", "z", "B", "C") else v) for k, v in kw.items()}
    return kw, dict(delta_softplus="softplus" in opts)


def run(fn, kw, flags, w_out, w_last, **plan):
    leaves = {k: (v.clone().requires_grad_() if v.is_floating_point() else v) for k, v in kw.items()}
    out, last = fn(**leaves, **flags, **plan, return_last_state=True)
    loss = (out.float() * w_out).sum() + (last * w_last).sum()
    loss.backward()
    return out, last, {k: v.grad for k, v in leaves.items() if v.is_floating_point()}


def check(kw, flags, tol=1e-4, tol_A=None, plan=SMALL):
    b, d, l = kw["u"].shape
    n = kw["A"].shape[1]
    w_out = torch.randn(b, d, l, device=DEV)
    w_last = torch.randn(b, d, n, device=DEV)
    out, last, g = run(fused.selective_scan, kw, flags, w_out, w_last, plan=plan)
    rout, rlast, rg = run(reference.selective_scan, kw, flags, w_out, w_last)
    assert out.dtype == kw["u"].dtype and out.shape == rout.shape
    assert rel(out, rout) <= tol, "out"
    assert rel(last, rlast) <= tol, "last_state"
    assert set(g) == set(rg)
    for k in rg:
        assert g[k] is not None and g[k].shape == kw[k].shape and g[k].dtype == kw[k].dtype, k
        assert rel(g[k], rg[k]) <= (tol_A if k == "A" and tol_A else tol), k


ALL = ("D", "z", "bias", "softplus", "h0")


def check_with_and_without_grad(kw, flags, plan):
    """check(), then the no-grad forward (it launches without checkpoints) and its last state."""
    check(kw, flags, plan=plan)
    with torch.no_grad():
        out, last = fused.selective_scan(**kw, **flags, plan=plan, return_last_state=True)
        rout, rlast = reference.selective_scan(**kw, **flags, return_last_state=True)
    assert rel(out, rout) <= 1e-4 and rel(last, rlast) <= 1e-4


@pytest.mark.parametrize("shape", [(1, 4, 4, 19, None), (2, 6, 5, 13, 3), (1, 8, 3, 9, 2),
                                   (1, 21, 2, 11, None), (2, 3, 16, 1, None)])
def test_scan_all_options(shape):
    check(*make(*shape, ALL))


@pytest.mark.parametrize("opts", [(), ("D",), ("z",), ("bias", "softplus"), ("h0",),
                                  ("D", "z", "softplus")])
def test_scan_each_option(opts):
    check(*make(2, 5, 4, 17, 1, opts))


def test_scan_seq_idx():
    check(*make(2, 5, 4, 20, None, ALL, seq=True))


def test_scan_strided_inputs():
    """(b, l, d) / (b, l, n) tensors seen as (b, d, l) / (b, n, l): the kernel takes any strides."""
    b, d, n, l = 2, 6, 4, 13
    kw, flags = make(b, d, n, l, None, ALL)
    for k in ("u", "delta", "z"):
        kw[k] = kw[k].transpose(1, 2).contiguous().transpose(1, 2)
    proj = torch.randn(b, l, 2 * n + 3, device=DEV)
    kw["B"], kw["C"] = proj[..., 3:3 + n].transpose(1, 2), proj[..., 3 + n:].transpose(1, 2)
    assert kw["u"].stride(2) != 1 and kw["B"].stride(2) != 1
    check(kw, flags)


def test_scan_large_steps_and_threshold():
    """dt above the softplus threshold and dt*A far below -87 (exp underflows): finite, exact."""
    kw, flags = make(1, 4, 4, 12, None, ALL)
    kw["delta"] = torch.tensor([30.0, 19.0, -30.0, 0.0], device=DEV)[None, :, None].repeat(1, 1, 12)
    kw["A"] = kw["A"] * 10
    # dA uses a_t h_{t-1} = h_t - dt u B (no shifted state needed; mamba-ssm's CUDA backward
    # takes the same difference). When a_t h_{t-1} << dt u B it cancels in fp32: measured 2.7e-4
    # against an fp64 reference here (the fp32 reference: 1e-8); every other gradient <= 1e-4.
    check(kw, flags, tol_A=1e-3)


def test_scan_bf16_inputs():
    """bf16 u/delta/z/B/C: fp32 math inside, bf16 out; vs the reference on the same bf16 inputs."""
    kw, flags = make(2, 6, 4, 14, 2, ALL, dtype=torch.bfloat16)
    check(kw, flags, tol=1e-2)


def test_scan_grad_through_last_state_only():
    """Only last_state feeds the loss (dout is None in the backward); h0 gets a gradient too."""
    kw, flags = make(1, 4, 3, 19, 2, ALL)
    grads = []
    for fn, plan in ((fused.selective_scan, {"plan": SMALL}), (reference.selective_scan, {})):
        leaves = {k: v.clone().requires_grad_() for k, v in kw.items()}
        _, last = fn(**leaves, **flags, **plan, return_last_state=True)
        last.square().sum().backward()
        grads.append({k: v.grad for k, v in leaves.items()})
    for k in ("u", "delta", "A", "B", "delta_bias", "initial_state"):
        assert rel(grads[0][k], grads[1][k]) <= 1e-4, k
    assert grads[0]["C"].abs().max() == 0 and grads[0]["z"].abs().max() == 0


def test_scan_no_grad_path():
    kw, flags = make(1, 4, 4, 10, None, ALL)
    with torch.no_grad():
        out, last = fused.selective_scan(**kw, **flags, plan=SMALL, return_last_state=True)
    rout, rlast = reference.selective_scan(**kw, **flags, return_last_state=True)
    assert rel(out, rout) <= 1e-4 and rel(last, rlast) <= 1e-4
    assert torch.equal(fused.selective_scan(**kw, **flags, plan=SMALL), out)


@pytest.mark.parametrize("g", [None, 2])
@pytest.mark.parametrize("opts", [(), ALL])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_state_update(g, opts, state_dtype):
    b, d, n = 3, 6, 5
    r = lambda *s: torch.randn(*s, device=DEV)                      # noqa: E731
    BC = (b, n) if g is None else (b, g, n)
    args = dict(x=r(b, d), dt=r(b, d).abs(), A=-torch.rand(d, n, device=DEV) * 3, B=r(*BC), C=r(*BC))
    if opts:
        args.update(D=r(d), z=r(b, d), dt_bias=r(d), dt_softplus=True)
    s0 = r(b, d, n).to(state_dtype)
    s1, s2 = s0.clone(), s0.clone()
    y1 = fused.selective_state_update(s1, **args)
    y2 = reference.selective_state_update(s2, **args)
    assert rel(y1, y2) <= 1e-5
    tol = 1e-5 if state_dtype == torch.float32 else 1e-2
    assert rel(s1.float(), s2.float()) <= tol and not torch.equal(s1, s0)


def test_v2_without_time_chunks():
    """v2 with the whole sequence in one chunk (no carry passes), l spanning several tiles; the
    backward without its prefetch (the path for n > 32)."""
    plan = replace(SMALL, chunk_below=0, bwd_prefetch_max_n=0)
    assert plan.chunks(37, 1)[1] == 1
    check(*make(2, 6, 4, 37, None, ALL, seq=True), plan=plan)


@pytest.mark.slow
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("rows_log", [0, 2])
@pytest.mark.parametrize("bc_t,pin", [(True, True), (False, False)])
def test_time_major_bc_and_pinned_math(split, rows_log, bc_t, pin):
    """The forward and the backward with B and C read from fp32 time-major copies (one (NP,)
    vector per step, time padded to whole tiles, loaded a tile ahead where not split) and the
    tile math through _pin, and without either; the forward in Triton's layout and in rows (in
    rows on a split grid the forward loads tiles either way): g = 2 groups, a length off the tile
    grid, packed sequences, initial states, with and without time chunks; every output and
    gradient against the reference."""
    plan = replace(SMALL, bc_time_major=bc_t, bc_time_major_rows=bc_t, bwd_bc_time_major=bc_t, bc_prefetch=bc_t,
                   pin_tile_math=pin, small=Layout(16, 1, rows_log))
    if not split:
        plan = replace(plan, chunk_below=0)
    else:       # and the backward without its one-tile-ahead loads
        plan = replace(plan, bwd_prefetch_max_n=0)
    kw, flags = make(2, 6, 5, 29, 2, ALL, seq=True)
    check_with_and_without_grad(kw, flags, plan)


@pytest.mark.slow
def test_backward_reuses_the_forwards_time_major_copies(monkeypatch):
    """With time-major B and C in both directions, the forward's copies serve the backward too:
    one packing launch (B and C together) per forward+backward, not two; where the forward loaded
    tiles (rows on a split grid), the backward makes its own. Results against the reference
    either way."""
    made = []
    original = fused._time_major
    monkeypatch.setattr(fused, "_time_major", lambda *a, **k: made.append(1) or original(*a, **k))
    kw, flags = make(2, 6, 5, 29, 2, ALL)
    check(kw, flags, plan=replace(SMALL, chunk_below=0))                # one chunk: time-major forward
    assert len(made) == 1
    made.clear()
    check(kw, flags, plan=replace(SMALL, small=Layout(16, 1, 2)))        # split grid in rows: tiles forward
    assert len(made) == 1


def test_bc_time_major_choice():
    """B and C time-major: in Triton's layout always, in rows only on grids not split in time."""
    assert DEFAULT_PLAN.reads_bc_time_major(0, 1) and DEFAULT_PLAN.reads_bc_time_major(0, 64)
    assert DEFAULT_PLAN.reads_bc_time_major(4, 1) and not DEFAULT_PLAN.reads_bc_time_major(3, 64)


def test_reduce_scatter_choice():
    """y by the reduce-scatter only for the layout its PTX is written for: Triton's layout of an
    (8, 16) state in one warp (4 lanes per channel); the GPU tests check the PTX itself, the
    interpreter runs its tl.sum twin in every n16 test here."""
    rs = DEFAULT_PLAN.reduces_by_scatter
    assert rs(0, 16, 8, 1)
    assert not rs(3, 32, 8, 1) and not rs(0, 16, 4, 1)
    assert not rs(0, 8, 16, 1) and not rs(0, 16, 8, 2)
    assert not replace(DEFAULT_PLAN, reduce_scatter=False).reduces_by_scatter(0, 16, 8, 1)


def test_v2_chunk_split():
    chunks = DEFAULT_PLAN.chunks
    assert chunks(4096, 1024) == (4096, 1)      # b4 d2048 n16: 1024 one-warp programs
    assert chunks(32768, 256) == (512, 64)      # b1: 64 chunks
    assert chunks(1000, 1) == (336, 3)          # chunks >= 256 steps
    assert chunks(20, 1) == (24, 1)


@triton.jit
def _softplus_probe(x_ptr, o_ptr, old_ptr, n, FAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(o_ptr + offs, fused._softplus_fwd(x, FAST), mask=offs < n)
    tl.store(old_ptr + offs, fused._softplus(x), mask=offs < n)


@pytest.mark.parametrize("fast", [False] + ([True] if DEV == "cuda" else []))
def test_forward_softplus(fast):
    """The forward's softplus (series below e = 0.05, log2 above; FAST: lg2.approx on the GPU)
    against float64 torch from -80 to 90: within 2.5e-6 relative of the error of _softplus (the
    backward's, log(1 + exp(x))) at every x; = x above 20. 2.5e-6: lg2.approx's absolute error,
    2^-22.6 (PTX ISA), over log2(1.05) where the series hands over. Both share the GPU's exp
    (ex2.approx of x·log2 e, whose fp32 rounding of the argument costs ~|x|·4e-8 relative), so
    the bound is relative to it, not absolute."""
    edges = [-3.0, -2.9957, -2.99, 2.99, 2.9957, 3.0, 19.99, 20.0, 20.01]
    x = torch.cat([torch.linspace(-80, 90, 1001), torch.tensor(edges)]).to(DEV)
    out, old = torch.empty_like(x), torch.empty_like(x)
    _softplus_probe[(1,)](x, out, old, x.numel(), FAST=fast, BLOCK=1024)
    want = torch.nn.functional.softplus(x.double())
    err, err_old = ((out.double() - want).abs() / want), ((old.double() - want).abs() / want)
    worst = (err - err_old).argmax()
    assert (err <= err_old + 2.5e-6).all(), (f"x = {x[worst].item()}: relative error {err[worst].item():.2e}, "
                                           f"_softplus's {err_old[worst].item():.2e}; max {err.max().item():.2e}")
    assert torch.equal(out[x > 20], x[x > 20])


def test_big_state_forward_with_and_without_grad():
    """n > 32 takes the big-N launch (the state in rows of 16, channels on NP/16 lanes), with and
    without grad; and in Triton's layout (ROWS_LOG 0), both against the reference."""
    plan = replace(SMALL, big=Layout(128, 1, 4))                        # 2 channels per block
    assert plan.layout(64)[2] == 4
    kw, flags = make(1, 3, 40, 11, None, ALL)
    for rows in (4, 0):
        check_with_and_without_grad(kw, flags, replace(plan, big=Layout(128, 1, rows)))


@pytest.mark.slow
@pytest.mark.parametrize("n,rows_log", [(5, 1), (7, 3), (16, 2), (40, 4)])
def test_forward_state_in_rows(n, rows_log):
    """The forward with its state in rows of 2**rows_log states per thread (ROWS_LOG: the state
    built from joined columns, loaded and stored column by column): every output and gradient
    against the reference, through time chunks (states-only pass and carry), checkpoints,
    packed sequences, initial states and masked channels and states, with and without grad."""
    plan = replace(SMALL, small=Layout(16, 1, rows_log), mid=Layout(16, 1, rows_log),   # 2 to 8 channels per block
                   big=Layout(128, 1, rows_log))                                         # 2 at n 40
    assert plan.layout(fused._np(n))[2] == rows_log
    kw, flags = make(2, 5, n, 19, None, ALL, seq=True)
    check_with_and_without_grad(kw, flags, plan)


def test_forward_launch_choice():
    """The forward's launch: Triton's layout at n <= 16, rows of 8 at n = 32, rows of 16 at
    n >= 64; never more states per thread than NP. With grad, time is split only when the
    backward's grid is small too."""
    plan = DEFAULT_PLAN
    assert plan.layout(16) == (128, 1, 0) and plan.layout(32) == (256, 1, 3)
    assert plan.layout(64) == plan.layout(128) == (512, 1, 4)
    assert replace(plan, small=Layout(16, 1, 3)).layout(4)[2] == 2

    # (b, d, L, NP, G, save) -> NC: b1 l32768 n16 splits both ways; n64 only without grad (the
    # backward's grid, 1024 warps, is large); b4 l4096 n16 never
    grid = plan.forward_grid
    assert grid(1, 2048, 32768, 16, 1, False)[4] > 1 and grid(1, 2048, 32768, 16, 1, True)[4] > 1
    assert grid(1, 2048, 32768, 64, 1, False)[4] > 1 and grid(1, 2048, 32768, 64, 1, True)[4] == 1
    assert grid(4, 2048, 4096, 16, 1, True) == (1, 0, 8, 4096, 1)
    assert grid(1, 2048, 32768, 16, 1, True) == (1, 0, 8, 512, 64)
    assert grid(1, 2048, 32768, 64, 1, True) == (4, 0, 8, 32768, 1)     # the wide launch
    assert grid(4, 2048, 4096, 64, 1, True) == (1, 4, 8, 4096, 1)
