"""The benchmark's cases: named shapes per op, their inputs, and how each implementation is called.

This is the small public API the GPU scripts share with the bench (``benchmarks/gpu/*.py``)::

    from benchmarks.kernels import cases
    run = cases.prepare("ssd", "b4-l4096-h32-p64-n128", impl="ours", device="cuda")
    run.forward()              # no grad, as the bench times it
    run.forward_backward()     # gradients reset, then forward and backward with a fixed upstream gradient
    run.grads()                # input gradients by our argument names (the peer's mapped back)

Inputs are fresh random tensors from one seeded generator (never zeros), activations in the
chosen dtype, A / D / dt_bias in fp32 as the peer expects them, step sizes as Mamba initialises
them. The peer gets the same tensors in its own argument layout (``OpSpec.to_peer``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.peer import load_peer
from hybridlab.kernels.dispatch import implementation

IMPLS = ("ours", "ref", "peer")
BACKEND = {"ours": "triton", "ref": "reference"}      # our implementations, by hybridlab backend
GROUPS = ("table", "model", "small", "tiny")       # "all" = every group but tiny (a CPU-test size)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TARGET_SOURCE = "mamba-ssm 2.3.2.post1 on one H100, 2026-11-22 (benchmarks/kernels/cases.py)"


# ----------------------------------------------------------------------------- shapes and targets

@dataclass(frozen=True)
class Shape:
    op: str
    name: str
    group: str                                   # one of GROUPS
    dims: dict
    table: tuple | None = None                   # the target: the peer's (fwd ms, fwd+bwd ms, floor ms)


def _s(op, name, group, table=None, **dims) -> Shape:
    return Shape(op, name, group, dims, table)


# The "table" rows carry the targets: mamba-ssm 2.3.2.post1's own times at these shapes, measured
# on one H100 80GB HBM3 on 2026-11-22 (torch 2.11, Triton 3.6, do_bench medians, bf16), and the
# forward's memory floor at 3.0 TB/s. d_model 1024, expand 2 -> d_inner 2048 = 32 heads x 64.
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

class Draw:
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
    # no z: the target rows time the scan without the gate
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
    make: Callable                      # (dims, Draw) -> our keyword arguments
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


# ----------------------------------------------------------------------------- calling an implementation

def shape(op: str, name: str) -> Shape:
    """The case ``name`` of ``op`` (e.g. ``shape("ssd", "b4-l4096-h32-p64-n128")``)."""
    for s in SHAPES:
        if s.op == op and s.name == name:
            return s
    known = sorted(f"{s.op}/{s.name}" for s in SHAPES)
    raise ValueError(f"no case {op}/{name}; known: {', '.join(known)}")


def parse_case(text: str) -> tuple[Shape, dict]:
    """``op/shape[@dim=value...]`` (the scripts' case syntax) -> (shape, dim overrides)."""
    case, *sets = text.split("@")
    op, _, name = case.partition("/")
    overrides = {}
    for item in sets:
        key, _, value = item.partition("=")
        if not value.lstrip("-").isdigit():
            raise ValueError(f"{text}: override {item!r} must be dim=integer, e.g. @chunk=128")
        overrides[key] = int(value)
    return shape(op, name), overrides


def make_inputs(s: Shape, draw: Draw, **overrides) -> dict:
    """Our keyword arguments for case ``s`` (``overrides`` replace some of its dims)."""
    return SPECS[s.op].make({**s.dims, **overrides}, draw)


def output_shape(op: str, kw: dict) -> tuple:
    """Shape of the primary output (the upstream gradient's shape)."""
    if op in ("selective_scan", "causal_conv1d"):
        return tuple(kw["u" if op == "selective_scan" else "x"].shape)
    return tuple(kw["x"].shape)


def first(out):
    """The primary output of an op that may return a tuple."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    return value


def call_args(impl: str, kw: dict, spec: OpSpec) -> dict:
    """Each implementation gets its own copy of in-place inputs, the peer its own layout."""
    kw = {k: (_clone(v) if k in spec.inplace else v) for k, v in kw.items()}
    return spec.to_peer(kw) if impl == "peer" else kw


def grad_names(impl: str, args: dict, spec: OpSpec) -> list[str]:
    """The arguments a forward+backward differentiates (the peer: every floating tensor it takes)."""
    if not spec.grads:
        return []
    if impl == "peer":
        return [k for k, v in args.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return [k for k in spec.grads if isinstance(args.get(k), torch.Tensor)]


def with_leaves(args: dict, names) -> tuple[dict, dict]:
    """``args`` with ``names`` replaced by fresh leaves that require grad; (args, leaves)."""
    leaves = {k: args[k].detach().clone().requires_grad_(True) for k in names}
    return {**args, **leaves}, leaves


def function(op: str, impl: str) -> Callable:
    """The function ``impl`` runs for ``op``: ours (Triton), the reference, or the peer (``.peer/``)."""
    if impl == "peer":
        peer = load_peer(ops=[op])
        fn = peer.get(op)
        if fn is None:
            raise RuntimeError(f"peer unavailable for {op}: {peer.reason(op)}")
        return fn
    return implementation(op, BACKEND[impl])


@dataclass
class Run:
    """One implementation, ready to call on one case's inputs (see ``prepare``)."""
    op: str
    impl: str
    fn: Callable
    spec: OpSpec
    kwargs: dict            # our arguments
    inputs: dict            # the implementation's arguments (its layout, its own in-place state)
    args: dict              # the same, differentiated inputs as leaves
    leaves: dict
    dout: torch.Tensor | None

    def forward(self):
        """The forward under no_grad, on inputs that do not require grad (as the bench times it);
        a decode step updates ``inputs``' state in place, call after call."""
        with torch.no_grad():
            return self.fn(**self.inputs)

    def forward_backward(self):
        """Gradients reset, then the forward and its backward from the fixed upstream gradient."""
        if self.dout is None:
            raise ValueError(f"{self.op} has no backward (a decode step): call forward()")
        for t in self.leaves.values():
            t.grad = None
        out = first(self.fn(**self.args))
        out.backward(self.dout if self.dout.dtype == out.dtype else self.dout.to(out.dtype))
        return out

    def grads(self) -> dict:
        """Input gradients of the last ``forward_backward``, by our argument names."""
        g = {k: t.grad for k, t in self.leaves.items() if t.grad is not None}
        if self.impl == "peer" and self.spec.grads_from_peer:
            g = self.spec.grads_from_peer(g, self.kwargs)
        return g


def prepare(op: str, name: str, impl: str = "ours", device="cuda", dtype=torch.bfloat16, seed: int = 0,
            overrides: dict | None = None, fn: Callable | None = None, kwargs: dict | None = None) -> Run:
    """Case ``op/name``'s inputs for ``impl`` (``fn`` or ``function(op, impl)``); ``kwargs``
    replaces the drawn inputs (e.g. the same inputs upcast to float64)."""
    s, spec = shape(op, name), SPECS[op]
    draw = Draw(torch.device(device), dtype, seed)
    kw = make_inputs(s, draw, **(overrides or {}))
    dout = draw.normal(output_shape(op, kw)) if spec.grads else None
    if kwargs is not None:
        kw = kwargs
    inputs = call_args(impl, kw, spec)
    args, leaves = with_leaves(inputs, grad_names(impl, inputs, spec))
    return Run(op, impl, fn or function(op, impl), spec, kw, inputs, args, leaves, dout)
