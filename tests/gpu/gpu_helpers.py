"""Helpers shared by the GPU kernel tests: poisoned outputs, fresh seeds, relative error, a block
through both kernel backends."""
from dataclasses import replace

import torch

from hybridlab.blocks import ForwardContext
from hybridlab.kernels.ops.ssd import fused as ssd_fused


def poison():
    """Fill the caching allocator's free memory with NaN so torch.empty outputs start as NaN."""
    free = torch.cuda.mem_get_info()[0]
    buf = torch.empty(min(int(free * 0.4), 16 << 30) // 4, device="cuda").fill_(float("nan"))
    del buf


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def fresh_gen():
    """A generator on a fresh random seed (reported in failure messages) for every test run."""
    seed = torch.seed() % (2 ** 31)
    return torch.Generator(device="cuda").manual_seed(seed), seed


def block_backends_agree(m, x, ctx, monkeypatch, tol=1e-4, decode_steps=40):
    """A block's forward and every parameter gradient on the Triton kernels match the reference
    path (fp32, the block's real call pattern), and decoding the first steps on Triton matches
    the forward (decoding starts at position 0, so ``ctx`` must not reset inside those steps)."""
    outs = []
    for backend in ("triton", "reference"):
        monkeypatch.setenv("HYBRIDLAB_KERNELS", backend)
        m.zero_grad()
        y = m(x, ctx)
        y.square().mean().backward()
        outs.append((y.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}))
    (y, g), (ry, rg) = outs
    assert rel(y, ry) <= tol
    for k in rg:
        assert rel(g[k], rg[k]) <= tol, k
    monkeypatch.setenv("HYBRIDLAB_KERNELS", "triton")
    with torch.no_grad():
        state = m.init_state(x.shape[0], x.shape[1], dtype=torch.float32)
        steps = [m.step(x[:, t], state, ForwardContext(position=t))[0] for t in range(decode_steps)]
    assert rel(torch.stack(steps, 1), y[:, :decode_steps]) <= tol


def each_launch_config(plan):
    """``plan`` (an SSD plan) once per launch config of the autotuned SSD kernels, with config i
    (or each kernel's last, where it has fewer) as the one every kernel launches: so a test
    checks each config's *output* (autotuning runs every config but keeps only the chosen one's)."""
    for i in range(max(len(t.configs) for t in ssd_fused.TUNED)):
        yield replace(plan, autotune=False, config=i)
