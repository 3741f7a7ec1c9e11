"""Mamba-3 Triton kernels (run by the interpreter on CPU) against the torch reference in float32:
forward, final states, and the gradient of every input, incl. initial states and final-state
gradients; plus the decode-step kernel and the block running on the Triton backend."""
import math
from dataclasses import replace

import pytest
import torch

from hybridlab.kernels.ops.mamba3 import fused, fused_mimo, fused_siso, reference
from hybridlab.kernels.ops.mamba3.plan import DEFAULT_PLAN

TOL = 1e-4


def chunked(chunk, plan=DEFAULT_PLAN, **changes):
    """``plan`` running SSD chunks of ``chunk`` steps (whatever HYBRIDLAB_MAMBA3_SSD_CHUNK says), so
    these short sequences span several SSD chunks and the state-passing paths run."""
    return replace(plan, ssd_chunk=chunk, **changes)


def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


def make_case(b=1, L=20, H=2, P=16, G=1, N=16, R=1, S=3, opt=("angles", "B_bias", "C_bias", "D", "z", "trap"),
              init=("angle", "ssm", "k", "v"), mimo_w=("W_x", "W_z", "W_o")):
    g = torch.Generator().manual_seed(L * 100 + H * 10 + R)
    rn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    bshape = (b, L, G, N) if R == 1 else (b, L, R, G, N)
    args = [rn(b, L, H, P), torch.rand(b, L, H, generator=g) * 0.5 + 0.05, -torch.rand(b, L, H, generator=g) * 1.5,
            rn(b, L, H) if "trap" in opt else None, rn(*bshape), rn(*bshape)]
    bias = (H, N) if R == 1 else (H, R, N)
    kw = dict(angles=rn(b, L, S) if "angles" in opt and S else None,
              B_bias=rn(*bias) if "B_bias" in opt else None, C_bias=rn(*bias) if "C_bias" in opt else None,
              D=rn(H) if "D" in opt else None, z=rn(b, L, H, P) if "z" in opt else None)
    if R > 1:
        kw.update({k: (rn(H, R, P) if k in mimo_w else None) for k in ("W_x", "W_z", "W_o")})
    ks = (b, H, N) if R == 1 else (b, R, H, N)
    states = dict(angle=torch.rand(b, H, S, generator=g) * 6, ssm=rn(b, H, P, N), k=rn(*ks), v=rn(b, H, P))
    ini = tuple(states[k] if k in init else None for k in ("angle", "ssm", "k", "v")) if init else None
    if ini is not None and kw["angles"] is None:
        ini = (None,) + ini[1:]
    return args, kw, ini


def run_both(args, kw, ini, chunk, sums=False, plan=None):
    """Forward + backward of a random loss over y and every final state, for both backends
    (sums: their plain sums instead, whose gradients autograd hands over expanded, stride 0);
    Triton with ``plan``, by default the default plan at SSD chunks of ``chunk`` steps."""
    out = {}
    plan = plan or chunked(chunk)
    for name, fn in (("ref", reference.mamba3), ("tri", lambda *a, **k: fused.mamba3(*a, **k, plan=plan))):
        a = [t.clone().requires_grad_(True) if t is not None else None for t in args]
        k = {n: (t.clone().requires_grad_(True) if t is not None else None) for n, t in kw.items()}
        i = tuple(t.clone().requires_grad_(True) if t is not None else None for t in ini) if ini else None
        y, fin = fn(*a, **k, initial_states=i, chunk_size=chunk, return_final_states=True)
        g = torch.Generator().manual_seed(7)
        weigh = (lambda t: t) if sums else (lambda t: t * torch.randn(t.shape, generator=g))  # noqa: E731
        loss = weigh(y).sum()
        for t in fin:
            loss = loss + weigh(t).sum()
        loss.backward()
        leaves = dict(zip(("x", "dt", "A", "trap", "B", "C"), a))
        leaves.update(k)
        if i:
            leaves.update(zip(("angle0", "ssm0", "k0", "v0"), i))
        out[name] = (y, fin, {n: t.grad for n, t in leaves.items() if t is not None})
    return out


