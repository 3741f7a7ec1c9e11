"""hybridlab.kernels.launch: the plan key holds what Triton specializes on, and a FastKernel
launches like the kernel it wraps. Under the interpreter every call takes Triton's own path; on a
GPU the repeats take the compiled kernel's launcher (the same test, run there)."""
from dataclasses import replace

import torch
import triton
import triton.language as tl

from hybridlab.kernels.launch import FastKernel, plan_key
from hybridlab.kernels.ops.ssd import fused
from hybridlab.kernels.ops.ssd.plan import DEFAULT_PLAN

#: the SSD plan of a GPU launch (tuned or not), here driving fakes of Triton's kernels
GPU_PLAN = replace(DEFAULT_PLAN, interpret=False)

DEV = "cuda" if torch.cuda.is_available() else "cpu"   # CPU: the interpreter (conftest)


@triton.jit
def scaled_copy(x_ptr, y_ptr, n, stride, scale, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    v = tl.load(x_ptr + o * stride, mask=o < n, other=0.0)
    tl.store(y_ptr + o, v * scale, mask=o < n)


def test_plan_key_tells_apart_what_triton_specializes_on():
    a, b = torch.zeros(64), torch.zeros(64)
    assert plan_key((a, 5), {"BLOCK": 16}) == plan_key((b, 5), {"BLOCK": 16})      # same kind
    assert plan_key((a, 5), {}) != plan_key((a[1:], 5), {})      # 4-byte offset: not 16-aligned
    assert plan_key((a, 5), {}) != plan_key((a.double(), 5), {})                    # dtype
    assert plan_key((a, 5), {}) != plan_key((a, 1), {})           # an int of 1 is a constant
    assert plan_key((a, 16), {}) != plan_key((a, 32), {})         # every int by value
    assert plan_key((a, None), {}) != plan_key((a, 0), {})
    assert plan_key((a,), {"BLOCK": 16}) != plan_key((a,), {"BLOCK": 32})           # constexprs
    assert plan_key((a,), {"num_warps": 4}) != plan_key((a,), {"num_warps": 8})     # options


def test_fast_kernel_launches_like_the_kernel():
    """Repeated calls, a new stride, a stride of 1 (a specialized constant) and a shorter n: each
    result as the equations say (on the GPU the repeats take the cached launcher)."""
    fast = FastKernel(scaled_copy)
    x = torch.arange(40, dtype=torch.float32, device=DEV)
    for stride, n in ((2, 16), (2, 16), (1, 16), (1, 7), (2, 16)):
        y = torch.full((16,), -1.0, device=DEV)
        fast[(1,)](x, y, n, stride, 0.5, BLOCK=16)
        torch.testing.assert_close(y[:n], x[::stride][:n] * 0.5)
        assert (y[n:] == -1).all()
    # three distinct specializations cached on a GPU; the interpreter returns no compiled kernel
    assert len(fast.plans) == (3 if DEV == "cuda" else 0)


class FakeJIT:
    """Stands in for a @triton.jit function on the CPU: records Triton-side launches and returns
    a fake compiled kernel that records launches through its own launcher."""

    def __init__(self, fn):
        self.fn = fn
        self.arg_names = list(__import__("inspect").signature(fn).parameters)
        self.calls = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append(("jit", grid, args, kwargs))
            return FakeCompiled(self.calls)
        return launch


class FakeCompiled:
    def __init__(self, calls):
        self.calls = calls

    def __getitem__(self, grid):
        return lambda *args: self.calls.append(("compiled", grid, args))


def kernel_sig(x_ptr, H, P, N, G, Q, BT, FLAG=False):
    pass


def test_fast_kernel_compiles_once_per_plan_then_uses_the_launcher():
    jit = FakeJIT(kernel_sig)
    fast = FastKernel(jit, enabled=True)
    x = torch.zeros(64)
    fast.run((2, 1, 1), (x, 4, 8, 16, 1), {"Q": 64, "BT": 32}, {"num_warps": 8})
    fast.run((2, 1, 1), (x, 4, 8, 16, 1), {"Q": 64, "BT": 32}, {"num_warps": 8})
    fast[(3,)](x[1:], 4, 8, 16, 1, Q=64, BT=32)                  # misaligned: a new plan
    kinds = [c[0] for c in jit.calls]
    assert kinds == ["jit", "compiled", "jit"]
    assert jit.calls[0][3] == {"Q": 64, "BT": 32, "num_warps": 8}     # options reach Triton
    # the launcher gets every parameter in order, constexprs and defaults included
    assert jit.calls[1][2][1:] == (4, 8, 16, 1, 64, 32, False) and jit.calls[2][1] == (3, 1, 1)


def test_fast_kernel_disabled_launches_through_triton_every_time():
    jit = FakeJIT(kernel_sig)
    fast = FastKernel(jit, enabled=False)
    x = torch.zeros(64)
    for _ in range(2):
        fast.run((2, 1, 1), (x, 4, 8, 16, 1), {"Q": 64, "BT": 32}, {"num_warps": 8})
    assert [c[0] for c in jit.calls] == ["jit", "jit"] and not fast.plans


def test_tuned_launches_autotune_once_per_key_then_one_plan_key():
    jit = FakeJIT(kernel_sig)
    tuned = fused._Tuned(jit, [(4, 1), (8, 2)], fast=True)
    plan = replace(GPU_PLAN, autotune=True)
    tuned_calls = []

    class FakeAutotuner:
        best_config = triton.Config({}, num_warps=8, num_stages=2)

        def __getitem__(self, grid):
            return lambda *a, **k: tuned_calls.append((a, k))
    tuned.tuned = FakeAutotuner()
    x, y = torch.zeros(64), torch.zeros(64)
    for t in (x, x, y, x[4:]):        # y: same plan as x; x[4:]: 16-byte aligned, same plan too
        tuned[plan, (1, 1, 1)](t, 4, 8, 16, 1, Q=64, BT=32)
    tuned[plan, (1, 1, 1)](x, 4, 8, 32, 1, Q=64, BT=32)            # N 32: a new autotune key
    assert len(tuned_calls) == 2                              # tuned once per autotune key
    # the first call ran in the autotuner; the second compiled with its choice; then the launcher
    assert [c[0] for c in jit.calls] == ["jit", "compiled", "compiled"]
    assert jit.calls[0][3]["num_warps"] == 8 and jit.calls[0][3]["num_stages"] == 2


def test_tuned_carries_a_register_cap_from_config_to_launch():
    """A (warps, stages, maxnreg) candidate: the first-config launch and the launch after the
    autotuner picked a capped config both compile with that cap."""
    x = torch.zeros(64)

    jit = FakeJIT(kernel_sig)
    fused._Tuned(jit, [(4, 1, 168), (8, 1)], fast=True)[replace(GPU_PLAN, autotune=False), (1, 1, 1)](
        x, 4, 8, 16, 1, Q=64, BT=32)
    assert jit.calls[0][3] == {"Q": 64, "BT": 32, "num_warps": 4, "num_stages": 1, "maxnreg": 168}

    jit = FakeJIT(kernel_sig)
    tuned = fused._Tuned(jit, [(8, 1), (4, 1, 168)], fast=True)

    class FakeAutotuner:
        best_config = triton.Config({}, num_warps=4, num_stages=1, maxnreg=168)

        def __getitem__(self, grid):
            return lambda *a, **k: None
    tuned.tuned = FakeAutotuner()
    for _ in range(2):
        tuned[replace(GPU_PLAN, autotune=True), (1, 1, 1)](x, 4, 8, 16, 1, Q=64, BT=32)
    assert [c[0] for c in jit.calls] == ["jit"]              # the autotuner ran first, then one compile
    assert jit.calls[0][3] == {"Q": 64, "BT": 32, "num_warps": 4, "num_stages": 1, "maxnreg": 168}


def test_tuned_without_autotune_launches_the_plans_config():
    """Autotuning off: config i of the kernel's candidates (its last where it has fewer), each
    config with its own cached plans; the interpreter launches one warp whatever the config."""
    x = torch.zeros(64)
    jit = FakeJIT(kernel_sig)
    tuned = fused._Tuned(jit, [(4, 1), (8, 2), (4, 1, 168)], fast=True)
    for i in (0, 1, 2, 7, 1):
        tuned[replace(GPU_PLAN, autotune=False, config=i), (1, 1, 1)](x, 4, 8, 16, 1, Q=64, BT=32)
    assert [c[0] for c in jit.calls] == ["jit", "jit", "jit", "compiled", "compiled"]
    assert [(c[3]["num_warps"], c[3]["num_stages"], c[3].get("maxnreg")) for c in jit.calls[:3]] == [
        (4, 1, None), (8, 2, None), (4, 1, 168)]
    jit.calls.clear()
    tuned[replace(GPU_PLAN, interpret=True, config=1), (1,)](x, 4, 8, 16, 1, Q=64, BT=32)
    assert jit.calls == [("jit", (1,), (x, 4, 8, 16, 1), {"num_warps": 1, "Q": 64, "BT": 32})]


class FakeLoaded(FakeCompiled):
    """A compiled kernel as Triton 3.6 loads one: its launcher ``run`` takes the grid, the stream,
    the function handle, the packed metadata, the launch metadata and the two hooks, then every
    parameter."""
    packed_metadata = ("warps", 4)
    function = 0xF00

    def __init__(self, calls):
        super().__init__(calls)
        self.run = lambda *a: calls.append(("direct", a))


def test_launch_compiled_skips_the_runner_unless_a_hook_is_installed(monkeypatch):
    from hybridlab.kernels import launch
    monkeypatch.setattr(launch, "_DRIVER", [lambda: 0, lambda device: 1000 + device])
    monkeypatch.setattr(triton.knobs.runtime, "launch_enter_hook", None)
    monkeypatch.setattr(triton.knobs.runtime, "launch_exit_hook", None)
    calls = []
    x = torch.zeros(4)
    launch.launch_compiled(FakeLoaded(calls), (2, 3, 1), (x, 7, 64))
    assert calls == [("direct", (2, 3, 1, 1000, 0xF00, ("warps", 4), None, None, None, x, 7, 64))]
    # a profiler's hook installed: Triton's own runner, which calls it
    monkeypatch.setattr(triton.knobs.runtime, "launch_enter_hook", lambda metadata: None)
    launch.launch_compiled(FakeLoaded(calls), (2, 3, 1), (x, 7, 64))
    assert calls[1] == ("compiled", (2, 3, 1), (x, 7, 64))
    # a compiled kernel of another shape (no packed metadata): the runner too
    monkeypatch.setattr(triton.knobs.runtime, "launch_enter_hook", None)
    launch.launch_compiled(FakeCompiled(calls), (1, 1, 1), (x,))
    assert calls[2] == ("compiled", (1, 1, 1), (x,))


def test_host_cdiv_and_next_pow2_match_triton():
    from hybridlab.kernels.launch import cdiv, next_pow2
    assert [next_pow2(n) for n in range(0, 70)] == [triton.next_power_of_2(n) for n in range(0, 70)]
    assert all(cdiv(a, b) == triton.cdiv(a, b) for a in range(0, 100) for b in range(1, 17))
