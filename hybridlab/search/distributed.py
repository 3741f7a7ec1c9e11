"""Data-parallel training of one model across processes, on torch's own machinery.

Two ways in, one code path: run under ``torchrun`` (``torchrun --nproc-per-node N -m
hybridlab.cli.main train ...``), or let ``run_ranks(N, fn, ...)`` start the N processes on this host
(``--nproc N``) with torch's elastic launcher, the engine behind torchrun. Either way every rank
sees torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) and
``Parallel.from_env`` joins the process group: NCCL on CUDA (one GPU per local rank), gloo on the
CPU, plus a gloo group for small host-side agreements, so they never wait on the GPU.

The trainer (``train_model(..., parallel=...)``) asks a ``Parallel`` for four things:

* ``wrap(model)``: DistributedDataParallel, or FSDP2 (``fully_shard``) when asked (``shard=True``)
  or, on CUDA, when the training state would not fit one device (``build_device``);
* ``shard(inputs, targets)``: this rank's slice of the global batch. Every rank draws the same
  global batch from the same seed, so the global batch is the one-process batch;
* ``reduce_loss``: cross-entropy normalised by the *global* batch's target count and scaled by the
  world size, so the gradient average of DDP/FSDP2 equals the one-process gradient even when ranks
  hold different numbers of targets (padding, ignored positions); the logged loss is the global one;
* ``from_rank0`` / ``agree``: rank 0's evaluation results, clock and stop requests, so every rank
  stops, evaluates and sets the learning rate at the same step (time budgets differ per process).

An MoE model's auxiliary loss is each rank's own shard's (as in any data-parallel trainer); its
gradient is averaged over ranks. Writes (checkpoints, results, progress) are rank 0's alone
(``is_rank0``); with FSDP2, ``full_state_dict`` gathers the weights first, on every rank.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from hybridlab.errors import Problem, SpecError, UserError

CLI = "<command line>"

#: Bytes of training state per fp32 parameter: weight, gradient and AdamW's two moments.
TRAIN_BYTES_PER_PARAM = 16
#: FSDP2 is chosen automatically (CUDA) when that state exceeds this share of one GPU's memory;
#: the rest is left for activations.
FIT_FRACTION = 0.5
#: Seconds a rank with an unexpected error waits before printing it (see rank_main); the
#: launcher checks its processes every 0.1 s.
RANK_FAILURE_GRACE_S = 2.0


def launched() -> bool:
    """True in a process started by torchrun or ``run_ranks`` (torchrun's environment is set)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_rank0() -> bool:
    """Whether this process writes: rank 0, or the only process."""
    return rank() == 0


def check_nproc(nproc: int, device: str, flag: str = "--nproc") -> None:
    """Refuse, before any process starts, a process count this host cannot run."""
    if nproc < 1:
        raise SpecError(Problem(f"must be a positive integer, got {nproc}", file=CLI, field=flag))
    if _device_type(device, flag) == "cuda" and nproc > torch.cuda.device_count():
        raise SpecError(Problem(
            f"{nproc} processes need {nproc} GPUs (one each), but {torch.cuda.device_count()} "
            "are visible", file=CLI, field=flag,
            hint=f"use {flag} {torch.cuda.device_count()}, or --device cpu"))


def _device_type(choice: str, flag: str = "--device") -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpecError(Problem("--device cuda, but CUDA is not available here", file=CLI,
                                field="--device", hint="use --device cpu or auto"))
    if choice not in ("cpu", "cuda"):
        raise SpecError(Problem(f"unknown device {choice!r}", file=CLI, field="--device",
                                hint="use auto, cpu or cuda"))
    return choice


# -- one rank's view ----------------------------------------------------------------------------

@dataclass
class Parallel:
    """This process's place in a data-parallel run; see the module docstring."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    shard_params: bool | None = None        # FSDP2; None: decided by build_device (CUDA only)
    control: Any = None                     # gloo group for host-side agreement
    module: nn.Module | None = field(default=None, repr=False)   # what the training step calls

    @classmethod
    def from_env(cls, device: str = "auto", shard: bool | None = None) -> "Parallel":
        """Join the process group described by torchrun's environment variables."""
        if not launched():
            raise SpecError(Problem("not started by torchrun or --nproc (RANK, WORLD_SIZE, "
                                    "LOCAL_RANK, MASTER_ADDR are not set)", file=CLI, field="--nproc",
                                    hint="use --nproc N, or torchrun --nproc-per-node N"))
        kind = _device_type(device)
        local_rank = int(os.environ["LOCAL_RANK"])
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if kind == "cuda":
            check_nproc(local_world, "cuda", flag="--nproc-per-node")
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", device_id=dev)
            control = dist.new_group(backend="gloo")
        else:
            dev = torch.device("cpu")
            if "OMP_NUM_THREADS" not in os.environ:   # N processes share the cores, not N x all
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
            dist.init_process_group("gloo")
            control = dist.group.WORLD
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, dev,
                   shard_params=shard, control=control)

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return bool(self.shard_params)

    def describe(self) -> str:
        how = "FSDP2 (fully_shard)" if self.sharded else "DistributedDataParallel"
        return (f"data-parallel: {how} over {self.world_size} processes "
                f"({dist.get_backend()}, {self.device.type})")

    def build_device(self, n_params: int) -> torch.device:
        """Where to build a model of ``n_params`` parameters; settles ``shard_params`` when it was
        left open: FSDP2 when the training state would not fit one GPU. A sharded model is built
        on the CPU (the same init as a CPU run) and ``fully_shard`` moves each rank's shard."""
        if self.shard_params is None:
            need = TRAIN_BYTES_PER_PARAM * n_params
            self.shard_params = self.device.type == "cuda" and need > FIT_FRACTION * \
                torch.cuda.get_device_properties(self.device).total_memory
        return torch.device("cpu") if self.sharded else self.device

    # -- what the trainer calls ---------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP (a wrapper; ``model`` keeps the same parameters) or FSDP2 (``model`` itself is
        sharded in place). Build the optimizer afterwards, from ``model``."""
        if self.sharded:
            from torch.distributed.device_mesh import init_device_mesh
            try:
                from torch.distributed.fsdp import fully_shard
            except ImportError:         # public from torch 2.6
                raise SpecError(Problem(f"FSDP2 (fully_shard) needs torch >= 2.6; this is "
                                        f"{torch.__version__}", file=CLI, field="--shard",
                                        hint="upgrade torch, or train without --shard")) from None
            mesh = init_device_mesh(self.device.type, (self.world_size,))
            for unit in _own_units(model):     # one all-gather per layer, not one for the model
                fully_shard(unit, mesh=mesh)
            self.module = fully_shard(model, mesh=mesh)
        else:
            from torch.nn.parallel import DistributedDataParallel
            model.to(self.device)
            self.module = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=not _builtin_blocks_only(model))
        return self.module

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's rows of each global-batch tensor (contiguous slices, sizes differing by at
        most one row)."""
        return tuple(t.tensor_split(self.world_size)[self.rank] for t in tensors)

    def reduce_loss(self, ce_sum: torch.Tensor, n_targets: torch.Tensor, aux: torch.Tensor):
        """-> (global mean cross-entropy, this rank's cross-entropy term to backpropagate, mean
        auxiliary loss over ranks). One all-reduce; no host sync."""
        stats = torch.stack([ce_sum.detach().float(), n_targets.float(), aux.detach().float()])
        dist.all_reduce(stats)
        total = stats[1].clamp(min=1)                  # a batch without targets gives 0, not NaN
        # DDP/FSDP2 divide the summed gradients by the world size: scale it back in
        return stats[0] / total, ce_sum * (self.world_size / total), stats[2] / self.world_size

    def local_value(self, t: torch.Tensor) -> torch.Tensor:
        """A plain tensor from a DTensor result (FSDP2's gradient norm)."""
        return t.full_tensor() if hasattr(t, "full_tensor") else t

    def agree(self, *values: float) -> tuple[float, ...]:
        """Rank 0's values, on every rank (host-side, through the gloo group)."""
        t = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(t, src=0, group=self.control)
        return tuple(t.tolist())

    def from_rank0(self, obj):
        """Rank 0's copy of a picklable object, on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def rank0_decides(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        """``should_stop`` as rank 0 answers it: a stop request (Ctrl-C, a UI) stops every rank at
        the same step."""
        return lambda: bool(self.agree(float(self.is_rank0 and bool(should_stop())))[0])

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's weights on the CPU, on rank 0 ({} on the others). A collective under
        FSDP2: every rank must call it."""
        if not self.sharded:
            return {k: v.detach().cpu() for k, v in model.state_dict().items()} \
                if self.is_rank0 else {}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                    cpu_offload=True))

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _builtin_blocks_only(model: nn.Module) -> bool:
    """Whether every parameter is used in every forward, as in hybridlab's own blocks (the example
    specs are checked in tests/test_distributed.py). Any other model (a plugin block, a model of
    your own) may leave some unused, which would stall DDP's gradient reduction unless DDP looks
    for them (a walk of the autograd graph every step)."""
    layers = getattr(model, "layers", None)
    return layers is not None and all(
        type(layer.block).__module__.startswith("hybridlab.blocks.") for layer in layers)


