"""The kernel benchmark harness (benchmarks/kernels, `python -m benchmarks.kernels`) and the peer
loader (benchmarks/peer.py), at tiny shapes on the CPU."""
import ast
import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import peer
from benchmarks.kernels import cases, compare, report, runner, timing
from benchmarks.kernels.cli import main
from hybridlab.kernels.dispatch import implementation

BASELINES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "gpu-baselines.md"


def _run_cli(tmp_path, *extra):
    js, md = tmp_path / "bench.json", tmp_path / "bench.md"
    rc = main(["--quick", "--json", str(js), "--markdown", str(md), *extra])
    return rc, json.loads(js.read_text()), md.read_text()


def test_reference_only_end_to_end(tmp_path, capsys):
    ops = "selective_scan,ssd,rmsnorm_gated,ssd_state_update"
    rc, report, md = _run_cli(tmp_path, "--shapes", "tiny", "--impls", "ref", "--no-peer", "--ops", ops)
    assert rc == 0
    meta = report["meta"]
    for key in ("date", "gpu", "torch", "triton", "command", "dtype", "settings"):
        assert key in meta
    assert meta["command"].startswith("python -m benchmarks.kernels") and "--impls ref" in meta["command"]
    assert report["ceilings"]["copy_TBps"] > 0
    assert [r["op"] for r in report["results"]] == ops.split(",")
    for r in report["results"]:
        ref = r["impls"]["ref"]
        assert ref["fwd_ms"] > 0 and ref["fwd_reps"] >= 1
        if cases.SPECS[r["op"]].grads:
            assert ref["fwdbwd_ms"] > 0
        else:
            assert "fwdbwd_ms" not in ref
        assert r["floor_bytes"] > 0
        assert r["floor_ms"] == pytest.approx(r["floor_bytes"] / (report["ceilings"]["copy_TBps"] * 1e12) * 1e3)
        assert set(r["verdict"]) == {"fwd", "fwdbwd"}
        assert "ours" not in r["impls"] and "peer" not in r["impls"]
    assert "| selective_scan | tiny |" in md and "| op | shape |" in md
    out = capsys.readouterr().out
    assert "selective_scan tiny: fwd ours/ref/peer" in out       # progress line
    if not torch.cuda.is_available():
        assert out.rstrip().splitlines()[-1].startswith("(no CUDA here")


def test_floor_bytes_hand_checked():
    kw = cases.make_inputs(cases.shape("selective_scan", "tiny"), cases.Draw(torch.device("cpu"), torch.bfloat16, 0))
    out = torch.empty(1, 4, 24, dtype=torch.bfloat16)
    # u, delta, z: 3 x 96 bf16; B, C: 2 x 96 bf16; A: 16 fp32; D, delta_bias: 2 x 4 fp32; out: 96 bf16
    assert compare.floor_bytes(kw, out) == 3 * 192 + 2 * 192 + 64 + 2 * 16 + 192 == 1248
    # a broadcast input is read once per stored element, an in-place input is also written
    base = torch.zeros(3, 5)
    assert compare.stored_bytes(base[:, None].expand(3, 7, 5)) == 60
    assert compare.floor_bytes({"s": base, "x": base[0]}, base[0], inplace=("s",)) == 60 + 20 + 20 + 60


@pytest.mark.parametrize("op,dims,out_shape,table_ms", [
    ("selective_scan", dict(u=(4, 2048, 4096), delta=(4, 2048, 4096), z=(4, 2048, 4096), B=(4, 16, 4096),
                            C=(4, 16, 4096), A32=(2048, 16), D32=(2048,), delta_bias32=(2048,)), (4, 2048, 4096), 0.090),
    ("ssd", dict(x=(4, 4096, 32, 64), dt=(4, 4096, 32), B=(4, 4096, 1, 128), C=(4, 4096, 1, 128),
                 A32=(32,), D32=(32,), dt_bias32=(32,)), (4, 4096, 32, 64), 0.048),
])
def test_floor_matches_gpu_baselines(op, dims, out_shape, table_ms):
    # the baseline table's floors are these byte counts over 3.0 TB/s
    kw = {k.removesuffix("32"): torch.empty(s, device="meta", dtype=torch.float32 if k.endswith("32") else torch.bfloat16)
          for k, s in dims.items()}
    out = torch.empty(out_shape, device="meta", dtype=torch.bfloat16)
    assert compare.floor_bytes(kw, out) / 3.0e12 * 1e3 == pytest.approx(table_ms, abs=6e-4)


