"""Mamba-2 Triton kernels (SSD forward+backward, decode step, gated RMSNorm) on the GPU in bf16,
against the torch reference in fp32 run on the same bf16-rounded inputs; and the block on the
Triton path. Outputs come from memory poisoned with NaN (an unwritten element shows), inputs are
fresh random tensors on every run (the seed is in the failure message).
Run on the GPU machine: python -m pytest -m gpu tests/gpu/test_gpu_mamba2.py"""
import math
from dataclasses import replace

import pytest
import torch

from hybridlab.blocks import ForwardContext, LayerContext, get_block
from hybridlab.kernels.ops.rmsnorm_gated import fused as norm_fused, reference as norm_ref
from hybridlab.kernels.ops.ssd import fused, reference
from hybridlab.kernels.ops.ssd.plan import DEFAULT_PLAN
from gpu_helpers import block_backends_agree, each_launch_config, fresh_gen, poison, rel

pytestmark = pytest.mark.gpu
BF16_TOL = 1e-2   # relative L2 error: bf16 inputs/outputs, fp32 math on both sides
#: one launch config per kernel: autotuning every new shape benchmarks every config (seconds per
#: shape); the configs change speed, not results. The bench and the blocks keep autotuning on.
PLAN = replace(DEFAULT_PLAN, autotune=False)


