"""Side-by-side kernel benchmark: ours (fused Triton), the torch reference, and the peer (mamba-ssm).

For every (op, shape) case, in one process, on identical fresh random inputs:
1. checks ours against the peer and the reference (relative error of the output and of every
   input gradient; outputs land in allocator memory poisoned with NaN, so an unwritten element shows);
2. times forward (no grad) and forward+backward of each implementation: median of
   ``triton.testing.do_bench`` (which flushes L2 between runs), compile/autotune runs excluded;
   slow ones (the reference at large shapes) get a few timed runs within a budget, and are
   skipped with the reason when they run out of memory;
3. compares with the peer's time in shared/reference/gpu-baselines.md (the target) and with the
   forward's memory floor: bytes of every input read once and every output written once, over the
   device-copy bandwidth measured at the start of the run.

The CLI is ``hybridlab bench kernels`` (hybridlab/cli/bench.py); ``docs/benchmarking.md`` says how
to run it on the GPU machine.
"""
from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from hybridlab.kernels.dispatch import OPS, implementation

IMPLS = ("ours", "ref", "peer")
_BACKEND = {"ours": "triton", "ref": "reference"}
_MODULE = {"ours": "fused.py", "ref": "reference.py"}
GROUPS = ("table", "model", "small", "tiny")       # "all" = every group but tiny (a CPU-test size)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ----------------------------------------------------------------------------- shapes and targets

@dataclass(frozen=True)
class Shape:
    op: str
    name: str
    group: str                                   # one of GROUPS
    dims: dict
    table: tuple | None = None                   # the peer's (fwd ms, fwd+bwd ms, floor ms) in gpu-baselines.md


def _s(op, name, group, table=None, **dims) -> Shape:
    return Shape(op, name, group, dims, table)


# The table rows are gpu-baselines.md's (H100, 2026-11-22); d_model 1024, expand 2 -> d_inner 2048.
SHAPES = [
    _s("selective_scan", "b4-l4096-d2048-n16", "table", (0.608, 3.139, 0.090), b=4, l=4096, d=2048, n=16),
    _s("selective_scan", "b1-l32768-d2048-n16", "table", (1.507, 6.938, 0.180), b=1, l=32768, d=2048, n=16),
    _s("selective_scan", "b4-l4096-d2048-n64", "table", (2.032, 11.652, 0.091), b=4, l=4096, d=2048, n=64),
    _s("selective_scan", "b2-l1024-d512-n16", "small", b=2, l=1024, d=512, n=16),
    _s("selective_scan", "tiny", "tiny", b=1, l=24, d=4, n=4),
    _s("ssd", "b4-l4096-h32-p64-n128", "table", (0.383, 2.852, 0.048), b=4, l=4096, h=32, p=64, n=128, g=1, chunk=256),
    _s("ssd", "b1-l32768-h32-p64-n128", "table", (0.691, 3.014, 0.096), b=1, l=32768, h=32, p=64, n=128, g=1, chunk=256),
    _s("ssd", "b16-l2048-h32-p64-n64", "table", (0.476, 2.865, 0.093), b=16, l=2048, h=32, p=64, n=64, g=1, chunk=256),
    _s("ssd", "b2-l1024-h8-p64-n64", "small", b=2, l=1024, h=8, p=64, n=64, g=1, chunk=256),
    _s("ssd", "tiny", "tiny", b=1, l=20, h=2, p=4, n=4, g=1, chunk=8),
    # Mamba-3 SISO: rope on N/2, i.e. S = n/4 rotated pairs; D and z; chunk 64
    _s("mamba3", "b4-l4096-h32-p64-n128", "table", (0.995, 2.604, 0.070), b=4, l=4096, h=32, p=64, n=128, g=1, S=32, chunk=64),
    _s("mamba3", "b1-l32768-h32-p64-n128", "table", (6.287, 13.947, 0.141), b=1, l=32768, h=32, p=64, n=128, g=1, S=32, chunk=64),
    _s("mamba3", "b2-l1024-h8-p64-n128", "small", b=2, l=1024, h=8, p=64, n=128, g=1, S=32, chunk=64),
    _s("mamba3", "tiny", "tiny", b=1, l=40, h=2, p=8, n=16, g=1, S=4, chunk=16),
    # Mamba-2's conv runs over x, B, C: 2048 + 2*128 channels
    _s("causal_conv1d", "b4-l4096-d2304-w4", "model", b=4, l=4096, d=2304, w=4),
    _s("causal_conv1d", "b2-l1024-d512-w4", "small", b=2, l=1024, d=512, w=4),
    _s("causal_conv1d", "tiny", "tiny", b=1, l=24, d=4, w=4),
    _s("rmsnorm_gated", "b4-l4096-d2048", "model", b=4, l=4096, d=2048, gs=2048),
    _s("rmsnorm_gated", "b2-l1024-d512-g128", "small", b=2, l=1024, d=512, gs=128),
    _s("rmsnorm_gated", "tiny", "tiny", b=2, l=8, d=16, gs=8),
    _s("selective_state_update", "b64-d2048-n16", "model", b=64, d=2048, n=16),
    _s("selective_state_update", "tiny", "tiny", b=2, d=4, n=4),
    _s("ssd_state_update", "b64-h32-p64-n128", "model", b=64, h=32, p=64, n=128, g=1),
    _s("ssd_state_update", "tiny", "tiny", b=2, h=2, p=4, n=4, g=1),
    _s("mamba3_state_update", "b64-h32-p64-n128", "model", b=64, h=32, p=64, n=128, g=1, S=32),
    _s("mamba3_state_update", "tiny", "tiny", b=2, h=2, p=4, n=8, g=1, S=2),
]


