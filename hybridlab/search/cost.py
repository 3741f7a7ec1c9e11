"""Cost of a model: parameters, decode state per sequence, decode throughput, prefill latency.

``measure_costs`` returns a flat dict (keys below). State bytes come from the analytic summary
(``hybridlab.composer.summary.summarize``) and are **checked** against what ``init_cache`` really
allocates: the model is rebuilt on the meta device in the accounting dtype (no memory used), a
batch-1 cache for ``max_len = ctx`` is made, and the bytes of every tensor in it are added up.
If the two disagree, ``StateBytesMismatch`` is raised, naming the layers that differ.

Keys: ``params_total``, ``params_active``, ``recurrent_state_bytes`` (SSM/conv state, independent
of context), ``kv_bytes@<ctx>``, ``state_bytes@<ctx>`` (recurrent + KV, per sequence),
``decode_tokens_per_s`` (``step`` over ``decode_batch`` sequences after warm-up),
``prefill_latency_s`` (median forward time at ``prefill_len``, batch 1), plus the settings used.
Timing runs without grad, under bf16 autocast on CUDA (as in training), synchronised on CUDA.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Iterable

import torch
from torch import nn


class StateBytesMismatch(RuntimeError):
    """The analytic state/KV bytes of a spec differ from what ``init_cache`` allocates."""


def tensor_bytes(obj: Any, _seen: set[int] | None = None) -> int:
    """Bytes of all tensors inside ``obj`` (tensors, dicts, lists, tuples, dataclasses, objects);
    a tensor reachable twice counts once."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(tensor_bytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, (nn.Module, type)):
        return sum(tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


def check_state_bytes(spec, contexts: Iterable[int], dtype: torch.dtype = torch.bfloat16) -> dict:
    """Analytic accounting of ``spec``, verified against allocated caches; returns the summary."""
    import hybridlab
    from hybridlab.composer.summary import summarize

    contexts = tuple(int(c) for c in contexts)
    summary = summarize(spec, contexts=contexts, dtype=dtype)
    meta_model = hybridlab.build_model(spec, device="meta", dtype=dtype)
    for ctx in contexts:
        analytic = summary["state_bytes"] + summary["kv_bytes"][str(ctx)]
        cache = meta_model.init_cache(1, ctx)
        allocated = tensor_bytes(cache)
        if allocated != analytic:
            raise StateBytesMismatch(
                f"state bytes at context {ctx} ({dtype}): summary says {analytic}, init_cache "
                f"allocates {allocated}" + _per_layer_diff(summary, cache, ctx))
    return summary


def _per_layer_diff(summary: dict, cache: Any, ctx: int) -> str:
    states = getattr(cache, "states", None)
    if not isinstance(states, list) or len(states) != len(summary["layers"]):
        return ""
    lines = []
    for entry, state in zip(summary["layers"], states):
        want = entry["state_bytes"] + entry["kv_bytes"][str(ctx)]
        got = tensor_bytes(state)
        if want != got:
            lines.append(f"\n  layer {entry['index']} ({entry['type']}): summary {want}, allocated {got}")
    return "".join(lines)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def decode_throughput(model: nn.Module, vocab_size: int, device: torch.device, batch: int,
                      steps: int, warmup: int = 4) -> float:
    """Tokens per second generated through ``model.step`` (batch sequences, one token each)."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab_size, (warmup + steps, batch), generator=gen).to(device)
    cache = model.init_cache(batch, warmup + steps)
    with torch.no_grad(), _autocast(device):
        for i in range(warmup):
            _, cache = model.step(tokens[i], cache)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(warmup, warmup + steps):
            _, cache = model.step(tokens[i], cache)
        _sync(device)
        elapsed = time.perf_counter() - t0
    return batch * steps / elapsed


def prefill_latency(model: nn.Module, vocab_size: int, device: torch.device, length: int,
                    repeats: int = 3) -> float:
    """Median seconds of one forward over ``length`` tokens, batch 1 (after one warm-up run)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, vocab_size, (1, length), generator=gen).to(device)
    times = []
    with torch.no_grad(), _autocast(device):
        model(x)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_costs(model: nn.Module, spec, device: torch.device | str, contexts=(4096, 32768),
                  decode_batch: int = 8, decode_steps: int = 32, prefill_len: int = 2048,
                  dtype: torch.dtype = torch.bfloat16, repeats: int = 3) -> dict:
    """All costs of ``model`` (built from ``spec``) on ``device``; see the module docstring."""
    device = torch.device(device)
    summary = check_state_bytes(spec, contexts, dtype)
    out: dict[str, Any] = {
        "params_total": int(model.num_parameters()),
        "params_active": int(model.num_parameters(active=True)),
        "recurrent_state_bytes": int(summary["state_bytes"]),
    }
    for ctx in contexts:
        kv = int(summary["kv_bytes"][str(int(ctx))])
        out[f"kv_bytes@{int(ctx)}"] = kv
        out[f"state_bytes@{int(ctx)}"] = int(summary["state_bytes"]) + kv

    vocab = spec.model.vocab_size
    was_training = model.training
    model.eval()
    try:
        out["decode_tokens_per_s"] = decode_throughput(model, vocab, device, decode_batch, decode_steps)
        out["prefill_latency_s"] = prefill_latency(model, vocab, device, prefill_len, repeats)
    finally:
        model.train(was_training)
    out.update(decode_batch=decode_batch, decode_steps=decode_steps, prefill_len=prefill_len,
               state_dtype=str(dtype).removeprefix("torch."))
    return out