def check(out):
    (yr, fr, gr), (yt, ft, gt) = out["ref"], out["tri"]
    assert yt.shape == yr.shape and yt.dtype == yr.dtype
    assert torch.isfinite(yt).all()
    assert rel(yt, yr) <= TOL
    d = torch.remainder(ft[0] - fr[0] + math.pi, 2 * math.pi) - math.pi
    assert d.numel() == 0 or d.abs().max() <= 1e-4
    for a, b in zip(ft[1:], fr[1:]):
        assert a.shape == b.shape and rel(a, b) <= TOL
    assert gt.keys() == gr.keys()
    for n in gr:
        if gt[n] is None:       # an input that cannot matter (v0 without k0): autograd leaves None
            assert not gr[n].any(), n
            continue
        assert gt[n].shape == gr[n].shape, n
        assert rel(gt[n], gr[n]) <= TOL, (n, rel(gt[n], gr[n]))


CASES = {
    "siso-all-init": dict(L=20),
    "siso-g2-fullrot-multiple": dict(L=16, H=4, G=2, S=8, init=()),
    "siso-bare": dict(L=13, opt=(), init=()),
    "siso-odd-shapes": dict(L=11, P=12, N=14, S=2, opt=("angles", "B_bias", "z", "trap"), init=("ssm", "k", "v")),
    "mimo2-all-init": dict(L=20, R=2),
    "mimo4-per-rank": dict(L=10, R=4, opt=("angles", "C_bias", "D", "trap"), mimo_w=("W_x",), init=("angle", "ssm")),
    "mimo2-g2-z-only": dict(L=9, R=2, H=4, G=2, opt=("z", "trap", "D"), mimo_w=("W_z", "W_o"), init=("k", "v", "ssm")),
    # 120 rows: two 64-row angle chunks and output-kernel tiles, eight 16-row SSD chunks
    "mimo4-long": dict(L=30, R=4, H=4, G=2, S=4),
    # n 32: the backward's default 16 rotation pairs per program (one block of pairs)
    "mimo4-n32": dict(L=24, R=4, N=32, S=6),
}
#: the cases that take long in the interpreter (marked slow: the full suite runs them)
SLOW = {"mimo4-long"}
CHUNK = {"siso-all-init": 8, "siso-g2-fullrot-multiple": 16, "siso-bare": 4, "siso-odd-shapes": 8,
         "mimo2-all-init": 8, "mimo4-per-rank": 4, "mimo2-g2-z-only": 16, "mimo4-long": 16,
         "mimo4-n32": 16}