def select_shapes(ops, wanted) -> list[Shape]:
    """Cases for ``ops`` whose name or group is in ``wanted`` ("all" = every group but tiny),
    table rows first so the numbers that matter come out before a time limit."""
    wanted = set(wanted or ["all"])
    if "all" in wanted:
        wanted |= {"table", "model", "small"}
    picked = [s for s in SHAPES if s.op in ops and (s.name in wanted or s.group in wanted)]
    known = {s.name for s in SHAPES} | set(GROUPS) | {"all"}
    unknown = wanted - known
    if unknown:
        raise ValueError(f"unknown shape(s) {sorted(unknown)}; known: {sorted(known)}")
    return sorted(picked, key=lambda s: (GROUPS.index(s.group), list(ops).index(s.op)))


# ----------------------------------------------------------------------------- inputs per op

class _Draw:
    """Fresh random inputs from one seeded generator on the target device (never zeros)."""

    def __init__(self, device, dtype, seed):
        self.device, self.dtype = device, dtype
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def normal(self, shape, dtype=None, scale=1.0, mean=0.0):
        t = torch.randn(shape, generator=self.gen, device=self.device, dtype=torch.float32)
        return (t * scale + mean).to(dtype or self.dtype)

    def uniform(self, shape, lo, hi):
        return torch.rand(shape, generator=self.gen, device=self.device, dtype=torch.float32) * (hi - lo) + lo

    def dt_bias(self, shape):
        # softplus^-1 of a step size log-uniform in [0.01, 0.1], as Mamba initialises it
        dt = torch.exp(self.uniform(shape, math.log(0.01), math.log(0.1)))
        return dt + torch.log(-torch.expm1(-dt))


def _rms_normalised(t):
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5)


def _mamba1_A(r, d, n):
    # S4D-real init A = -(1..n) per channel, jittered so no two entries are equal
    base = torch.arange(1, n + 1, device=r.device, dtype=torch.float32).expand(d, n)
    return -(base * r.uniform((d, n), 0.9, 1.1))


def _make_selective_scan(d, r):
    b, l, dd, n = d["b"], d["l"], d["d"], d["n"]
    return dict(u=r.normal((b, dd, l)), delta=r.normal((b, dd, l), scale=0.1), A=_mamba1_A(r, dd, n),
                B=r.normal((b, n, l)), C=r.normal((b, n, l)), D=r.normal((dd,), torch.float32, 0.1, 1.0),
                z=r.normal((b, dd, l)), delta_bias=r.dt_bias((dd,)), delta_softplus=True)


def _make_ssd(d, r):
    b, l, h, p, n, g = d["b"], d["l"], d["h"], d["p"], d["n"], d["g"]
    # no z: the gpu-baselines.md rows time the scan without the gate
    return dict(x=r.normal((b, l, h, p)), dt=r.normal((b, l, h), scale=0.1),
                A=-torch.exp(r.uniform((h,), 0.0, math.log(16.0))), B=r.normal((b, l, g, n)),
                C=r.normal((b, l, g, n)), chunk_size=d["chunk"], D=r.normal((h,), torch.float32, 0.1, 1.0),
                dt_bias=r.dt_bias((h,)), dt_softplus=True)


def _make_mamba3(d, r):
    b, l, h, p, n, g, S = d["b"], d["l"], d["h"], d["p"], d["n"], d["g"], d["S"]
    f32 = torch.float32
    # what the Mamba-3 block hands the op: dt after softplus+bias, A after -softplus and its floor,
    # B and C after their RMSNorm; trap and angles raw
    dt = F.softplus(r.normal((b, l, h), f32, 0.1) + r.dt_bias((h,)))
    A = (-F.softplus(r.normal((b, l, h), f32))).clamp(max=-1e-4)
    return dict(x=r.normal((b, l, h, p)), dt=dt, A=A, trap=r.normal((b, l, h)),
                B=_rms_normalised(r.normal((b, l, g, n), f32)).to(r.dtype),
                C=_rms_normalised(r.normal((b, l, g, n), f32)).to(r.dtype),
                angles=r.normal((b, l, S)), B_bias=r.normal((h, n), f32, 0.1, 1.0),
                C_bias=r.normal((h, n), f32, 0.1, 1.0), D=r.normal((h,), f32, 0.1, 1.0),
                z=r.normal((b, l, h, p)), chunk_size=d["chunk"])


def _make_causal_conv1d(d, r):
    b, l, dd, w = d["b"], d["l"], d["d"], d["w"]
    return dict(x=r.normal((b, dd, l)), weight=r.normal((dd, w), scale=w ** -0.5), bias=r.normal((dd,), scale=0.1),
                activation="silu")


def _make_rmsnorm_gated(d, r):
    b, l, dd = d["b"], d["l"], d["d"]
    return dict(x=r.normal((b, l, dd)), weight=r.normal((dd,), scale=0.1, mean=1.0), z=r.normal((b, l, dd)),
                eps=1e-5, group_size=d["gs"], norm_before_gate=False)


