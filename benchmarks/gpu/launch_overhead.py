"""Host time of one kernel launch, per launch path (run ON the GPU machine):

    python3 -m benchmarks.gpu.launch_overhead

At a tiny SSD shape (the GPU finishes each kernel long before the next is issued) it times how
long the host takes to issue: the whole SSD forward / forward+backward, then chunk_scan_fwd
alone through our autotune wrapper, through Triton's JIT launch, through hybridlab's FastKernel
(its plan key, then the compiled kernel's launcher) and through the compiled kernel's own
launcher alone (no argument binding or specialisation) or called directly with no launch hooks
(launch.launch_compiled), and a torch.empty for scale. Then Mamba-3 SISO's forward+backward at a
tiny shape: the host time of its 14 launches and glue. Autotuning on and off are two launch
plans (``dataclasses.replace(DEFAULT_PLAN, autotune=...)``, passed as ``plan=``).

    python3 -m benchmarks.gpu.launch_overhead --help     # (no options; checks the imports)
"""
import dataclasses
import inspect
import sys
import time

import torch

from hybridlab.kernels.launch import FastKernel, launch_compiled
from hybridlab.kernels.ops.ssd import fused
from hybridlab.kernels.ops.ssd.plan import DEFAULT_PLAN

N_CALLS = 300


def issue_us(fn, n=N_CALLS):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return t


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    b, l, H, P, G, N, Q = 1, 256, 4, 64, 1, 64, 128
    rn = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    x = rn(b, l, H, P).bfloat16().requires_grad_()
    dt = (rn(b, l, H) * 0.5).requires_grad_()
    A = -torch.rand(H, device="cuda", generator=g)
    B, C = rn(b, l, G, N).bfloat16().requires_grad_(), rn(b, l, G, N).bfloat16().requires_grad_()
    plans = {tuned: dataclasses.replace(DEFAULT_PLAN, autotune=tuned) for tuned in (True, False)}
    for tuned, plan in plans.items():
        fwd = issue_us(lambda: fused.ssd(x.detach(), dt.detach(), A, B.detach(), C.detach(), Q, plan=plan))
        out = fused.ssd(x, dt, A, B, C, Q, plan=plan)
        dout = torch.randn_like(out)

        def fb():
            o = fused.ssd(x, dt, A, B, C, Q, plan=plan)
            o.backward(dout)
        both = issue_us(fb, 100)
        print(f"autotune {tuned}: SSD forward issue {fwd:.0f} us, forward+backward {both:.0f} us")
        if not tuned:          # where the host time of forward+backward goes (Python functions)
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(50):
                fb()
            prof.disable()
            torch.cuda.synchronize()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)

    # one kernel, three launch paths; record chunk_scan_fwd's launch from a forward
    seen = {}
    real = fused._chunk_scan_fwd

    class Rec:
        def __getitem__(self, plan_grid):
            def go(*a, **k):
                seen.update(grid=plan_grid[1], args=a, kwargs=k)
                return real[plan_grid](*a, **k)
            return go
    fused._chunk_scan_fwd = Rec()
    try:
        fused.ssd(x.detach(), dt.detach(), A, B.detach(), C.detach(), Q, plan=plans[True])
    finally:
        fused._chunk_scan_fwd = real
    grid, args, kwargs = seen["grid"], seen["args"], seen["kwargs"]
    t_tuned = issue_us(lambda: real[plans[True], grid](*args, **kwargs))
    jit = real.kernel
    cfg = dict(real.configs[0])                  # the config a plan without autotuning launches
    t_jit = issue_us(lambda: jit[grid](*args, **kwargs, **cfg))
    compiled = jit[grid](*args, **kwargs, **cfg)
    bound = inspect.signature(jit.fn).bind(*args, **kwargs)
    allargs = list(bound.arguments.values())
    runner = compiled[grid]
    t_comp = issue_us(lambda: runner(*allargs))
    t_empty = issue_us(lambda: torch.empty(b, H, 256, device="cuda"))
    fast = FastKernel(jit)
    t_fast = issue_us(lambda: fast[grid](*args, **kwargs, **cfg))
    t_direct = issue_us(lambda: launch_compiled(compiled, grid, allargs))
    print(f"chunk_scan_fwd ({len(allargs)} args) per launch: autotune wrapper {t_tuned:.0f} us, "
          f"Triton JIT {t_jit:.0f} us, FastKernel {t_fast:.0f} us, compiled launcher {t_comp:.0f} us, "
          f"direct {t_direct:.0f} us; torch.empty {t_empty:.1f} us")
    mamba3_issue()


def mamba3_issue():
    """Host time of a tiny Mamba-3 SISO forward+backward (b1 l256 h4 p64 n64, 16 rotated pairs)."""
    from hybridlab.kernels import dispatch
    g = torch.Generator(device="cuda").manual_seed(0)
    b, l, H, P, N = 1, 256, 4, 64, 64
    rn = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    x = rn(b, l, H, P).bfloat16().requires_grad_()
    dt = (torch.rand(b, l, H, device="cuda", generator=g) * 0.1 + 0.01).requires_grad_()
    A = (-torch.rand(H, device="cuda", generator=g) - 0.5).requires_grad_()
    trap = rn(b, l, H).requires_grad_()
    B, C = (rn(b, l, 1, N).bfloat16().requires_grad_() for _ in range(2))
    angles = rn(b, l, N // 4).requires_grad_()
    fn = dispatch.implementation("mamba3", "triton")
    dout = torch.randn_like(x)

    def fb():
        fn(x, dt, A, trap, B, C, angles=angles).backward(dout)
    print(f"Mamba-3 SISO tiny forward+backward issue {issue_us(fb, 100):.0f} us")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(__doc__)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    main()
