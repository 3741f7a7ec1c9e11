"""Mamba-3 Triton kernels on the GPU in bf16 against the torch reference in float32 run on the
same (bf16-rounded) inputs. Outputs are allocated from memory poisoned with NaN, inputs are fresh
random tensors per test. Run on the GPU machine: python -m pytest -m gpu tests/gpu/test_gpu_mamba3.py"""
import math
from dataclasses import replace

import pytest
import torch

from hybridlab.kernels.ops.mamba3 import fused, reference
from hybridlab.kernels.ops.mamba3.plan import DEFAULT_PLAN
from gpu_helpers import each_launch_config

pytestmark = pytest.mark.gpu
BF16_TOL = 1e-2   # relative L2 error, bf16 operands with float32 accumulation
# The angle gradients are sums over every later position of terms that nearly cancel: the scores
# q_t.k_s depend on theta_t - theta_s only, so a common rotation of all angles changes nothing
# but the initial and final states, and d angle0 (a sum over the whole sequence) is close to 0.
# Measured on an H100 (2026-11-22, the five shapes below, every other tensor <= 5.4e-3):
#   angles: 1.03e-2 to 2.22e-2 (SISO), 1.27e-2 to 1.67e-2 (MIMO)
#   angle0: 3.36e-2 to 7.34e-2 (SISO), 4.31e-2 to 5.45e-2 (MIMO)
# while perturbing x, z, B, C by bf16-sized noise moves the fp32 reference's angles gradient by
# ~5e-3 and its angle0 gradient by ~3e-3 (angle_noise_floor, printed by the test). So most of
# the error is our own internal bf16 rounding (bf16 chunk states and dot operands in the
# backward) breaking that cancellation, not the inputs: an open accuracy item (BENCHMARKS.md),
# held here at what was measured so it cannot get worse unnoticed. The fp32 path matches the
# reference to 1e-4 (test_mamba3_fp32_tight): the formula is right.
ANGLE_GRAD_TOL = {"angles": 2.5e-2, "angle0": 8e-2}


def poison():
    """Fill the caching allocator's free memory with NaN so torch.empty outputs start as NaN."""
    free = torch.cuda.mem_get_info()[0]
    n = min(int(free * 0.5), 16 << 30) // 4
    buf = torch.empty(n, device="cuda").fill_(float("nan"))
    del buf