def _make_selective_state_update(d, r):
    b, dd, n = d["b"], d["d"], d["n"]
    return dict(state=r.normal((b, dd, n), torch.float32, 0.1), x=r.normal((b, dd)), dt=r.normal((b, dd), scale=0.1),
                A=_mamba1_A(r, dd, n), B=r.normal((b, n)), C=r.normal((b, n)),
                D=r.normal((dd,), torch.float32, 0.1, 1.0), z=r.normal((b, dd)), dt_bias=r.dt_bias((dd,)),
                dt_softplus=True)


def _make_ssd_state_update(d, r):
    b, h, p, n, g = d["b"], d["h"], d["p"], d["n"], d["g"]
    return dict(state=r.normal((b, h, p, n), torch.float32, 0.1), x=r.normal((b, h, p)), dt=r.normal((b, h), scale=0.1),
                A=-torch.exp(r.uniform((h,), 0.0, math.log(16.0))), B=r.normal((b, g, n)), C=r.normal((b, g, n)),
                D=r.normal((h,), torch.float32, 0.1, 1.0), z=r.normal((b, h, p)), dt_bias=r.dt_bias((h,)),
                dt_softplus=True)


def _make_mamba3_state_update(d, r):
    b, h, p, n, g, S = d["b"], d["h"], d["p"], d["n"], d["g"], d["S"]
    f32 = torch.float32
    state = (r.uniform((b, h, S), 0.0, 2 * math.pi), r.normal((b, h, p, n), f32, 0.1),
             r.normal((b, h, n), f32), r.normal((b, h, p), f32))
    return dict(state=state, x=r.normal((b, h, p)), dt=F.softplus(r.normal((b, h), f32, 0.1) + r.dt_bias((h,))),
                A=(-F.softplus(r.normal((b, h), f32))).clamp(max=-1e-4), trap=r.normal((b, h)),
                B=_rms_normalised(r.normal((b, g, n), f32)).to(r.dtype),
                C=_rms_normalised(r.normal((b, g, n), f32)).to(r.dtype), angles=r.normal((b, S)),
                B_bias=r.normal((h, n), f32, 0.1, 1.0), C_bias=r.normal((h, n), f32, 0.1, 1.0),
                D=r.normal((h,), f32, 0.1, 1.0), z=r.normal((b, h, p)))


# ---- the peer's argument layouts (conversions happen once, outside the timed region)

def _same(kw):
    return dict(kw)


def _mamba3_to_peer(kw):
    # mamba3_siso_combined(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z, chunk_size):
    # q = C, k = B, v = x; ADT = A*dt and DT, Trap as (b, h, l); angles per head (b, l, h, S)
    b, l, h, _ = kw["x"].shape
    S = kw["angles"].shape[-1]
    dt, A = kw["dt"].float(), kw["A"].float()
    return dict(Q=kw["C"], K=kw["B"], V=kw["x"], ADT=(A * dt).transpose(1, 2).contiguous(),
                DT=dt.transpose(1, 2).contiguous(), Trap=kw["trap"].transpose(1, 2).contiguous(),
                Q_bias=kw["C_bias"], K_bias=kw["B_bias"],
                Angles=kw["angles"][:, :, None].expand(b, l, h, S).contiguous(), D=kw["D"], Z=kw["z"],
                chunk_size=kw["chunk_size"])


def _mamba3_grads_from_peer(g, kw):
    out = {"x": g.get("V"), "B": g.get("K"), "C": g.get("Q"), "z": g.get("Z"), "D": g.get("D"),
           "B_bias": g.get("K_bias"), "C_bias": g.get("Q_bias")}
    if g.get("Trap") is not None:
        out["trap"] = g["Trap"].transpose(1, 2)
    if g.get("Angles") is not None:
        out["angles"] = g["Angles"].float().sum(2)
    if g.get("DT") is not None and g.get("ADT") is not None:      # ADT = A * dt (chain rule)
        gdt, gadt = g["DT"].transpose(1, 2), g["ADT"].transpose(1, 2)
        out["dt"] = gdt + gadt * kw["A"].float()
        out["A"] = gadt * kw["dt"].float()
    return {k: v for k, v in out.items() if v is not None}


def _rmsnorm_to_peer(kw):
    # rmsnorm_fn(x, weight, bias, z, eps, group_size, norm_before_gate)
    return dict(kw, bias=None)


def _ssd_state_update_to_peer(kw):
    # the peer's selective_state_update takes per-(head, channel) dt, A, D, dt_bias: expanded views
    # (stride 0), as mamba-ssm's Mamba2.step passes them
    b, h, p, n = kw["state"].shape
    return dict(kw, dt=kw["dt"][..., None].expand(b, h, p), A=kw["A"][:, None, None].expand(h, p, n),
                D=kw["D"][:, None].expand(h, p), dt_bias=kw["dt_bias"][:, None].expand(h, p))


@dataclass(frozen=True)
class OpSpec:
    make: Callable                      # (dims, _Draw) -> our keyword arguments
    grads: tuple = ()                   # inputs differentiated in fwd+bwd (empty: forward only)
    to_peer: Callable | None = _same    # our kwargs -> the peer's (layout only)
    grads_from_peer: Callable | None = None   # (peer grads by name, our kwargs) -> grads by our names
    inplace: tuple = ()                 # inputs the op updates in place (decode state)