def cases(*names):
    """Case names as parameters, those in SLOW marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names or CASES]


@pytest.mark.parametrize("name", cases())
def test_triton_matches_reference(name):
    check(run_both(*make_case(**CASES[name]), CHUNK[name]))


@pytest.mark.parametrize("name", cases("siso-all-init", "siso-g2-fullrot-multiple", "siso-odd-shapes", "mimo4-long"))
def test_rotation_backward_in_pair_blocks(name):
    """The rotation backward split over blocks of 2 rotation pairs (a speed knob): same result."""
    check(run_both(*make_case(**CASES[name]), CHUNK[name], plan=chunked(CHUNK[name], rotate_bwd_pairs=2)))


@pytest.mark.parametrize("name", ["siso-all-init", "siso-odd-shapes", "mimo2-all-init"])
def test_sequential_state_kernels(name):
    """The SSD chunk states as one sequential kernel per state tile (ssd/fused_state.py), the
    path for grids that fill the GPU, with two tiles along N: same result."""
    plan = chunked(CHUNK[name], ssd=replace(DEFAULT_PLAN.ssd, seq_state_min=1, seq_state_bn=16))
    check(run_both(*make_case(**dict(CASES[name], N=32)), CHUNK[name], plan=plan))


@pytest.mark.parametrize("name", ["siso-all-init", "mimo2-all-init"])
def test_final_state_gradients_from_sums(name):
    """y.sum() and final_state.sum(): autograd hands the backward expanded (stride-0) gradients,
    which the kernels must not read as dense tensors (SSD's state passing once did)."""
    check(run_both(*make_case(**CASES[name]), CHUNK[name], sums=True))


@pytest.mark.slow
def test_siso_angle_scan_over_many_chunk_blocks():
    """The angle offsets' float64 scan over several blocks of chunks (fused_prep.py), forward and
    backward: 16-step angle chunks, two per scan block, so 150 steps make 10 chunks in 5 blocks."""
    check(run_both(*make_case(b=2, L=150, H=2, S=4), 32, plan=chunked(32, angle_chunk=16, scan_chunks=2)))


def test_siso_step_prep_against_torch(monkeypatch):
    """The per-step scalars, angle offsets and the skip weight D_pos = -bnext qk (zero on the SSD's
    padding rows), from the prep and rotation kernels, against the torch formulas MIMO uses. Every
    new float tensor starts as NaN, so an element a kernel leaves unwritten shows; 16-step angle
    chunks cover 160 rows, and the rows up to Lp = 192 come from the rotation's extra programs."""
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: empty(*a, **k).fill_(math.nan))
    plan = replace(DEFAULT_PLAN, angle_chunk=16)
    (x, dt, A, trap, B, C), kw, ini = make_case(b=2, L=150, H=3, S=5)
    adt, w, bnext, ps, off, final = fused_siso._step_prep(dt, A, trap, kw["angles"], ini[0], plan)
    dtf, adt_t, _, w_t, bnext_t, _ = fused_siso.step_weights(dt, A, trap)
    ps_t = math.pi * torch.tanh(kw["angles"])
    off_t, final_t = fused_siso.angle_offsets(ps_t, dtf, ini[0], plan.angle_chunk)
    for a, b in ((adt, adt_t), (w, w_t), (bnext, bnext_t), (ps, ps_t), (off, off_t), (final, final_t)):
        assert a.shape == b.shape and rel(a, b) <= TOL
    Lp = 192                                                     # whole 64-step SSD chunks
    k, q, qk, dpos = fused_siso._rotate(B, C, None, None, ps, dt, off, 3, x.dtype, plan, bnext=bnext, Lp=Lp)
    assert dpos.shape == (2, 3, Lp)
    assert rel(dpos[:, :, :150], (-bnext * qk).transpose(1, 2)) <= TOL
    assert (dpos[:, :, 150:] == 0).all()
    assert torch.isfinite(k).all() and torch.isfinite(q).all()


def random_siso_case(seed):
    """A random SISO configuration: groups, odd sizes, partial rotation, any option subset."""
    r = torch.Generator().manual_seed(seed)
    pick = lambda *v: v[int(torch.randint(len(v), (1,), generator=r))]  # noqa: E731
    G = pick(1, 2)
    H = G * pick(1, 2, 3)
    N = pick(6, 8, 13, 16)
    opts = tuple(o for o in ("angles", "B_bias", "C_bias", "D", "z", "trap") if torch.rand(1, generator=r) < 0.7)
    init = tuple(o for o in ("angle", "ssm", "k", "v") if torch.rand(1, generator=r) < 0.5)
    dims = dict(b=pick(1, 2), L=int(torch.randint(3, 90, (1,), generator=r)), H=H, P=pick(4, 9, 16),
                G=G, N=N, S=int(torch.randint(1, N // 2 + 1, (1,), generator=r)), opt=opts, init=init)
    return dims, pick(16, 32, 64)


@pytest.mark.parametrize("seed", range(8))
def test_siso_random_configurations(seed):
    """SISO (the path through the SSD kernels) on random shapes and option subsets."""
    dims, chunk = random_siso_case(seed)
    check(run_both(*make_case(**dims), chunk))


@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.slow), pytest.param(1, marks=pytest.mark.slow), 2, 3])
def test_mimo_random_configurations(seed):
    """MIMO (SSD kernels on l*R rows plus the same-step term) on random shapes, ranks, MIMO weights
    and option subsets."""
    dims, chunk = random_siso_case(100 + seed)
    r = torch.Generator().manual_seed(seed)
    dims["R"] = (2, 4, 8)[int(torch.randint(3, (1,), generator=r))]
    dims["mimo_w"] = tuple(w for w in ("W_x", "W_z", "W_o") if torch.rand(1, generator=r) < 0.6)
    check(run_both(*make_case(**dims), chunk))