def ssd_inputs(g, b, l, h, p, G, n, extras):
    rn = lambda *s, scale=1.0: torch.randn(*s, generator=g, device="cuda") * scale  # noqa: E731
    # dt_bias as Mamba2 initialises it: softplus^-1 of log-uniform(1e-3, 0.1)
    dt0 = torch.exp(torch.rand(h, generator=g, device="cuda") * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    kw = dict(x=rn(b, l, h, p).bfloat16(), dt=rn(b, l, h, scale=0.5).bfloat16(),
              A=-torch.exp(torch.rand(h, generator=g, device="cuda") * math.log(16.0)),
              B=rn(b, l, G, n).bfloat16(), C=rn(b, l, G, n).bfloat16(),
              D=rn(h, p) if "Dhp" in extras else rn(h), dt_bias=dt0 + torch.log(-torch.expm1(-dt0)))
    if "z" in extras:
        kw["z"] = rn(b, l, h, p).bfloat16()
    if "h0" in extras:
        kw["initial_states"] = rn(b, h, p, n, scale=0.3)
    if "seq" in extras:
        ar = torch.arange(l, device="cuda")
        kw["seq_idx"] = ((ar >= l // 3).int() + (ar >= l // 3 + 1).int() + (ar >= 2 * l // 3).int())[None].repeat(b, 1)
    flags = dict(dt_softplus=True, dt_limit=(1e-3, 0.2) if "limit" in extras else (0.0, math.inf))
    return kw, flags


def run_ssd(fn, kw, flags, chunk, w_out, w_fin, upcast, **plan):
    leaves = {k: ((v.float() if upcast else v).detach().requires_grad_() if v.is_floating_point() else v)
              for k, v in kw.items()}
    poison()
    out, fin = fn(**leaves, **flags, **plan, chunk_size=chunk, return_final_states=True)
    ((out.float() * w_out).sum() + (fin.float() * w_fin).sum()).backward()
    torch.cuda.synchronize()
    return out, fin, {k: v.grad for k, v in leaves.items() if v.is_floating_point()}


@pytest.mark.parametrize("shape", [
    # b, l, h, p, G, n, chunk, extras
    (4, 4096, 32, 64, 1, 128, 256, ()),                                   # gpu-baselines.md rows
    (1, 32768, 32, 64, 1, 128, 256, ()),
    (16, 2048, 32, 64, 1, 64, 256, ()),
    (4, 4096, 32, 64, 1, 128, 256, ("z", "h0", "seq", "limit")),          # every option, real shape
    (2, 1000, 8, 64, 2, 64, 256, ("z", "h0", "seq", "Dhp")),              # l not a multiple, g > 1
    (3, 300, 6, 48, 3, 40, 64, ("z", "h0", "limit")),                     # p, n not powers of two
])
def test_gpu_ssd_bf16(shape):
    b, l, h, p, G, n, chunk, extras = shape
    g, seed = fresh_gen()
    kw, flags = ssd_inputs(g, b, l, h, p, G, n, extras)
    w_out = torch.randn(b, l, h, p, generator=g, device="cuda")
    w_fin = torch.randn(b, h, p, n, generator=g, device="cuda")
    out, fin, grads = run_ssd(fused.ssd, kw, flags, chunk, w_out, w_fin, upcast=False, plan=PLAN)
    rout, rfin, rgrads = run_ssd(reference.ssd, kw, flags, chunk, w_out, w_fin, upcast=True)
    msg = f"seed {seed}"
    # printed before any assert (run_all.sh runs pytest with -s): a run stopped at its time limit
    # loses pytest's failure summary, as one of shape5 (b3 l300) did on 2026-11-23 23:1x
    errs = {k: rel(grads[k], ref) for k, ref in rgrads.items() if grads[k] is not None}
    print(msg, {k: f"{e:.2e}" for k, e in dict(out=rel(out, rout), final=rel(fin, rfin), **errs).items()})
    assert out.dtype == torch.bfloat16 and not out.isnan().any(), msg
    assert rel(out, rout) <= BF16_TOL, f"out {rel(out, rout):.2e} {msg}"
    assert not fin.isnan().any() and rel(fin, rfin) <= BF16_TOL, f"final {rel(fin, rfin):.2e} {msg}"
    for k in rgrads:
        assert grads[k] is not None and grads[k].dtype == kw[k].dtype, f"{k} {msg}"
        assert not grads[k].isnan().any(), f"{k} NaN {msg}"
    bad = {k: e for k, e in errs.items() if not e <= BF16_TOL}
    if bad.keys() & {"A", "dt_bias", "D"}:
        # per-head sums over every position whose terms partly cancel: at b3 l300 (shape5) the A
        # gradient measured 1.2e-3 to 9.6e-3 over 7 seeds (H100, 2026-11-23 23:4x) against 1e-2,
        # one unprinted failure before that, while the fp32 reference's own A gradient moves by
        # 5.7e-3 at that shape under bf16-sized input noise (6.2e-3 at b2 l1000). The bound of the
        # small-state test below: that movement, three times over.
        floor = summed_grads_noise_floor(kw, flags, chunk, w_out, w_fin, rgrads)
        print("noise floor", floor)
        bad = {k: e for k, e in bad.items() if not e <= 3 * floor.get(k, 0.0)}
    assert not bad, f"{bad} {msg}"


@pytest.mark.parametrize("shape", [
    # b, l, h, p, G, n, chunk: small states, one chunk or several; every launch config is tried
    (32, 128, 8, 32, 1, 16, 128), (8, 128, 8, 64, 8, 16, 128), (8, 256, 8, 64, 2, 16, 256),
    (4, 256, 8, 64, 1, 32, 256), (4, 512, 4, 64, 1, 16, 64), (2, 200, 4, 32, 1, 16, 128),
])
def test_gpu_ssd_small_state_under_every_launch_config(shape):
    """Every (num_warps, num_stages) config of every kernel, each checked against the reference.
    At a 16-wide state Triton's wgmma path once read past a kernel's shared memory (an illegal
    memory access that killed the search's worker)."""
    b, l, h, p, G, n, chunk = shape
    g, seed = fresh_gen()
    kw, flags = ssd_inputs(g, b, l, h, p, G, n, ("z",))
    w_out = torch.randn(b, l, h, p, generator=g, device="cuda")
    w_fin = torch.randn(b, h, p, n, generator=g, device="cuda")
    rout, rfin, rgrads = run_ssd(reference.ssd, kw, flags, chunk, w_out, w_fin, upcast=True)
    # A, dt_bias and D get per-head sums over every position, whose terms partly cancel: at
    # b2 l200 h4 the bf16 dt_bias gradient measured 1.41e-2 from the reference (H100,
    # 2026-11-22) while the fp32 kernels match it to 1e-6 (interpreter). Their bound is the
    # reference's own movement under bf16-sized input noise, three times over, or BF16_TOL.
    floor = summed_grads_noise_floor(kw, flags, chunk, w_out, w_fin, rgrads)
    for config, plan in enumerate(each_launch_config(PLAN)):
        out, fin, grads = run_ssd(fused.ssd, kw, flags, chunk, w_out, w_fin, upcast=False, plan=plan)
        errs = {k: rel(grads[k], ref) for k, ref in rgrads.items()}
        errs.update(out=rel(out, rout), final=rel(fin, rfin))
        # printed before any assert: this test once failed only inside a cold run of the whole GPU
        # suite (three times, three shapes), never alone, with its message cut off by the time limit
        print(f"seed {seed} config {config}", {k: f"{e:.2e}" for k, e in errs.items()}, "noise floor", floor)
        bad = {k: e for k, e in errs.items() if not e <= max(BF16_TOL, 3 * floor.get(k, 0.0))}
        assert not bad, f"config {config}: {errs} floor {floor} seed {seed}"


def summed_grads_noise_floor(kw, flags, chunk, w_out, w_fin, rgrads, draws=4):
    """How far the fp32 reference's A, dt_bias and D gradients move when x, B, C and z get
    random 2^-8 relative perturbations (bf16 rounding size): the error no bf16 kernel avoids.
    The largest of ``draws`` perturbations: one draw is itself a noisy estimate. On the H100
    (2026-11-23, six small-state shapes, one draw each) the kernels' A error ran from 0.34x to
    1.5x that draw's movement (3.1e-3 to 1.1e-2), so with one draw a seed whose draw came out
    low could fail the 3x bound on rounding alone: the likely cause of this test's earlier
    failures in cold suite runs (each at another shape; every launch config gives the same
    errors, so no config is at fault)."""
    g = torch.Generator(device="cuda").manual_seed(7)
    jig = lambda t: t.float() * (1 + (torch.rand(t.shape, generator=g, device="cuda") * 2 - 1) * 2 ** -8)  # noqa: E731
    floor = dict.fromkeys(("A", "dt_bias", "D"), 0.0)
    for _ in range(draws):
        noisy = dict(kw, **{k: jig(kw[k]) for k in ("x", "B", "C", "z") if k in kw})
        _, _, moved = run_ssd(reference.ssd, noisy, flags, chunk, w_out, w_fin, upcast=True)
        floor = {k: max(v, rel(moved[k], rgrads[k])) for k, v in floor.items()}
    return floor


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("G", [1, 4])
def test_gpu_ssd_state_update(state_dtype, G):
    b, h, p, n = 64, 32, 64, 128
    g, seed = fresh_gen()
    rn = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    args = dict(x=rn(b, h, p).bfloat16(), dt=(rn(b, h) * 0.5).bfloat16(),
                A=-torch.exp(torch.rand(h, generator=g, device="cuda") * math.log(16.0)),
                B=rn(b, G, n).bfloat16(), C=rn(b, G, n).bfloat16(), D=rn(h), z=rn(b, h, p).bfloat16(),
                dt_bias=rn(h) - 4, dt_softplus=True, dt_limit=(1e-3, 0.1))
    state = (rn(b, h, p, n) * 0.3).to(state_dtype)
    s1, s2 = state.clone(), state.clone()
    poison()
    y1 = fused.ssd_state_update(s1, **args)
    y2 = reference.ssd_state_update(s2, **{k: (v.float() if torch.is_tensor(v) else v) for k, v in args.items()})
    assert y1.dtype == torch.bfloat16 and not y1.isnan().any() and rel(y1, y2) <= BF16_TOL, f"seed {seed}"
    assert rel(s1, s2) <= (1e-5 if state_dtype == torch.float32 else BF16_TOL), f"seed {seed}"


@pytest.mark.parametrize("d,gs,nbg", [(2048, 2048, False), (2048, 256, False), (1000, 500, True)])
def test_gpu_rmsnorm_gated_bf16(d, gs, nbg):
    b, l = 4, 4096
    g, seed = fresh_gen()
    rn = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    kw = dict(x=rn(b, l, d).bfloat16(), weight=1 + 0.1 * rn(d), z=rn(b, l, d).bfloat16())
    w_y = rn(b, l, d)
    res = []
    for fn, up in ((norm_fused.rmsnorm_gated, False), (norm_ref.rmsnorm_gated, True)):
        leaves = {k: (v.float() if up else v).detach().requires_grad_() for k, v in kw.items()}
        poison()
        y = fn(**leaves, eps=1e-5, group_size=gs, norm_before_gate=nbg)
        (y.float() * w_y).sum().backward()
        res.append((y, {k: v.grad for k, v in leaves.items()}))
    (y, gr), (ry, rgr) = res
    assert y.dtype == torch.bfloat16 and not y.isnan().any() and rel(y, ry) <= BF16_TOL, f"seed {seed}"
    for k in rgr:
        assert not gr[k].isnan().any() and rel(gr[k], rgr[k]) <= BF16_TOL, f"{k} seed {seed}"


@pytest.mark.parametrize("over", [{}, {"ngroups": 2, "rmsnorm": False, "dt_limit": [0.001, 0.1]}])
def test_gpu_block_triton_path_matches_reference(monkeypatch, over):
    """The block's real call pattern (strided views, fp32) through both backends; decode == forward."""
    cls = get_block("mamba2")
    m = cls(cls.Config(**over), LayerContext(index=0, name="M", d_model=256, n_layers=2)).cuda()
    x = torch.randn(2, 300, 256, device="cuda")
    seq_idx = (torch.arange(300, device="cuda") >= 170).int()[None].repeat(2, 1)
    block_backends_agree(m, x, ForwardContext(seq_idx=seq_idx), monkeypatch)