SPECS = {
    "selective_scan": OpSpec(_make_selective_scan, ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
    "ssd": OpSpec(_make_ssd, ("x", "dt", "A", "B", "C", "D", "dt_bias")),
    "mamba3": OpSpec(_make_mamba3, ("x", "dt", "A", "trap", "B", "C", "angles", "B_bias", "C_bias", "D", "z"),
                     _mamba3_to_peer, _mamba3_grads_from_peer),
    "causal_conv1d": OpSpec(_make_causal_conv1d, ("x", "weight", "bias"), None),
    "rmsnorm_gated": OpSpec(_make_rmsnorm_gated, ("x", "weight", "z"), _rmsnorm_to_peer),
    "selective_state_update": OpSpec(_make_selective_state_update, (), _same, None, ("state",)),
    "ssd_state_update": OpSpec(_make_ssd_state_update, (), _ssd_state_update_to_peer, None, ("state",)),
    "mamba3_state_update": OpSpec(_make_mamba3_state_update, (), None, None, ("state",)),
}
DEFAULT_OPS = tuple(SPECS)


# ----------------------------------------------------------------------------- bytes and errors

def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def stored_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel must touch to read ``t`` once: a broadcast (stride-0) axis is stored once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


def floor_bytes(kwargs: dict, output, inplace=()) -> int:
    """Fewest bytes a forward must move: every input read once, every output written once
    (an input updated in place is also written once)."""
    read = sum(stored_bytes(t) for t in _tensors(kwargs))
    written = sum(stored_bytes(t) for t in _tensors(output))
    written += sum(stored_bytes(t) for name in inplace for t in _tensors(kwargs.get(name)))
    return read + written


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (float64 norms); inf for a shape mismatch, nan if either has a NaN."""
    if a.shape != b.shape:
        return math.inf
    diff = a.float() - b.float()
    num = torch.linalg.vector_norm(diff, dtype=torch.float64).item()
    den = torch.linalg.vector_norm(b.float(), dtype=torch.float64).item()
    return num / den if den > 0 else num


def worst(values) -> float:
    """The largest error, NaN counting as the worst (Python's max may skip a NaN)."""
    values = list(values)
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(values, default=0.0)


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


# ----------------------------------------------------------------------------- timing

@dataclass
class Settings:
    warmup_ms: float = 100.0            # do_bench warm-up, after the compile/autotune runs
    rep_ms: float = 500.0               # do_bench measuring time
    slow_ms: float = 30.0               # a run longer than this gets a few timed runs instead
    slow_budget_s: float = 5.0          # ... within this budget (at least 3 runs, one if a run is longer)
    out_tol: float = 2e-2               # ours vs peer/ref, relative error of the output (bf16)
    grad_tol: float = 5e-2              # ... of each input gradient
    peer_slack: float = 2.0             # vs the peer both sides carry bf16 error (its Mamba-3 keeps
                                        # rotated q/k in bf16: ~1e-2 from our fp32 reference)
    check: bool = True
    max_seconds: float | None = None    # start no new case after this many seconds
    seed: int = 0

    @classmethod
    def quick(cls, **kw):
        return cls(**{"warmup_ms": 25.0, "rep_ms": 100.0, "slow_budget_s": 1.5, **kw})


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_L2_FLUSH = {}


def _flush_l2(device):
    # as do_bench does between runs, so a slow path also reads its inputs from memory
    if device.type == "cuda":
        buf = _L2_FLUSH.get(device)
        if buf is None:
            buf = _L2_FLUSH[device] = torch.empty(256 << 20, dtype=torch.int8, device=device)
        buf.zero_()


def measure(call: Callable, device, settings: Settings, reset=(), no_compile=False) -> dict:
    """Median ms of ``call``: two untimed runs first (compile, autotune, allocations), then
    do_bench on CUDA, or a few timed runs when one run is slow (or on the CPU).
    ``no_compile`` (torch code, already run once by the check): a first run longer than the
    whole slow budget is itself the measurement."""
    def clear():
        for t in reset:
            t.grad = None

    clear()
    t0 = time.perf_counter()
    call()
    _sync(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    if no_compile and first_ms > settings.slow_budget_s * 1e3:
        return {"ms": first_ms, "reps": 1, "method": "one run (too slow for more)"}
    clear()
    t0 = time.perf_counter()
    call()
    _sync(device)
    est_ms = (time.perf_counter() - t0) * 1e3
    if device.type == "cuda" and est_ms <= settings.slow_ms:
        from triton.testing import do_bench
        ms = do_bench(call, warmup=settings.warmup_ms, rep=settings.rep_ms, grad_to_none=list(reset) or None,
                      return_mode="median")
        return {"ms": float(ms), "reps": max(1, int(settings.rep_ms / max(ms, 1e-3))), "method": "do_bench"}
    n = int(settings.slow_budget_s * 1e3 / max(est_ms, 1e-3))
    n = 1 if est_ms > settings.slow_budget_s * 1e3 else max(3, min(n, 50))
    times = []
    for _ in range(n):
        clear()
        _flush_l2(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": float(statistics.median(times)), "reps": n,
            "method": "cuda events" if device.type == "cuda" else "host clock"}


def measure_ceilings(device, quick=False) -> dict:
    """Device copy bandwidth (bytes read + written) and, on CUDA, a bf16 matmul rate."""
    s = Settings.quick() if quick else Settings()
    if device.type == "cuda":
        nbytes = 1 << 30
        src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=device)
    else:
        nbytes = 16 << 20
        src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), device, s)
    out = {"copy_bytes": 2 * nbytes, "copy_ms": t["ms"], "copy_TBps": 2 * nbytes / (t["ms"] * 1e-3) / 1e12}
    src = dst = None                     # free the 2 GiB before the matmul
    if device.type == "cuda":
        m = 8192
        a = torch.randn(m, m, device=device, dtype=torch.bfloat16)
        b = torch.randn(m, m, device=device, dtype=torch.bfloat16)
        t = measure(lambda: a @ b, device, s)
        out.update(matmul_shape=[m, m, m], matmul_ms=t["ms"], matmul_TFLOPs=2 * m ** 3 / (t["ms"] * 1e-3) / 1e12)
        a = b = None
    _free(device)
    return out


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _poison(device, nbytes):
    # fill free allocator memory with 0xFF (NaN in every float type) so an output element the
    # kernel forgets to write stays NaN; the next allocations reuse these cached blocks
    if device.type == "cuda":
        t = torch.empty(int(min(max(nbytes, 64 << 20), 4 << 30)), dtype=torch.uint8, device=device)
        t.fill_(255)
        del t


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