def test_only_final_state_used():
    """Backward with no gradient for y (None): only the final state feeds the loss."""
    args, kw, ini = make_case(L=12)
    grads = []
    for fn, plan in ((reference.mamba3, {}), (fused.mamba3, {"plan": chunked(8)})):
        x = args[0].clone().requires_grad_(True)
        _, fin = fn(x, *args[1:], **kw, **plan, initial_states=ini, chunk_size=8, return_final_states=True)
        fin[1].square().sum().backward()
        grads.append(x.grad)
    assert rel(grads[1], grads[0]) <= TOL


@pytest.mark.parametrize("R,opt,mimo_w", [
    (1, ("angles", "B_bias", "C_bias", "D", "z", "trap"), ()),
    (1, (), ()),
    (2, ("angles", "B_bias", "C_bias", "D", "z", "trap"), ("W_x", "W_z", "W_o")),
    (4, ("angles", "trap", "z"), ("W_x",)),          # per-rank output
])
def test_decode_kernel_matches_reference(R, opt, mimo_w):
    args, kw, ini = make_case(L=4, H=4, G=2, R=R, S=5, opt=opt, mimo_w=mimo_w)
    if ini[0] is None:
        ini = (torch.zeros(1, 4, 0),) + ini[1:]
    st_ref = tuple(t.clone() for t in ini)
    st_tri = tuple(t.clone() for t in ini)
    for t in range(args[0].shape[1]):
        a = [v[:, t] if v is not None else None for v in args]
        k = {n: (v[:, t] if n in ("angles", "z") and v is not None else v) for n, v in kw.items()}
        y_ref = reference.mamba3_state_update(st_ref, *a, **k)
        y_tri = fused.mamba3_state_update(st_tri, *a, **k)
        assert y_tri.shape == y_ref.shape
        assert rel(y_tri, y_ref) <= TOL
    d = torch.remainder(st_tri[0] - st_ref[0] + math.pi, 2 * math.pi) - math.pi
    assert d.numel() == 0 or d.abs().max() <= 1e-5
    for a, b in zip(st_tri[1:], st_ref[1:]):
        assert rel(a, b) <= TOL


def test_block_on_triton_backend(monkeypatch):
    from hybridlab.blocks import ForwardContext, LayerContext, get_block
    from hybridlab.blocks.mamba3 import Mamba3Config
    cfg = Mamba3Config(d_state=16, headdim=16, expand=1, chunk_size=8, mimo_rank=2)
    blk = get_block("mamba3")(cfg, LayerContext(index=0, name="M", d_model=32, n_layers=1))
    x = torch.randn(1, 12, 32)
    res = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("HYBRIDLAB_KERNELS", backend)
        blk.zero_grad()
        y = blk(x, ForwardContext())
        y.square().sum().backward()
        res[backend] = (y.detach(), {n: p.grad.clone() for n, p in blk.named_parameters()})
    assert rel(res["triton"][0], res["reference"][0]) <= TOL
    for n, g in res["reference"][1].items():
        assert rel(res["triton"][1][n], g) <= TOL, n


def test_triton_rejects_non_power_of_two_rank():
    args, kw, ini = make_case(L=4, R=2)
    B3 = torch.randn(1, 4, 3, 1, 16)
    with pytest.raises(ValueError, match="power-of-two"):
        fused.mamba3(args[0], args[1], args[2], args[3], B3, B3, chunk_size=8)