def test_table_targets_match_gpu_baselines():
    if not BASELINES.exists():
        pytest.skip(f"{BASELINES} not present")
    text = BASELINES.read_text()
    rows = re.findall(r"^\| [^|]+ \| (b\d+ l\d+[^|]*?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
    table = [s for s in cases.SHAPES if s.group == "table"]
    assert len(rows) == len(table) == 8
    for s, (shape, fwd, fb, floor) in zip(table, rows):
        dims = dict(re.findall(r"([a-z]+)(\d+)", shape))
        assert all(s.dims[k] == int(v) for k, v in dims.items()), (s, shape)
        assert s.table == (float(fwd), float(fb), float(floor))


def test_select_shapes():
    picked = cases.select_shapes(("ssd", "selective_scan"), ["all"])
    assert all(c.group != "tiny" for c in picked)
    groups = [cases.GROUPS.index(c.group) for c in picked]
    assert groups == sorted(groups) and picked[0].group == "table" and picked[0].op == "ssd"
    assert [c.name for c in cases.select_shapes(("ssd",), ["tiny"])] == ["tiny"]
    with pytest.raises(ValueError, match="unknown shape"):
        cases.select_shapes(("ssd",), ["b9-nonsense"])


def test_list_and_bad_arguments(capsys):
    assert main(["--list", "--shapes", "table"]) == 0
    listed = capsys.readouterr().out
    assert "b1-l32768-h32-p64-n128" in listed and "target fwd 0.691 ms" in listed
    assert main(["--ops", "nope"]) == 2
    assert "unknown op or impl ['nope']" in capsys.readouterr().err
    assert main(["--shapes", "b9-nonsense"]) == 2
    assert "unknown shape(s) ['b9-nonsense']" in capsys.readouterr().err


def test_prepare_calls_a_case_as_the_scripts_do():
    run_ = cases.prepare("rmsnorm_gated", "tiny", "ref", device="cpu", dtype=torch.float32)
    out = run_.forward()
    assert out.shape == (2, 8, 16) and not out.requires_grad
    y = run_.forward_backward()
    grads = run_.grads()
    assert set(grads) == {"x", "weight", "z"}
    # the same gradients as autograd on the same inputs and upstream gradient, by hand
    ref = implementation("rmsnorm_gated", "reference")
    leaves = {k: run_.kwargs[k].detach().clone().requires_grad_(True) for k in grads}
    expect = torch.autograd.grad(ref(**{**run_.kwargs, **leaves}), list(leaves.values()), run_.dout)
    for (name, g), e in zip(leaves.items(), expect):
        torch.testing.assert_close(grads[name], e, rtol=0, atol=0)
    torch.testing.assert_close(y, out)
    # a second call starts from cleared gradients (no accumulation)
    run_.forward_backward()
    torch.testing.assert_close(run_.grads()["x"], grads["x"], rtol=0, atol=0)
    # kwargs replaces the drawn inputs (vs_float64's float64 reference), the upstream gradient follows
    up = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in run_.kwargs.items()}
    r64 = cases.prepare("rmsnorm_gated", "tiny", "ref", device="cpu", dtype=torch.float32, kwargs=up)
    assert r64.forward_backward().dtype == torch.float64 and r64.grads()["x"].dtype == torch.float64


def test_parse_case():
    s, over = cases.parse_case("mamba3/b4-l4096-h32-p64-n128@chunk=128")
    assert (s.op, s.name, over) == ("mamba3", "b4-l4096-h32-p64-n128", {"chunk": 128})
    with pytest.raises(ValueError, match="no case ssd/b9"):
        cases.parse_case("ssd/b9")
    with pytest.raises(ValueError, match="dim=integer"):
        cases.parse_case("ssd/tiny@chunk=big")