# ----------------------------------------------------------------------------- implementations

def resolve(op: str, impls, peer=None, device=None) -> tuple[dict, dict]:
    """(functions, reasons): for each impl either its function or why it is unavailable."""
    fns, why = {}, {}
    for impl in impls:
        if impl == "peer":
            if SPECS[op].to_peer is None:
                why[impl] = peer.reason(op) if peer is not None else "no peer for this op"
            elif peer is None:
                why[impl] = "peer not loaded (--no-peer)"
            elif peer.get(op) is None:
                why[impl] = peer.reason(op)
            else:
                fns[impl] = peer.get(op)
            continue
        try:
            fn = implementation(op, _BACKEND[impl])
            if impl == "ours" and device is not None and device.type != "cuda" \
                    and os.environ.get("TRITON_INTERPRET") != "1":
                why[impl] = "fused Triton kernels need CUDA (or TRITON_INTERPRET=1 on the CPU)"
            else:
                fns[impl] = fn
        except ModuleNotFoundError as e:
            mod = f"hybridlab.kernels.{OPS[op]}.{_MODULE[impl][:-3]}"
            folder = OPS[op].replace(".", "/")
            why[impl] = (f"missing: no hybridlab/kernels/{folder}/{_MODULE[impl]}" if e.name == mod
                         else f"import failed: {_short(e)}")
        except Exception as e:
            why[impl] = f"import failed: {_short(e)}"
    return fns, why


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    return value


def _args_for(impl, kw, spec):
    """Each implementation gets its own copy of in-place inputs, the peer its own layout."""
    kw = {k: (_clone(v) if k in spec.inplace else v) for k, v in kw.items()}
    return spec.to_peer(kw) if impl == "peer" else kw