@pytest.mark.parametrize("R,N", [(1, 16), (2, 16), (4, 32)])
def test_half_precision_path(R, N):
    """16-bit operands and 16-bit stored chunk states (the GPU bf16 path; the interpreter's bf16
    tl.dot is broken, fp16 takes the same code; at R 4 and n 32 the step scores' 16-bit
    tensor-core product). Measured rel-L2 errors ~1e-3; bar 5e-3."""
    args, kw, ini = make_case(L=40, H=2, R=R, N=N)
    args = [t.half() if i in (0, 4, 5) else t for i, t in enumerate(args)]
    kw["z"] = kw["z"].half()
    res = {}
    for name, fn, up in (("tri", fused.mamba3, False), ("ref", reference.mamba3, True)):
        a = [(t.float() if up else t).detach().requires_grad_(True) for t in args]
        k = {n: (v.float() if up else v).detach().requires_grad_(True) for n, v in kw.items() if v is not None}
        plan = {} if up else {"plan": chunked(16)}
        y, fin = fn(*a, **k, **plan, initial_states=ini, chunk_size=16, return_final_states=True)
        (y.float() * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        res[name] = (y, fin[1], [t.grad for t in a] + [v.grad for v in k.values()])
    l2 = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()  # noqa: E731
    assert res["tri"][0].dtype == torch.float16
    assert l2(res["tri"][0], res["ref"][0]) <= 5e-3
    assert l2(res["tri"][1], res["ref"][1]) <= 5e-3
    for g_t, g_r in zip(res["tri"][2], res["ref"][2]):
        assert torch.isfinite(g_t).all() and l2(g_t, g_r) <= 5e-3


@pytest.mark.parametrize("R", [2, 4])
def test_mimo_v_rows_kernels(R):
    """v = x W_x as the SSD's rows and its gradient (dx, dW_x from the SSD's part and the
    same-step term's), against torch: 70 steps span two full blocks of 32 steps and a partial one."""
    from hybridlab.kernels.ops.mamba3.fused_mimo_rows import v_rows_bwd_kernel, v_rows_fwd_kernel
    g = torch.Generator().manual_seed(R)
    b, L, H, P = 2, 70, 3, 12
    x = torch.randn(b, L, H, P, generator=g)
    wx = torch.randn(R, H, P, generator=g)
    grid, meta = fused_mimo._v_launch(L, H, P, R, b, replace(DEFAULT_PLAN, mimo_v_steps=32))
    assert grid[0] == 3
    v = torch.empty(b, L * R, H, P)
    v_rows_fwd_kernel[grid](x, wx, v, L, H, P, **meta)
    assert rel(v, (x.unsqueeze(2) * wx).reshape(b, L * R, H, P)) <= TOL
    dv, dvs = torch.randn(b, L * R, H, P, generator=g), torch.randn(b, L * R, H, P, generator=g)
    dx, dwx = torch.empty_like(x), torch.empty(b, grid[0], H, R, P)
    v_rows_bwd_kernel[grid](x, wx, dv, dvs, dx, dwx, L, H, P, grid[0], **meta)
    gsum = (dv + dvs).view(b, L, R, H, P)
    assert rel(dx, (gsum * wx).sum(2)) <= TOL
    assert rel(dwx.sum((0, 1)).transpose(0, 1), (gsum * x.unsqueeze(2)).sum((0, 1))) <= TOL


def test_ssd_chunk_choice():
    """SISO's SSD chunk: 64 where the sequential chunk-state kernels run, else 128; MIMO 128; a
    set value wins for both."""
    auto = replace(DEFAULT_PLAN, ssd_chunk=None)
    assert (auto.siso_chunk(True), auto.siso_chunk(False), auto.mimo_chunk()) == (64, 128, 128)
    fixed = replace(DEFAULT_PLAN, ssd_chunk=32)
    assert (fixed.siso_chunk(True), fixed.siso_chunk(False), fixed.mimo_chunk()) == (32, 32, 32)