def test_the_product_never_imports_the_lab():
    """hybridlab/ is the product: no module there imports benchmarks/ (the lab imports it)."""
    package = Path(__file__).resolve().parents[1] / "hybridlab"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path}:{node.lineno} {n}" for n in names if n.split(".")[0] == "benchmarks"]
    assert offenders == []
    assert not any(package.rglob("bench.py")) and not (package / "kernels" / "peer.py").exists()


def _ours_wrong(scale=1.1, nan=False):
    ref = implementation("rmsnorm_gated", "reference")

    def ours(**kw):
        out = ref(**kw) * scale
        if nan:
            out = out.clone()
            out.view(-1)[3] = float("nan")
        return out
    return ours


@pytest.mark.parametrize("wrong", [dict(scale=1.1), dict(scale=1.0, nan=True)])
def test_check_catches_a_wrong_kernel(wrong):
    shape = next(s for s in cases.SHAPES if s.op == "rmsnorm_gated" and s.group == "tiny")
    fns = {"ours": _ours_wrong(**wrong), "ref": implementation("rmsnorm_gated", "reference")}
    r = compare.run_case(shape, fns, torch.device("cpu"), torch.bfloat16, timing.Settings.quick(), 0.01)
    c = r["check"]["ours_vs_ref"]
    assert c["ok"] is False and r["correct"] is False
    assert set(c["grads"]) == {"x", "weight", "z"}
    if not wrong.get("nan"):
        assert c["out"] == pytest.approx(0.1, rel=1e-2)
    # and the same harness passes the reference against itself
    fns["ours"] = fns["ref"]
    r = compare.run_case(shape, fns, torch.device("cpu"), torch.bfloat16, timing.Settings.quick(), 0.01)
    assert r["correct"] is True and r["check"]["ours_vs_ref"]["out"] == 0.0


def test_a_disagreement_with_the_peer_alone_is_not_called_wrong():
    """Ours and the peer disagree: without the reference the verdict is "disagree" (one of the two
    is off, the run cannot say which) and the case is not counted broken; with the reference
    beside it, ours matching it makes the speed verdict count again."""
    shape = next(s for s in cases.SHAPES if s.op == "rmsnorm_gated" and s.group == "tiny")
    ref = implementation("rmsnorm_gated", "reference")
    off_peer = _ours_wrong(scale=1.2)
    peer_fn = lambda bias=None, **kw: off_peer(**kw)  # noqa: E731  (the peer's layout adds bias)
    r = compare.run_case(shape, {"ours": ref, "peer": peer_fn}, torch.device("cpu"), torch.bfloat16,
                       timing.Settings.quick(), 0.01)
    assert r["check"]["ours_vs_peer"]["ok"] is False
    assert r["correct"] is None and set(r["verdict"].values()) == {"disagree"}
    notes = report.notes({"unavailable": {}, "results": [r]})
    assert any("vs_float64.py" in n for n in notes)
    r = compare.run_case(shape, {"ours": ref, "ref": ref, "peer": peer_fn}, torch.device("cpu"), torch.bfloat16,
                       timing.Settings.quick(), 0.01)
    assert r["correct"] is True and set(r["verdict"].values()) <= {"pass", "miss", "-"}


def test_peer_unavailable_when_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(peer, "_REPO", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYBRIDLAB_PEER_DIR", raising=False)
    p = peer.load_peer()
    assert p.root is None and p.functions == {}
    for op in ("selective_scan", "ssd", "mamba3"):
        assert "prepare_local.sh" in p.reason(op)
    assert "causal-conv1d" in p.reason("causal_conv1d")
    assert peer.main([]) == 1                                   # the CLI reports, never raises
    assert "no mamba_ssm-" in capsys.readouterr().out
    # the benchmark goes on without it and says why
    rc, report, md = _run_cli(tmp_path, "--shapes", "tiny", "--impls", "ref,peer", "--ops", "ssd")
    assert rc == 0
    assert "prepare_local.sh" in report["unavailable"]["ssd"]["peer"]
    assert "peer unavailable" in md and "| unavail |" in md


def test_peer_bare_package(monkeypatch):
    root = peer.peer_root()
    if root is None:
        pytest.skip(".peer/ not prepared (benchmarks/gpu/prepare_local.sh)")
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, name)
    peer._install_bare_package(root)
    try:
        pkg = sys.modules["mamba_ssm"]
        assert pkg.__path__ == [str(root / "mamba_ssm")]
        assert not hasattr(pkg, "selective_scan_fn")            # its __init__ did not run
        mod = importlib.import_module("mamba_ssm.utils.determinism")   # a submodule imports from .peer/
        assert Path(mod.__file__).is_relative_to(root)
        peer._install_bare_package(root)                          # idempotent
    finally:
        for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
            del sys.modules[name]