def _grad_names(impl, args, spec):
    if not spec.grads:
        return []
    if impl == "peer":                   # every floating tensor the peer takes
        return [k for k, v in args.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return [k for k in spec.grads if isinstance(args.get(k), torch.Tensor)]


def _with_leaves(args, names):
    leaves = {k: args[k].detach().clone().requires_grad_(True) for k in names}
    return {**args, **leaves}, leaves


# ----------------------------------------------------------------------------- one case

def _check(shape, spec, fns, kw, dout, device, settings, skip):
    """Outputs and gradients of every available impl on the same inputs; errors vs ours."""
    outs, grads, nonfinite = {}, {}, {}
    nbytes = sum(stored_bytes(t) for t in _tensors(kw))
    for impl, fn in fns.items():
        try:
            args = _args_for(impl, kw, spec)
            _poison(device, 2 * nbytes)
            with torch.no_grad():
                out = _first(fn(**args))
            state = [t for name in spec.inplace for t in _tensors(args[name])]
            outs[impl] = [out] + state
            nonfinite[impl] = any(not bool(torch.isfinite(t).all()) for t in outs[impl])
        except Exception as e:
            why = ("out of memory: " if _is_oom(e) else "error: ") + _short(e)
            skip[impl] = {"fwd": why, "fwdbwd": "not run: the forward failed (" + why + ")"}
            _free(device)
            continue
        if not spec.grads:
            continue
        try:
            names = _grad_names(impl, args, spec)
            args, leaves = _with_leaves(args, names)
            _poison(device, 2 * nbytes)
            _first(fn(**args)).backward(dout)
            g = {k: t.grad for k, t in leaves.items() if t.grad is not None}
            grads[impl] = spec.grads_from_peer(g, kw) if impl == "peer" and spec.grads_from_peer else g
            nonfinite[impl] = nonfinite[impl] or any(not bool(torch.isfinite(t).all()) for t in grads[impl].values())
        except Exception as e:
            skip.setdefault(impl, {})["fwdbwd"] = ("out of memory: " if _is_oom(e) else "error: ") + _short(e)
        del args
        _free(device)

    checks = {}
    if "ours" in outs:
        for other in ("peer", "ref"):
            if other not in outs:
                continue
            c = {"out": rel_err(outs["ours"][0], outs[other][0])}
            if spec.inplace:
                c["state"] = worst(rel_err(a, b) for a, b in zip(outs["ours"][1:], outs[other][1:]))
            if "ours" in grads and other in grads:
                common = sorted(set(grads["ours"]) & set(grads[other]))
                c["grads"] = {k: rel_err(grads["ours"][k], grads[other][k]) for k in common}
            worst_out = worst([c["out"], c.get("state", 0.0)])
            worst_grad = worst(c.get("grads", {}).values())
            slack = settings.peer_slack if other == "peer" else 1.0
            c["ok"] = bool(not nonfinite.get("ours") and not nonfinite.get(other)
                           and worst_out <= settings.out_tol * slack and worst_grad <= settings.grad_tol * slack)
            checks[f"ours_vs_{other}"] = c
    out_bytes = floor_bytes(kw, outs[next(iter(outs))][0], spec.inplace) if outs else None
    return checks, nonfinite, out_bytes


def run_case(shape: Shape, fns: dict, device, dtype, settings: Settings, bandwidth) -> dict:
    spec = SPECS[shape.op]
    draw = _Draw(device, dtype, settings.seed + zlib.crc32(f"{shape.op}/{shape.name}".encode()) % 100_003)
    kw = spec.make(shape.dims, draw)
    dout = draw.normal(_output_shape(shape.op, kw)) if spec.grads else None   # upstream gradient
    skip: dict[str, dict] = {}
    result = {"op": shape.op, "shape": shape.name, "group": shape.group, "dims": dict(shape.dims),
              "dtype": str(dtype).replace("torch.", ""), "impls": {}, "check": {}}
    nonfinite, out_b = {}, None
    if settings.check and fns:
        result["check"], nonfinite, out_b = _check(shape, spec, fns, kw, dout, device, settings, skip)
    if out_b is None:                    # no check ran: one forward just to size the output
        fn = fns.get("ours") or fns.get("ref") or fns.get("peer")
        if fn is not None:
            impl = next(k for k, v in fns.items() if v is fn)
            try:
                with torch.no_grad():
                    out_b = floor_bytes(kw, _first(fn(**_args_for(impl, kw, spec))), spec.inplace)
            except Exception:
                out_b = None
    result["floor_bytes"] = out_b
    result["floor_ms"] = out_b / (bandwidth * 1e12) * 1e3 if out_b and bandwidth else None

    for impl, fn in fns.items():
        r = result["impls"][impl] = {"nonfinite": nonfinite.get(impl, False)}
        for mode in ("fwd", "fwdbwd"):
            if mode == "fwdbwd" and not spec.grads:
                continue
            if mode in skip.get(impl, {}):
                r[f"{mode}_skipped"] = skip[impl][mode]
                continue
            try:
                args = _args_for(impl, kw, spec)
                if mode == "fwd":
                    def call(fn=fn, args=args):
                        with torch.no_grad():
                            return fn(**args)
                    t = measure(call, device, settings, no_compile=impl == "ref")
                else:
                    args, leaves = _with_leaves(args, _grad_names(impl, args, spec))

                    def call(fn=fn, args=args):
                        _first(fn(**args)).backward(dout)
                    t = measure(call, device, settings, reset=list(leaves.values()), no_compile=impl == "ref")
                r[f"{mode}_ms"], r[f"{mode}_reps"], r[f"{mode}_method"] = t["ms"], t["reps"], t["method"]
            except Exception as e:
                r[f"{mode}_skipped"] = ("out of memory: " if _is_oom(e) else "error: ") + _short(e)
            finally:
                args = leaves = call = None      # the closure holds the inputs and gradients
                _free(device)
    _summarise(result, shape)
    return result


def _output_shape(op, kw):
    """Shape of the primary output (the upstream gradient's shape)."""
    if op in ("selective_scan", "causal_conv1d"):
        return tuple(kw["u" if op == "selective_scan" else "x"].shape)
    return tuple(kw["x"].shape)


def _summarise(result, shape):
    imp = result["impls"]

    def ms(impl, mode):
        return imp.get(impl, {}).get(f"{mode}_ms")

    ratios = {}
    for other in ("peer", "ref"):
        ratios[f"ours_over_{other}"] = {m: (ms("ours", m) / ms(other, m) if ms("ours", m) and ms(other, m) else None)
                                        for m in ("fwd", "fwdbwd")}
    result["ratios"] = ratios
    result["ours_over_floor"] = (ms("ours", "fwd") / result["floor_ms"]
                                 if ms("ours", "fwd") and result.get("floor_ms") else None)
    table = shape.table
    result["target"] = ({"fwd_ms": table[0], "fwdbwd_ms": table[1], "floor_ms": table[2],
                         "source": "shared/reference/gpu-baselines.md"} if table else None)
    # Ours is wrong when it is not finite or disagrees with the reference. A disagreement with the
    # peer alone says that one of the two is off, not which ("disagree"; the peer's Mamba-3 angle
    # gradient is 0.19 off a float64 reference at b1 l32768, ours 0.04: scripts/gpu/vs_float64.py).
    vs_ref, vs_peer = result["check"].get("ours_vs_ref"), result["check"].get("ours_vs_peer")
    ours_ok = not imp.get("ours", {}).get("nonfinite") and (vs_ref is None or vs_ref["ok"])
    settled = vs_ref is not None or vs_peer is None or vs_peer["ok"]
    verdict = {}
    for i, mode in enumerate(("fwd", "fwdbwd")):
        ours = ms("ours", mode)
        goals = [g for g in ((table[i] if table else None), ms("peer", mode)) if g is not None]
        if ours is None or not goals:
            verdict[mode] = "-"
        elif not ours_ok:
            verdict[mode] = "wrong"
        elif not settled:
            verdict[mode] = "disagree"
        else:
            verdict[mode] = "pass" if ours < min(goals) else "miss"
    result["correct"] = None if not result["check"] or (ours_ok and not settled) else ours_ok
    result["verdict"] = verdict


# ----------------------------------------------------------------------------- the whole run

def environment(device) -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "cuda": torch.version.cuda, "host": platform.node()}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, sm=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    gpu_memory_GiB=round(p.total_memory / 2 ** 30, 1))
    else:
        info["gpu"] = None
    info["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET")
    return info