def _own_units(model: nn.Module) -> list[nn.Module]:
    """The layers FSDP2 can shard on their own: those sharing no parameter with anything outside
    them (Zamba-style shared blocks and tied embeddings stay in the root unit)."""
    everywhere = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    units = []
    for layer in getattr(model, "layers", []):
        inside = Counter(id(p) for _, p in layer.named_parameters(remove_duplicate=False))
        if inside and all(everywhere[i] == n for i, n in inside.items()):
            units.append(layer)
    return units


# -- starting the processes ---------------------------------------------------------------------

class RankFailed(Exception):
    """A rank ended with a non-zero exit code (it printed its own message); the others were
    stopped."""

    def __init__(self, rank: int, exit_code: int):
        self.rank, self.exit_code = rank, exit_code
        super().__init__(f"rank {rank} exited with code {exit_code}")


def run_ranks(nproc: int, fn: Callable, *args) -> dict[int, Any]:
    """Run ``fn(*args)`` in ``nproc`` fresh processes on this host, as torchrun would (its
    environment, a free rendezvous port); -> {rank: fn's return value}. ``fn`` must be picklable
    (a module-level function). When a rank fails, torch stops the others and this raises
    ``RankFailed`` with the first failure's exit code: 2 for a user error, 130 for Ctrl-C, 1 for
    anything else. Ctrl-C reaches the ranks directly (they stop cleanly, as one process does);
    this process waits for them."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # every signal torch's launcher stops the ranks on, but Ctrl-C (older torch: it stops them)
    keep_sigint = {"signals_to_handle": "SIGTERM,SIGHUP,SIGQUIT"} \
        if "signals_to_handle" in {f.name for f in fields(LaunchConfig)} else {}
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=f"hybridlab-{uuid.uuid4().hex[:12]}", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn",
                          **keep_sigint)
    try:
        with _quiet_launcher(), _ignore_sigint():
            return elastic_launch(config, rank_main)(fn, args)
    except ChildFailedError as e:
        failed_rank, failure = e.get_first_failure()
        raise RankFailed(failed_rank, failure.exitcode if failure.exitcode > 0 else 1) from None


def rank_main(fn: Callable, args: tuple):
    """A rank's top level: user errors print their message and exit 2, no traceback."""
    try:
        out = fn(*args)
    except UserError as e:
        tag = f"[rank {os.environ.get('RANK', '?')}] "
        for line in e.lines():
            print(tag + line, file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception:
        # When another rank failed first, this one's error is only the broken connection to it,
        # and the launcher is about to stop this process: wait for that, so the first failure's
        # message is the one the user reads. A failure of this rank's own prints after the wait.
        time.sleep(RANK_FAILURE_GRACE_S)
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)
    if isinstance(out, int) and not isinstance(out, bool) and out != 0:
        sys.exit(out)               # a failing exit code must stop the other ranks too
    return out


@contextmanager
def _quiet_launcher():
    """The ranks print their own errors; keep the agent's log (a traceback per failure) quiet."""
    log = logging.getLogger("torch.distributed.elastic")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def _ignore_sigint():
    """While the ranks run, Ctrl-C is theirs to handle (same terminal, same process group)."""
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    except ValueError:                  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