def _fused_ops():
    found = []
    for op in ("rmsnorm_gated", "causal_conv1d", "selective_scan", "ssd", "mamba3"):   # fastest first
        try:
            implementation(op, "triton")
            found.append(op)
        except Exception:
            continue
    return found


def test_fused_backend_end_to_end(monkeypatch):
    ops = _fused_ops()
    assert ops, "every op has a fused.py; none imported"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":                  # conftest sets it before any kernel is defined
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    op = ops[0]
    # fp32: the CPU interpreter (Triton 3.9) gets tl.dot on bf16 operands wrong
    report = runner.run(ops=(op,), shapes=("tiny",), impls=("ours", "ref"), dtype=torch.float32,
                       device=device, settings=timing.Settings.quick(slow_budget_s=0.2), use_peer=False, quick=True)
    r = report["results"][0]
    assert r["impls"]["ours"]["fwd_ms"] > 0, r
    assert r["check"]["ours_vs_ref"]["ok"], (op, r["check"])


@pytest.mark.gpu
@pytest.mark.parametrize("op", ["ssd", "mamba3", "rmsnorm_gated"])
def test_side_by_side_on_gpu(op):
    # the peer's Triton entry points need no build, so they load while peer_setup.sh still compiles
    if peer.peer_root() is None:
        pytest.skip(".peer/ not carried (benchmarks/gpu/prepare_local.sh)")
    report = runner.run(ops=(op,), shapes=("small", "model"), settings=timing.Settings.quick(), quick=True)
    assert report["meta"]["gpu"] and report["ceilings"]["copy_TBps"] > 0.5
    for r in report["results"]:
        assert r["impls"]["peer"]["fwd_ms"] > 0, report["unavailable"].get(op)
        assert r["floor_ms"] > 0
        if "ours" in r["impls"]:
            assert r["check"]["ours_vs_peer"]["ok"], r["check"]
            assert r["check"]["ours_vs_ref"]["ok"], r["check"]


# --- the GPU scripts' launch-plan variants (benchmarks/gpu/plans.py), checked on the CPU ---

def test_plan_words_parse_into_plans():
    from benchmarks.gpu import plans
    changes = plans.parse("ssd.block_t_max=32 mamba3.rotate_bwd_pairs=32 selective_scan.small.rows_log=2 "
                          "selective_scan.pin_tile_math=false mamba3.ssd_chunk=none")
    built = plans.build(changes)
    assert built["ssd"].block_t_max == 32 and built["ssd"].max_chunk == plans.SSD_PLAN.max_chunk
    assert built["mamba3"].ssd.block_t_max == 32            # SSD changes reach Mamba-3's SSD plan
    assert built["mamba3"].rotate_bwd_pairs == 32 and built["mamba3"].ssd_chunk is None
    ss = built["selective_scan"]
    assert ss.small.rows_log == 2 and ss.small.elems == plans.SELECTIVE_SCAN_PLAN.small.elems
    assert ss.pin_tile_math is False
    assert plans.describe(ss, plans.SELECTIVE_SCAN_PLAN) == "small.rows_log=2 pin_tile_math=False"
    assert plans.build(plans.parse("")) == plans.DEFAULTS
    for bad, says in (("ssd.block_t=32", "SSDPlan has no field block_t"), ("conv.x=1", "no plan 'conv'"),
                      ("ssd=32", "OP.FIELD=VALUE"), ("selective_scan.small.foo=1", "Layout has no field foo"),
                      ("selective_scan.pin_tile_math=2", "true or false"), ("ssd.block_t_max=x", "an integer"),
                      ("ssd.block_t_max=none", "SSDPlan.block_t_max=None"),
                      ("ssd.max_chunk.x=1", "not a nested plan field")):
        with pytest.raises(plans.PlanError, match=re.escape(says)):
            plans.parse(bad)
    with pytest.raises(plans.PlanError, match="a value like True"):
        plans.vary(plans.SELECTIVE_SCAN_PLAN, bc_prefetch=1)


