"""One case, side by side: ours, the reference and the peer on identical inputs.

1. Correctness first: every implementation runs the forward and the backward once, outputs in
   allocator memory poisoned with NaN (an unwritten element shows); ours is compared with the
   peer and the reference (relative error of the output, the updated decode state and every
   input gradient).
2. Timing: forward (no grad) and forward+backward of each (``timing.measure``).
3. The verdict against the target (the peer's time in ``cases.SHAPES``) and the peer measured in
   the same run, and the forward as a multiple of its memory floor: bytes of every input read
   once and every output written once, over the device-copy bandwidth measured at the start.
"""
from __future__ import annotations

import math
import zlib

import torch

from .cases import (SPECS, TARGET_SOURCE, Draw, Shape, call_args, first, grad_names, output_shape,
                    with_leaves)
from .timing import Settings, free_memory, measure


def tensors(value):
    """Every tensor in a value (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v)


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
    read = sum(stored_bytes(t) for t in tensors(kwargs))
    written = sum(stored_bytes(t) for t in tensors(output))
    written += sum(stored_bytes(t) for name in inplace for t in tensors(kwargs.get(name)))
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


def _poison(device, nbytes):
    # fill free allocator memory with 0xFF (NaN in every float type) so an output element the
    # kernel forgets to write stays NaN; the next allocations reuse these cached blocks
    if device.type == "cuda":
        t = torch.empty(int(min(max(nbytes, 64 << 20), 4 << 30)), dtype=torch.uint8, device=device)
        t.fill_(255)
        del t


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def short_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def check(shape, spec, fns, kw, dout, device, settings, skip):
    """Outputs and gradients of every available impl on the same inputs; errors vs ours.
    Returns (checks, nonfinite by impl, the forward's floor bytes); ``skip`` collects why an
    impl's forward or backward could not run."""
    outs, grads, nonfinite = {}, {}, {}
    nbytes = sum(stored_bytes(t) for t in tensors(kw))
    for impl, fn in fns.items():
        try:
            args = call_args(impl, kw, spec)
            _poison(device, 2 * nbytes)
            with torch.no_grad():
                out = first(fn(**args))
            state = [t for name in spec.inplace for t in tensors(args[name])]
            outs[impl] = [out] + state
            nonfinite[impl] = any(not bool(torch.isfinite(t).all()) for t in outs[impl])
        except Exception as e:
            why = ("out of memory: " if is_oom(e) else "error: ") + short_error(e)
            skip[impl] = {"fwd": why, "fwdbwd": "not run: the forward failed (" + why + ")"}
            free_memory(device)
            continue
        if not spec.grads:
            continue
        try:
            names = grad_names(impl, args, spec)
            args, leaves = with_leaves(args, names)
            _poison(device, 2 * nbytes)
            first(fn(**args)).backward(dout)
            g = {k: t.grad for k, t in leaves.items() if t.grad is not None}
            grads[impl] = spec.grads_from_peer(g, kw) if impl == "peer" and spec.grads_from_peer else g
            nonfinite[impl] = nonfinite[impl] or any(not bool(torch.isfinite(t).all()) for t in grads[impl].values())
        except Exception as e:
            skip.setdefault(impl, {})["fwdbwd"] = ("out of memory: " if is_oom(e) else "error: ") + short_error(e)
        del args
        free_memory(device)

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
    draw = Draw(device, dtype, settings.seed + zlib.crc32(f"{shape.op}/{shape.name}".encode()) % 100_003)
    kw = spec.make(shape.dims, draw)
    dout = draw.normal(output_shape(shape.op, kw)) if spec.grads else None   # upstream gradient
    skip: dict[str, dict] = {}
    result = {"op": shape.op, "shape": shape.name, "group": shape.group, "dims": dict(shape.dims),
              "dtype": str(dtype).replace("torch.", ""), "impls": {}, "check": {}}
    nonfinite, out_b = {}, None
    if settings.check and fns:
        result["check"], nonfinite, out_b = check(shape, spec, fns, kw, dout, device, settings, skip)
    if out_b is None:                    # no check ran: one forward just to size the output
        fn = fns.get("ours") or fns.get("ref") or fns.get("peer")
        if fn is not None:
            impl = next(k for k, v in fns.items() if v is fn)
            try:
                with torch.no_grad():
                    out_b = floor_bytes(kw, first(fn(**call_args(impl, kw, spec))), spec.inplace)
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
                args = call_args(impl, kw, spec)
                if mode == "fwd":
                    def call(fn=fn, args=args):
                        with torch.no_grad():
                            return fn(**args)
                    t = measure(call, device, settings, no_compile=impl == "ref")
                else:
                    args, leaves = with_leaves(args, grad_names(impl, args, spec))

                    def call(fn=fn, args=args):
                        first(fn(**args)).backward(dout)
                    t = measure(call, device, settings, reset=list(leaves.values()), no_compile=impl == "ref")
                r[f"{mode}_ms"], r[f"{mode}_reps"], r[f"{mode}_method"] = t["ms"], t["reps"], t["method"]
            except Exception as e:
                r[f"{mode}_skipped"] = ("out of memory: " if is_oom(e) else "error: ") + short_error(e)
            finally:
                args = leaves = call = None      # the closure holds the inputs and gradients
                free_memory(device)
    summarise(result, shape)
    return result


def summarise(result, shape):
    """Ratios to the peer and the reference, the floor ratio, correctness and the verdict."""
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
                         "source": TARGET_SOURCE} if table else None)
    # Ours is wrong when it is not finite or disagrees with the reference. A disagreement with the
    # peer alone says that one of the two is off, not which ("disagree"; the peer's Mamba-3 angle
    # gradient is 0.19 off a float64 reference at b1 l32768, ours 0.04: benchmarks/gpu/vs_float64.py).
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
