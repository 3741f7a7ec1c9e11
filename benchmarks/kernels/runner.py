"""A whole run: the implementations of each op, the machine, every case in turn."""
from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from typing import Callable

import torch

from benchmarks.peer import load_peer
from hybridlab.kernels.dispatch import OPS, implementation

from .cases import BACKEND, IMPLS, SPECS, select_shapes
from .compare import run_case, short_error
from .timing import Settings, free_memory, measure_ceilings

DEFAULT_OPS = tuple(SPECS)
_MODULE = {"ours": "fused.py", "ref": "reference.py"}


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
            fn = implementation(op, BACKEND[impl])
            if impl == "ours" and device is not None and device.type != "cuda" \
                    and os.environ.get("TRITON_INTERPRET") != "1":
                why[impl] = "fused Triton kernels need CUDA (or TRITON_INTERPRET=1 on the CPU)"
            else:
                fns[impl] = fn
        except ModuleNotFoundError as e:
            mod = f"hybridlab.kernels.{OPS[op]}.{_MODULE[impl][:-3]}"
            folder = OPS[op].replace(".", "/")
            why[impl] = (f"missing: no hybridlab/kernels/{folder}/{_MODULE[impl]}" if e.name == mod
                         else f"import failed: {short_error(e)}")
        except Exception as e:
            why[impl] = f"import failed: {short_error(e)}"
    return fns, why


def environment(device) -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "cuda": torch.version.cuda, "host": platform.node()}
    try:
        import triton                          # optional: absent on a machine without it
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
    partial results); returns the report (docs/benchmarking.md lists its keys)."""
    settings = settings or (Settings.quick() if quick else Settings())
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    unknown = [op for op in ops if op not in SPECS]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; known: {list(SPECS)}")
    cases = select_shapes(ops, shapes)
    peer = load_peer(ops=ops) if use_peer and "peer" in impls else None
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
                      "error": short_error(e), "impls": {}, "check": {}, "verdict": {"fwd": "-", "fwdbwd": "-"}}
            free_memory(device)
        result["wall_s"] = round(time.perf_counter() - t0, 1)   # compile + autotune + check + timing
        report["results"].append(result)
        if on_result:
            on_result(report)
    return report
