"""Find the Mamba-3 SISO shape/knob that makes an illegal memory access (run ON the GPU machine).
Each case runs in its own process (an illegal access poisons the CUDA context)."""
import os
import subprocess
import sys

CASE = """
import torch, traceback
from hybridlab.kernels.ops.mamba3 import siso
b, L, H, P, N, S = {b}, {L}, {H}, {P}, {N}, {S}
g = torch.Generator(device='cuda').manual_seed(0)
rn = lambda *s: torch.randn(*s, device='cuda', generator=g)
x = rn(b, L, H, P).bfloat16().requires_grad_()
dt = (torch.rand(b, L, H, device='cuda') * 0.1 + 0.01).requires_grad_()
A = -torch.rand(H, device='cuda') - 0.5
trap = rn(b, L, H).requires_grad_()
B = rn(b, L, 1, N).bfloat16().requires_grad_(); C = rn(b, L, 1, N).bfloat16().requires_grad_()
ang = rn(b, L, S).requires_grad_() if S else None
y = siso.mamba3_siso(x, dt, A, trap, B, C, angles=ang, D=torch.ones(H, device='cuda'), z=rn(b, L, H, P).bfloat16(), chunk_size=64)
y.float().sum().backward()
torch.cuda.synchronize()
print('ok')
"""
# found 2026-11-22: N 16 at SSD chunk 128 faults in chunk_bwd_dbc, chunk 64 and N 32 pass;
# ENVS (a Python list of dicts) picks the knob variants to try
cases = [dict(b=32, L=128, H=8, P=32, N=16, S=4), dict(b=32, L=128, H=8, P=32, N=32, S=8),
         dict(b=2, L=128, H=8, P=32, N=16, S=4), dict(b=32, L=128, H=8, P=32, N=16, S=0)]
cases = cases[:int(os.environ.get("NCASES", len(cases)))]
envs = eval(os.environ.get("ENVS", "[{}, {'HYBRIDLAB_MAMBA3_SSD_CHUNK': '64'}]"))
for c in cases:
    for env in envs:
        r = subprocess.run([sys.executable, "-c", CASE.format(**c)], env={**os.environ, "CUDA_LAUNCH_BLOCKING": "1", **env},
                           capture_output=True, text=True, timeout=120)
        out = (r.stdout + r.stderr).strip().splitlines()
        tail = [l for l in out if "File" in l and "hybridlab" in l][-2:] + out[-1:]
        print(c, env, "->", " | ".join(tail)[-400:], flush=True)