def _variant_lines():
    gpu = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"
    script = (gpu / "kernel_variants.sh").read_text()
    lines = re.findall(r'^  "([^"]*)"$', script.split("variants=(")[1].split(")")[0], re.M)
    assert len(lines) == 5
    for f in sorted(gpu.glob("variants-*.txt")):
        lines += [ln for ln in f.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return lines


def test_every_variant_changes_a_plan():
    """No variant of the GPU scripts silently times the default plan: each names plan fields that
    exist and changes at least one (or a setting outside the plan)."""
    from benchmarks.gpu import plans, ss_bench, ssd_variants
    for name, v in ss_bench.VARIANTS.items():
        changed = plans.describe(ss_bench.plan_of(v), ss_bench.DEFAULT_PLAN)
        assert changed or name == "v2" or set(v) & set(ss_bench.NOT_PLAN), name
    assert set(ss_bench.FAST) >= {"_fast_fwd_seq_kernel", "_fast_bwd_seq_kernel"}
    assert callable(ss_bench.fused._time_major)                 # what torch_pack replaces
    for name, v in ssd_variants.VARIANTS.items():
        changed = plans.describe(ssd_variants.plan_of(v), ssd_variants.DEFAULT_PLAN)
        for launcher in v.get("configs", {}):
            assert isinstance(getattr(ssd_variants.F, launcher), ssd_variants.F._Tuned), launcher
        assert changed or name == "base" or v.get("configs"), name
    # kernel_variants.sh's lines name plan fields (a baseline may spell out a default)
    lines = _variant_lines()
    built = [plans.build(plans.parse(line)) for line in lines]
    assert len(lines) == 5 + 5 + 4
    assert sum(b != plans.DEFAULTS for b in built) == 12      # the two built-in baselines are the defaults


def test_gpu_scripts_parse_their_arguments_on_cpu(monkeypatch, capsys):
    import runpy

    from benchmarks.gpu import launch_overhead, profile_ops, ss_bench, ssd_variants  # noqa: F401 (imports)
    monkeypatch.setattr(sys, "argv", ["ss_bench", "--list"])
    assert ss_bench.main() == 0
    assert "tri_layout" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["ss_bench", "--variants", "v2,nope"])
    with pytest.raises(SystemExit) as e:
        ss_bench.main()
    assert e.value.code == 2 and "unknown variant or shape nope" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["ssd_variants", "--list"])
    ssd_variants.main()
    assert "bn32 " in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        profile_ops.main(["--plan", "ssd.blok_t_max=32", "ssd/b4-l4096-h32-p64-n128"])
    assert e.value.code == 2 and "SSDPlan has no field blok_t_max" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["repro_mamba3", "--list"])
    monkeypatch.setenv("PLANS", '["", "mamba3.ssd_chunk=64 ssd.block_t_max=32"]')
    with pytest.raises(SystemExit) as e:
        runpy.run_module("benchmarks.gpu.repro_mamba3", run_name="__main__")
    assert e.value.code == 0
    assert "'mamba3.ssd_chunk=64 ssd.block_t_max=32'" in capsys.readouterr().out
    monkeypatch.setenv("ENVS", "[{}]")                          # the old knob variants: refused, not ignored
    with pytest.raises(SystemExit) as e:
        runpy.run_module("benchmarks.gpu.repro_mamba3", run_name="__main__")
    assert "ENVS is gone" in str(e.value.code)


def test_kernel_regs_cases_match_the_kernels(monkeypatch):
    """kernel_regs.py's cases name the kernels' real arguments (checked without compiling)."""
    pytest.importorskip("triton")
    from benchmarks import kernel_regs
    monkeypatch.setenv("MIMO", "1")
    cases_ = list(kernel_regs.cases())
    labels = [c[0] for c in cases_]
    assert len(labels) == len(set(labels)) >= 54             # 54 with MIMO=1 when written
    for label, fn, consts, fp32, ints, configs in cases_:
        assert set(consts) <= set(fn.arg_names), (label, set(consts) - set(fn.arg_names))
        assert configs and all(len(c) in (2, 3) for c in configs), label