def rel_l2(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def rel_max(a, b):
    """Largest elementwise difference relative to b's largest magnitude."""
    return ((a - b).abs().max() / b.abs().max()).item()


def make(b, L, H, P, N, R=1, G=1, S=None, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rn = lambda *s, dt=torch.bfloat16: torch.randn(*s, generator=g, device="cuda").to(dt)  # noqa: E731
    S = N // 4 if S is None else S
    bshape = (b, L, G, N) if R == 1 else (b, L, R, G, N)
    bias = (H, N) if R == 1 else (H, R, N)
    args = [rn(b, L, H, P),
            torch.nn.functional.softplus(torch.randn(b, L, H, generator=g, device="cuda") - 3.0),  # dt ~ 0.05
            -torch.nn.functional.softplus(torch.randn(b, L, H, generator=g, device="cuda")),
            rn(b, L, H), rn(*bshape) * 0.3, rn(*bshape) * 0.3]
    kw = dict(angles=rn(b, L, S), B_bias=1 + 0.1 * torch.randn(bias, generator=g, device="cuda"),
              C_bias=1 + 0.1 * torch.randn(bias, generator=g, device="cuda"),
              D=torch.ones(H, device="cuda"), z=rn(b, L, H, P))
    if R > 1:
        kw.update(W_x=torch.full((H, R, P), 1.0 / R, device="cuda") + 0.05 * torch.randn(H, R, P, generator=g, device="cuda"),
                  W_z=1 + 0.1 * torch.randn(H, R, P, generator=g, device="cuda"),
                  W_o=torch.full((H, R, P), 1.0 / R, device="cuda") + 0.05 * torch.randn(H, R, P, generator=g, device="cuda"))
    ks = (b, H, N) if R == 1 else (b, R, H, N)
    ini = (torch.rand(b, H, S, generator=g, device="cuda") * 6, 0.1 * torch.randn(b, H, P, N, generator=g, device="cuda"),
           torch.randn(*ks, generator=g, device="cuda"), torch.randn(b, H, P, generator=g, device="cuda"))
    return args, kw, ini


def run(fn, args, kw, ini, chunk, upcast, **plan):
    cast = (lambda t: t.float()) if upcast else (lambda t: t)
    a = [cast(t).detach().requires_grad_(True) for t in args]
    k = {n: cast(t).detach().requires_grad_(True) for n, t in kw.items()}
    i = tuple(t.detach().clone().requires_grad_(True) for t in ini)
    poison()
    y, fin = fn(*a, **k, **plan, initial_states=i, chunk_size=chunk, return_final_states=True)
    g = torch.Generator(device="cuda").manual_seed(123)
    loss = (y.float() * torch.randn(y.shape, generator=g, device="cuda")).sum()
    loss = loss + (fin[1] * torch.randn(fin[1].shape, generator=g, device="cuda")).sum() * 0.01
    poison()
    loss.backward()
    grads = {n: t.grad for n, t in zip(("x", "dt", "A", "trap", "B", "C"), a)}
    grads.update({n: t.grad for n, t in k.items()})
    grads.update({n: t.grad for n, t in zip(("angle0", "ssm0", "k0", "v0"), i)})
    return y, fin, grads


SHAPES = [  # b, L, H, P, N, R, G, chunk
    pytest.param(4, 4096, 32, 64, 128, 1, 1, 64, id="bench-b4-l4096"),
    pytest.param(2, 1000, 8, 64, 64, 1, 2, 64, id="siso-l1000-g2"),
    # 8 heads with 32 rotated pairs: the step kernels' dots at a 16-wide head side faulted (fused_siso._p2_32)
    pytest.param(2, 1024, 8, 64, 128, 1, 1, 64, id="siso-h8-pairs32"),
    pytest.param(2, 777, 8, 64, 128, 4, 1, 16, id="mimo4-l777"),
    pytest.param(1, 300, 4, 32, 32, 2, 2, 32, id="mimo2-small"),
    pytest.param(2, 500, 8, 64, 128, 4, 1, 64, id="mimo4-chunk64-clamped"),
]


def angle_noise_floor(args, kw, ini, chunk, gr):
    """How far the fp32 reference's angle gradients move when x, z, B and C get bf16-sized
    (2^-8 relative) random perturbations: the part of the bf16 error no kernel can avoid."""
    g = torch.Generator(device="cuda").manual_seed(7)
    jig = lambda t, scale: t.float() + (torch.rand(t.shape, generator=g, device="cuda") * 2 - 1) * 2 ** -8 * scale  # noqa: E731
    a = list(args)
    a[0] = jig(a[0], a[0].float().abs())
    a[4], a[5] = (jig(t, t.float().abs() + 1) for t in (a[4], a[5]))    # |B + bias| ~ |B| + 1
    k = dict(kw, z=jig(kw["z"], kw["z"].float().abs()))
    _, _, gp = run(reference.mamba3, a, k, ini, chunk, upcast=True)
    return {n: f"{rel_l2(gp[n], gr[n]):.2e}" for n in ANGLE_GRAD_TOL}


@pytest.mark.parametrize("b,L,H,P,N,R,G,chunk", SHAPES)
def test_mamba3_bf16_vs_reference(b, L, H, P, N, R, G, chunk):
    args, kw, ini = make(b, L, H, P, N, R, G)
    yt, ft, gt = run(fused.mamba3, args, kw, ini, chunk, upcast=False)
    yr, fr, gr = run(reference.mamba3, args, kw, ini, chunk, upcast=True)
    assert yt.dtype == torch.bfloat16 and torch.isfinite(yt).all()
    assert rel_l2(yt, yr) <= BF16_TOL
    d = torch.remainder(ft[0] - fr[0] + math.pi, 2 * math.pi) - math.pi
    assert d.abs().max() <= 1e-3
    for a, r in zip(ft[1:], fr[1:]):
        assert torch.isfinite(a).all() and rel_l2(a, r) <= BF16_TOL
    errs = {}
    for n, g in gr.items():
        assert gt[n] is not None and torch.isfinite(gt[n]).all(), n
        errs[n] = rel_l2(gt[n], g)
    floor = angle_noise_floor(args, kw, ini, chunk, gr)
    print({n: f"{e:.2e}" for n, e in errs.items()}, "input-rounding floor", floor)   # quoted above
    bad = {n: e for n, e in errs.items() if e > ANGLE_GRAD_TOL.get(n, BF16_TOL)}
    assert not bad, errs


@pytest.mark.parametrize("R", [1, 2, 4], ids=["siso", "mimo2", "mimo4"])
def test_mamba3_fp32_tight(R):
    """fp32 operands on the GPU: same 1e-4 bar as the interpreter tests, so the bf16 differences
    above are rounding, not a wrong formula."""
    args, kw, ini = make(2, 200, 4, 32, 32, R, 2)
    args = [t.float() for t in args]
    kw = {n: t.float() for n, t in kw.items()}
    yt, ft, gt = run(fused.mamba3, args, kw, ini, 32, upcast=False)
    yr, fr, gr = run(reference.mamba3, args, kw, ini, 32, upcast=False)
    assert rel_max(yt, yr) <= 1e-4
    for n, g in gr.items():
        assert rel_max(gt[n], g) <= 1e-4, n


@pytest.mark.parametrize("R", [1, 4], ids=["siso", "mimo4"])
def test_fast_trig_matches_libdevice_at_large_angles(R):
    """The rotations' approximate cos/sin (fused_rotate._cos_sin) reduce theta modulo 2 pi
    themselves: with steps of dt ~ 5-20 the in-chunk angles reach thousands of radians, and the
    result must still match libdevice's cos/sin (fp32 operands, so the comparison sees the
    trigonometry, not bf16 rounding). Measured on the H100 (2026-11-23): largest difference
    5.7e-6 (the angle0 gradient, a nearly cancelling sum), every other tensor <= 8.6e-7."""
    args, kw, ini = make(2, 200, 4, 32, 32, R, 2)
    args = [t.float() for t in args]
    args[1] = 5 + 15 * torch.rand(args[1].shape, device="cuda")         # dt: 5..20
    args[2] = -0.01 * torch.rand(args[2].shape, device="cuda")          # weak decay, so late steps count
    kw = {n: t.float() for n, t in kw.items()}
    out = {}
    for fast in (True, False):
        out[fast] = run(fused.mamba3, args, kw, ini, 32, upcast=False, plan=replace(DEFAULT_PLAN, fast_trig=fast))
    (yf, _, gf), (ya, _, ga) = out[True], out[False]
    errs = {n: rel_max(gf[n], g) for n, g in ga.items()}
    errs["out"] = rel_max(yf, ya)
    print({n: f"{e:.1e}" for n, e in errs.items()})
    assert all(torch.isfinite(t).all() for t in gf.values())
    assert max(errs.values()) <= 1e-4, errs


@pytest.mark.parametrize("R", [1, 4])
def test_decode_kernel_bf16(R):
    b, H, P, N, G, steps = 3, 16, 64, 128, 1, 6
    args, kw, ini = make(b, steps, H, P, N, R, G)
    st_t = tuple(t.clone() for t in ini)
    st_r = tuple(t.clone() for t in ini)
    for t in range(steps):
        a = [v[:, t] for v in args]
        k = {n: (v[:, t] if n in ("angles", "z") else v) for n, v in kw.items()}
        poison()
        yt = fused.mamba3_state_update(st_t, *a, **k)
        yr = reference.mamba3_state_update(st_r, *[v.float() for v in a], **{n: v.float() for n, v in k.items()})
        assert torch.isfinite(yt).all() and rel_l2(yt, yr) <= BF16_TOL
    for a, r in zip(st_t[1:], st_r[1:]):
        assert rel_l2(a, r) <= 1e-4   # states are float32 in both, inputs identical


def test_decode_matches_chunked_bf16():
    """Decode steps continue a Triton prefill: prefill(L) then 5 steps == prefill(L+5)."""
    args, kw, ini = make(2, 133, 8, 64, 128)
    L0 = 128
    full = fused.mamba3(*args, **kw, initial_states=ini, chunk_size=64)
    cut = lambda t, s: t[:, s] if t.dim() >= 3 and t.shape[1] == 133 else t  # noqa: E731
    _, st = fused.mamba3(*[cut(t, slice(0, L0)) for t in args], **{n: cut(v, slice(0, L0)) for n, v in kw.items()},
                         initial_states=ini, chunk_size=64, return_final_states=True)
    st = tuple(t.contiguous() for t in st)
    for t in range(L0, 133):
        y = fused.mamba3_state_update(st, *[v[:, t] for v in args], **{n: cut(v, t) for n, v in kw.items()})
        assert rel_l2(y, full[:, t]) <= BF16_TOL


@pytest.mark.parametrize("ssd_chunk", [64, 128])
def test_mamba3_small_state_one_chunk_every_launch_config(ssd_chunk):
    """The search's case that made an illegal memory access (d_state 16, one 128-step SSD chunk,
    Triton's wgmma path reading past the SSD backward's shared memory): every launch config of
    every SSD kernel, each checked against the reference."""
    plan = replace(DEFAULT_PLAN, ssd_chunk=ssd_chunk)
    args, kw, ini = make(32, 128, 8, 32, 16, S=4)
    yr, _, gr = run(reference.mamba3, args, kw, ini, 64, upcast=True)
    for config, ssd_plan in enumerate(each_launch_config(plan.ssd)):
        yt, _, gt = run(fused.mamba3, args, kw, ini, 64, upcast=False, plan=replace(plan, ssd=ssd_plan))
        errs = {n: rel_l2(gt[n], g) for n, g in gr.items()}
        errs["out"] = rel_l2(yt, yr)
        bad = {n: e for n, e in errs.items() if not e <= ANGLE_GRAD_TOL.get(n, BF16_TOL)}
        assert not bad, f"config {config}: {errs}"