"""The whole training step — forward, backward, clipping, optimizer step — as CUDA graphs.

Small models are launch-bound: a step is hundreds of kernels of a few microseconds each, and the
host launches them more slowly than the GPU runs them. A captured graph launches the whole step
with one call. This follows torch's "whole network capture" recipe:

* warm-up: the first ``WARMUP`` steps run eagerly on a side stream (lazy initialisation, the
  optimizer state), and every input shape runs eagerly once before its capture (Triton compiles
  and autotunes on a shape's first call; autotuning syncs, which a capture does not allow);
* one graph per input shape (tasks differ in length, parity batches vary in width), at most
  ``MAX_GRAPHS``; further shapes run eagerly. The graphs share one memory pool, which is safe
  because they replay one at a time and the only tensor a replay leaves for later, its static
  output, stays referenced (and is copied out right after the replay);
* each step copies the batch into the shape's static inputs and the learning rate into a CUDA
  tensor (a Python float would be frozen into the graph), then replays. The optimizer must be
  built with ``capturable=True``; the step function sets gradients to None first, so backward
  allocates them in the graph's pool, as torch's docs do.

Fallback: a capture that raises — a host sync such as a ``.tolist()``, an operation
a graph cannot hold — turns graphs off for the rest of the run with one warning, and that step
and all later ones run eagerly. Nothing runs on the GPU while capturing, so a failed capture
leaves parameters and optimizer state as they were: no step is lost or repeated. A capture that
fails to end is left routing allocations to its memory pool by torch (``capture_end`` raises
before it ends that); ``_release`` ends it, or every failed trial of a search would leak its pool.

``HYBRIDLAB_CUDA_GRAPHS=0`` turns graphs off for every run (``TrainConfig.cuda_graphs`` for one).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter
from typing import Callable

import torch

from hybridlab.errors import SettingError

WARMUP = 3          # eager whole-step iterations before the first capture (torch's docs use 3)
MAX_GRAPHS = 8      # input shapes with their own graph; more shapes run eagerly
ENV = "HYBRIDLAB_CUDA_GRAPHS"

Scalars = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
StepFn = Callable[[torch.Tensor, torch.Tensor, bool], Scalars]


def env_allows_graphs() -> bool:
    """False when ``HYBRIDLAB_CUDA_GRAPHS`` is 0/false/off/no; unset or 1/true/on/yes: True."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise SettingError(f"{ENV}={value!r}: expected 0 or 1")


def settled_step(n_shapes: int) -> int:
    """The first step from which ``n_shapes`` shapes taken in turn all replay graphs."""
    return max(WARMUP, n_shapes) + n_shapes


@contextlib.contextmanager
def _eager_capturable():
    """Eager steps of a capturable optimizer are intended here: silence torch's warning (it comes
    once, and the first eager step is always a warm-up step)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This instance was constructed with capturable")
        yield


class GraphedStep:
    """``self(inputs, targets, lr) -> (ce, aux, grad_norm)`` through CUDA graphs; see above.

    ``step_fn(inputs, targets, graphed)`` is one eager training step on CUDA tensors that returns
    detached float32 scalars; ``graphed`` is True while it is being captured. ``inputs`` and
    ``targets`` given to ``self`` may live on the CPU: they are copied into static buffers.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, step_fn: StepFn, device: torch.device):
        self.step_fn, self.device = step_fn, device
        self.lr = torch.zeros((), device=device)
        for group in optimizer.param_groups:
            group["lr"] = self.lr
        self.stream = torch.cuda.Stream(device)
        self.buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()     # shared by every graph of this run
        self.eager_runs: Counter = Counter()     # warm-up runs per shape
        self.replays = 0
        self.fallback: str | None = None         # why graphs were turned off
        self.one_off = False                     # the last call captured (or tried), like compiling

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> Scalars:
        self.one_off = False
        self.lr.fill_(lr)
        key = (tuple(inputs.shape), tuple(targets.shape))
        if key not in self.graphs and not self._may_capture(key):
            return self._plain(inputs, targets)
        static_in, static_tg = self._static(key, inputs, targets)
        if key not in self.graphs:
            if self.eager_runs.total() < WARMUP or not self.eager_runs[key]:
                return self._warm_up(key, static_in, static_tg)
            if not self._capture(key, static_in, static_tg):
                return self._plain(inputs, targets)
        graph, stats = self.graphs[key]
        graph.replay()
        self.replays += 1
        return stats.clone().unbind()     # the next replay overwrites stats

    def _may_capture(self, key) -> bool:
        return self.fallback is None and (key in self.buffers or len(self.buffers) < MAX_GRAPHS)

    def _static(self, key, inputs, targets):
        if key not in self.buffers:
            self.buffers[key] = (torch.empty_like(inputs, device=self.device),
                                 torch.empty_like(targets, device=self.device))
        static_in, static_tg = self.buffers[key]
        static_in.copy_(inputs, non_blocking=True)
        static_tg.copy_(targets, non_blocking=True)
        return static_in, static_tg

    def _plain(self, inputs, targets):
        """An eager step on the current stream: graphs are off, or this shape gets none."""
        return self.step_fn(inputs.to(self.device, non_blocking=True),
                            targets.to(self.device, non_blocking=True), False)

    def _warm_up(self, key, static_in, static_tg):
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream), _eager_capturable():
            out = self.step_fn(static_in, static_tg, False)
        current.wait_stream(self.stream)
        self.eager_runs[key] += 1
        return out

    def _capture(self, key, static_in, static_tg) -> bool:
        self.one_off = True
        graph, error = torch.cuda.CUDAGraph(), None
        try:
            # the outer context restores the current stream even when ending the capture fails
            with torch.cuda.stream(torch.cuda.current_stream(self.device)), \
                    torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                try:
                    stats = torch.stack(self.step_fn(static_in, static_tg, True))
                except Exception as e:
                    error = e     # the cause; ending the broken capture raises its own error
                    raise
        except Exception as e:
            self._release(graph)
            self._give_up(error or e)
            error = None     # drop the traceback, and with it the tensors of the failed capture
            return False
        self.graphs[key] = (graph, stats)
        return True

    def _release(self, graph: torch.cuda.CUDAGraph):
        try:
            graph.pool()     # raises unless the capture ended; then the graph frees the pool itself
        except RuntimeError:
            index = torch.cuda.current_device() if self.device.index is None else self.device.index
            with contextlib.suppress(Exception):   # the calls behind torch.cuda.use_mem_pool
                torch._C._cuda_endAllocateToPool(index, self.pool)
                torch._C._cuda_releasePool(index, self.pool)

    def _give_up(self, error: Exception):
        lines = str(error).strip().splitlines()
        self.fallback = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        self.graphs.clear()
        self.buffers.clear()
        warnings.warn(f"CUDA graph capture failed, training eagerly: {self.fallback}", stacklevel=3)
