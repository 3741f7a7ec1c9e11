"""What a search trial measures: metric names, their aliases and context lengths.

Names with "@" take a context length (``state_bytes@32768``); ``score/<task label>`` is one
task's score. The analytic ones are known before training, from the summary, so constraints on
them skip training.
"""
from __future__ import annotations

import re
from typing import Any

# What a trial measures. Names with "@" take a context length: state_bytes@32768.
TRAIN_METRICS = ("quality", "train_tokens_per_s", "peak_mem_bytes", "train_wall_s", "final_loss",
                 "train_steps", "train_tokens")
COST_METRICS = ("params_total", "params_active", "params_embedding", "params_non_embedding",
                "recurrent_state_bytes", "decode_tokens_per_s", "prefill_latency_s")
CONTEXT_METRICS = ("state_bytes", "kv_bytes", "flops_per_token")
ALIASES = {"params": "params_total", "wall_s": "train_wall_s"}
# Known before training, from the analytic summary (so constraints on them skip training).
ANALYTIC = ("params_total", "params_active", "params_embedding", "params_non_embedding",
            "recurrent_state_bytes")
ANALYTIC_CONTEXT = ("state_bytes", "kv_bytes", "flops_per_token")
_METRIC_RE = re.compile(r"^([a-z_]+)@(\d+)$")


def canonical_metric(name: str) -> str:
    return ALIASES.get(name, name)


def metric_context(name: str) -> int | None:
    m = _METRIC_RE.match(name)
    return int(m.group(2)) if m else None


def is_analytic(name: str) -> bool:
    name = canonical_metric(name)
    m = _METRIC_RE.match(name)
    return (m.group(1) in ANALYTIC_CONTEXT) if m else name in ANALYTIC


def check_metric(name: Any, task_labels: list[str]) -> str | None:
    """None if ``name`` is a metric a trial produces, else a message."""
    if not isinstance(name, str):
        return f"a metric name is a string, got {name!r}"
    name = canonical_metric(name)
    if name in TRAIN_METRICS or name in COST_METRICS:
        return None
    if name.startswith("score/"):
        label = name[len("score/"):]
        if label in task_labels:
            return None
        return f"no task labelled {label!r} (tasks: {', '.join(task_labels) or 'none'})"
    m = _METRIC_RE.match(name)
    if m and m.group(1) in CONTEXT_METRICS:
        if int(m.group(2)) < 1:
            return "the context length after '@' must be >= 1"
        return None
    if name in CONTEXT_METRICS:
        return f"{name} needs a context length, e.g. {name}@32768"
    return "unknown metric"


def known_metric_names(task_labels: list[str]) -> list[str]:
    return (list(TRAIN_METRICS) + list(COST_METRICS) + list(ALIASES)
            + [f"{m}@32768" for m in CONTEXT_METRICS] + [f"score/{t}" for t in task_labels])