def run(ops=DEFAULT_OPS, shapes=("all",), impls=IMPLS, dtype=torch.bfloat16, device=None,
        settings: Settings | None = None, use_peer=True, command=None, quick=False,
        on_result: Callable | None = None, on_start: Callable | None = None) -> dict:
    """Benchmark ``ops`` at ``shapes``; calls ``on_start(shape, impls)`` before each case (the
    implementations that will run) and ``on_result(report)`` after it (so a caller can save
    partial results); returns the report (see docs/benchmarking.md for its keys)."""
    settings = settings or (Settings.quick() if quick else Settings())
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    unknown = [op for op in ops if op not in SPECS]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; known: {list(SPECS)}")
    cases = select_shapes(ops, shapes)
    peer = None
    if use_peer and "peer" in impls:
        from hybridlab.kernels.peer import load_peer
        peer = load_peer(ops=ops)
    report = {"meta": {**environment(device), "command": command or " ".join(sys.argv),
                       "dtype": str(dtype).replace("torch.", ""), "impls": list(impls), "ops": list(ops),
                       "settings": settings.__dict__.copy(),
                       "peer_root": str(peer.root) if peer and peer.root else None},
              "ceilings": measure_ceilings(device, quick=quick), "unavailable": {}, "results": [],
              "not_run": []}
    bandwidth = report["ceilings"]["copy_TBps"]
    resolved = {}
    for op in ops:
        fns, why = resolve(op, impls, peer, device)
        resolved[op] = fns
        if why:
            report["unavailable"][op] = why
    start = time.perf_counter()
    for shape in cases:
        if settings.max_seconds is not None and time.perf_counter() - start > settings.max_seconds:
            report["not_run"].append(f"{shape.op} {shape.name}: time budget ({settings.max_seconds:.0f} s) spent")
            continue
        t0 = time.perf_counter()
        if on_start:
            on_start(shape, list(resolved[shape.op]))
        try:
            result = run_case(shape, resolved[shape.op], device, dtype, settings, bandwidth)
        except Exception as e:          # a broken op must not stop the others
            result = {"op": shape.op, "shape": shape.name, "group": shape.group, "dims": dict(shape.dims),
                      "error": _short(e), "impls": {}, "check": {}, "verdict": {"fwd": "-", "fwdbwd": "-"}}
            _free(device)
        result["wall_s"] = round(time.perf_counter() - t0, 1)   # compile + autotune + check + timing
        report["results"].append(result)
        if on_result:
            on_result(report)
    return report


# ----------------------------------------------------------------------------- formatting

