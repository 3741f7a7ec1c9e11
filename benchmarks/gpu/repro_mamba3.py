"""Find the Mamba-3 SISO (or SSD) shape/launch plan that makes an illegal memory access (run ON
the GPU machine): ``python3 -m benchmarks.gpu.repro_mamba3``. Each case runs in its own process
(an illegal access poisons the CUDA context). CASES / SSD_CASES pick shapes (Python lists of
dicts); PLANS / SSD_PLANS the launch-plan variants (Python lists of strings of
``OP.FIELD=VALUE`` words, benchmarks/gpu/plans.py; "" is the default plan), passed as ``plan=``,
e.g. ``PLANS='["", "mamba3.ssd_chunk=64 ssd.block_t_max=32"]'``; SANITIZE=1 runs each under
compute-sanitizer's memcheck. ``--list`` prints the runs and starts none (no GPU needed)."""
import os
import subprocess
import sys

from benchmarks.gpu.plans import parse

CASE = """
import torch, traceback
from benchmarks.gpu.plans import build, parse
from hybridlab.kernels.dispatch import implementation
mamba3 = implementation('mamba3', 'triton')
plan = build(parse({plan!r}))['mamba3']
b, L, H, P, N, S = {b}, {L}, {H}, {P}, {N}, {S}
g = torch.Generator(device='cuda').manual_seed(0)
rn = lambda *s: torch.randn(*s, device='cuda', generator=g)
x = rn(b, L, H, P).bfloat16().requires_grad_()
dt = (torch.rand(b, L, H, device='cuda') * 0.1 + 0.01).requires_grad_()
A = -torch.rand(H, device='cuda') - 0.5
trap = rn(b, L, H).requires_grad_()
B = rn(b, L, 1, N).bfloat16().requires_grad_(); C = rn(b, L, 1, N).bfloat16().requires_grad_()
ang = rn(b, L, S).requires_grad_() if S else None
y = mamba3(x, dt, A, trap, B, C, angles=ang, D=torch.ones(H, device='cuda'), z=rn(b, L, H, P).bfloat16(), chunk_size=64, plan=plan)
y.float().sum().backward()
torch.cuda.synchronize()
print('ok')
"""
SSD_CASE = """
import torch
from benchmarks.gpu.plans import build, parse
from hybridlab.kernels.ops.ssd import fused
plan = build(parse({plan!r}))['ssd']
b, L, H, P, N, G, Q = {b}, {L}, {H}, {P}, {N}, {G}, {Q}
g = torch.Generator(device='cuda').manual_seed(0)
rn = lambda *s: torch.randn(*s, device='cuda', generator=g)
x = rn(b, L, H, P).bfloat16().requires_grad_()
dt = (torch.rand(b, L, H, device='cuda', generator=g) * 0.1 + 0.01).requires_grad_()
A = -torch.rand(H, device='cuda', generator=g) - 0.5
B = rn(b, L, G, N).bfloat16().requires_grad_(); C = rn(b, L, G, N).bfloat16().requires_grad_()
y = fused.ssd(x, dt, A, B, C, Q, D=torch.ones(H, device='cuda'), z=rn(b, L, H, P).bfloat16(), plan=plan)
y.float().sum().backward()
torch.cuda.synchronize()
print('ok')
"""
if any(a in ("-h", "--help") for a in sys.argv[1:]):
    print(__doc__)
    sys.exit(0)
for gone in ("ENVS", "SSD_ENVS"):          # knob variants by environment: now launch plans
    if gone in os.environ:
        sys.exit(f"{gone} is gone: give launch-plan variants as PLANS / SSD_PLANS (see --help)")
# found 2026-11-22: N 16 at SSD chunk 128 faults in chunk_bwd_dbc, chunk 64 and N 32 pass;
# PLANS (a Python list of strings) picks the plan variants to try, CASES (of dicts) the shapes
cases = [dict(b=32, L=128, H=8, P=32, N=16, S=4), dict(b=32, L=128, H=8, P=32, N=32, S=8),
         dict(b=2, L=128, H=8, P=32, N=16, S=4), dict(b=32, L=128, H=8, P=32, N=16, S=0)]
cases = eval(os.environ["CASES"]) if "CASES" in os.environ else cases[:int(os.environ.get("NCASES", len(cases)))]
# plain SSD (Mamba-2) at N 16 with one chunk, the same kernels without the Mamba-3 wrapping
ssd_cases = [dict(b=32, L=128, H=8, P=32, N=16, G=1, Q=128), dict(b=8, L=128, H=8, P=64, N=16, G=8, Q=128),
             dict(b=8, L=256, H=8, P=64, N=16, G=2, Q=256)] if os.environ.get("SSD", "1") == "1" else []
plans = eval(os.environ.get("PLANS", '["", "mamba3.ssd_chunk=64"]'))
ssd_plans = eval(os.environ.get("SSD_PLANS", '[""]'))
for text in plans + ssd_plans:
    parse(text)                             # a field a plan lacks: an error here, before any run
ssd_cases = ssd_cases[:int(os.environ.get("NSSD", len(ssd_cases)))]
runs = [(CASE, c, p) for c in cases for p in plans] + [(SSD_CASE, c, p) for c in ssd_cases for p in ssd_plans]
if "--list" in sys.argv[1:]:
    for code, c, p in runs:
        print("ssd" if code is SSD_CASE else "mamba3", c, repr(p))
    sys.exit(0)
# SANITIZE=1: under compute-sanitizer's memcheck, which names the faulting kernel and access
wrap = ["compute-sanitizer", "--tool", "memcheck", "--print-limit", "4"] if os.environ.get("SANITIZE") == "1" else []
for code, c, plan in runs:
    r = subprocess.run(wrap + [sys.executable, "-c", code.format(plan=plan, **c)],
                       env={**os.environ, "CUDA_LAUNCH_BLOCKING": "1"},
                       capture_output=True, text=True, timeout=300 if wrap else 120)
    out = (r.stdout + r.stderr).strip().splitlines()
    if wrap:
        print("\n".join([l for l in out if l.startswith("=========")][:40]))
    tail = [l for l in out if "File" in l and "hybridlab" in l][-2:] + out[-1:]
    print("ssd" if code is SSD_CASE else "mamba3", c, repr(plan), "->", " | ".join(tail)[-400:], flush=True)