def _f(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return f"{x:.{digits}f}" if x >= 10 ** -digits else f"{x:.1e}"


def _cell(r, impl, mode, why):
    i = r["impls"].get(impl)
    if i is None:
        reason = why.get(impl, "")
        return "missing" if reason.startswith("missing") else ("unavail" if reason else "n/a")
    if f"{mode}_ms" in i:
        return _f(i[f"{mode}_ms"]) + ("*" if i.get(f"{mode}_reps", 99) < 3 else "")
    if f"{mode}_skipped" in i:
        return "OOM" if i[f"{mode}_skipped"].startswith("out of memory") else "err"
    return "n/a"


def _err_cell(r):
    c = r["check"].get("ours_vs_peer") or r["check"].get("ours_vs_ref")
    if not c:
        return "–"
    w = worst([c["out"], c.get("state", 0.0)] + list(c.get("grads", {}).values()))
    vs = "peer" if "ours_vs_peer" in r["check"] else "ref"
    return f"{_f(w, 4) if w < 1 else f'{w:.1e}'} {vs}{'' if c['ok'] else ' BAD'}"


COLUMNS = ["op", "shape", "fwd ours", "fwd ref", "fwd peer", "f+b ours", "f+b ref", "f+b peer",
           "ours/peer f", "ours/peer f+b", "ours/ref f", "ours/ref f+b", "target f / f+b", "verdict f / f+b",
           "floor", "ours/floor", "max err"]


def rows(report) -> list[list[str]]:
    out = []
    for r in report["results"]:
        if "error" in r:
            out.append([r["op"], r["shape"], "error: " + r["error"]] + [""] * (len(COLUMNS) - 3))
            continue
        rat, t = r["ratios"], r.get("target")
        why = report["unavailable"].get(r["op"], {})
        out.append([
            r["op"], r["shape"],
            _cell(r, "ours", "fwd", why), _cell(r, "ref", "fwd", why), _cell(r, "peer", "fwd", why),
            _cell(r, "ours", "fwdbwd", why), _cell(r, "ref", "fwdbwd", why), _cell(r, "peer", "fwdbwd", why),
            _f(rat["ours_over_peer"]["fwd"], 2), _f(rat["ours_over_peer"]["fwdbwd"], 2),
            _f(rat["ours_over_ref"]["fwd"], 2), _f(rat["ours_over_ref"]["fwdbwd"], 2),
            f"{t['fwd_ms']} / {t['fwdbwd_ms']}" if t else "–",
            f"{r['verdict']['fwd']} / {r['verdict']['fwdbwd']}",
            _f(r.get("floor_ms"), 4), _f(r.get("ours_over_floor"), 1), _err_cell(r)])
    return out


def _notes(report) -> list[str]:
    notes = []
    for op, why in report["unavailable"].items():
        for impl, reason in why.items():
            notes.append(f"{op}: {impl} unavailable: {reason}")
    for r in report["results"]:
        for impl, i in r["impls"].items():
            for mode in ("fwd", "fwdbwd"):
                if f"{mode}_skipped" in i:
                    notes.append(f"{r['op']} {r['shape']}: {impl} {mode} skipped: {i[f'{mode}_skipped']}")
        for name, c in r["check"].items():
            if not c["ok"]:
                detail = ", ".join(f"{k} {v:.2e}" for k, v in c.get("grads", {}).items())
                notes.append(f"{r['op']} {r['shape']}: {name} FAILED: out {c['out']:.2e}"
                             + (f", state {c['state']:.2e}" if "state" in c else "") + (f"; grads {detail}" if detail else ""))
                if name == "ours_vs_peer" and "ours_vs_ref" not in r["check"]:
                    notes.append(f"{r['op']} {r['shape']}: without the reference in this run that says one of ours "
                                 "and the peer is off, not which: scripts/gpu/vs_float64.py compares both with a "
                                 "float64 reference")
    notes += [f"not run: {x}" for x in report.get("not_run", [])]
    return notes


def _header(report) -> list[str]:
    m, c = report["meta"], report["ceilings"]
    dev = m.get("gpu") or f"CPU ({m['host']})"
    lines = [f"{m['date']}  {dev}  torch {m['torch']}  triton {m['triton']}  CUDA {m['cuda']}  dtype {m['dtype']}",
             f"command: {m['command']}",
             f"ceilings: device copy {c['copy_TBps']:.3f} TB/s (read+write)"
             + (f", bf16 matmul {c['matmul_TFLOPs']:.0f} TFLOP/s" if "matmul_TFLOPs" in c else "")]
    return lines


def progress_line(report, r) -> str:
    """One line for a finished case, printed while the run goes on."""
    row = dict(zip(COLUMNS, rows({**report, "results": [r]})[0]))
    if "error" in r:
        return f"{r['op']} {r['shape']}: error: {r['error']}"
    return (f"{r['op']} {r['shape']}: fwd ours/ref/peer {row['fwd ours']}/{row['fwd ref']}/{row['fwd peer']} ms, "
            f"f+b {row['f+b ours']}/{row['f+b ref']}/{row['f+b peer']} ms, verdict {row['verdict f / f+b']}, "
            f"floor {row['floor']} ms, max err {row['max err']} ({r.get('wall_s', 0):.0f} s)")


def format_table(report) -> str:
    """Plain-text table for the terminal: header, one line per case, then the notes."""
    body = [COLUMNS] + rows(report)
    widths = [max(len(row[i]) for row in body) for i in range(len(COLUMNS))]
    lines = _header(report) + [""]
    for k, row in enumerate(body):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", "ms = median; * = fewer than 3 timed runs; f = forward (no grad), f+b = forward+backward;",
              "floor = fewest bytes a forward moves / measured copy bandwidth; verdict: pass = ours faster than",
              "the gpu-baselines.md target and the peer measured now, and correct (max err within tolerance)."]
    notes = _notes(report)
    if notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in notes]
    return "\n".join(lines)


def format_markdown(report) -> str:
    """The section for BENCHMARKS.md."""
    m = report["meta"]
    out = [f"## Kernel benchmarks, {m['date'][:10]}", ""]
    out += [f"- {line}" for line in _header(report)]
    out += ["- medians of `triton.testing.do_bench` (L2 flushed between runs), warm-up and compile runs "
            "excluded; * = fewer than 3 runs; inputs random normal in the dtype above, A/D/dt_bias fp32",
            "- f = forward (no grad), f+b = forward+backward; floor = fewest bytes a forward must move / "
            "measured copy bandwidth; target = the peer's time in shared/reference/gpu-baselines.md",
            "- verdict pass = ours faster than the target and than the peer measured in this run, and "
            "correct; max err = worst relative error of ours vs the peer (else the reference), output and gradients",
            "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows(report)]
    notes = _notes(report)
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def write_json(report, path):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, default=str, allow_nan=True)
    os.replace(tmp, path)
