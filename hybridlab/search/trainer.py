"""Train one model briefly on a mix of proxy tasks and measure how well it learned.

``train_model(model, tasks, cfg, device)`` runs AdamW (no weight decay on what each block exempts
in its ``no_weight_decay()``, nor on norms outside blocks) with linear warm-up and cosine decay,
gradient clipping and round-robin batches over the tasks; the loss is cross-entropy on the target
positions plus ``aux_loss_weight * model.aux_loss()`` (MoE balancing). On CUDA the forward runs
under bf16 autocast while parameters and optimizer state stay fp32; on the CPU everything is fp32.

Budget: ``steps``, ``tokens`` (input tokens, padding included) and ``time_limit_s`` (training
seconds, evaluation excluded) — training stops at whichever is used up first. The learning-rate
schedule follows the fraction of the budget used, so it is the same function of progress for any
kind of budget.

Outcomes (``TrainResult.status``):

* ``"complete"``: the budget was used up, or ``stop_at_quality`` was reached;
* ``"pruned"``: at ``prune_at_frac`` of the budget every task scored within ``prune_margin`` of
  chance (Optuna's pruners do not work for multi-objective studies, so the trainer decides);
* ``"stopped"``: ``should_stop()`` returned True (Ctrl-C, a stop request from the UI).

A NaN/inf loss raises ``NonFiniteLoss`` (its ``result`` holds the curves so far, status
``"failed"``); ``torch.cuda.OutOfMemoryError`` propagates unchanged for the caller to record.

Evaluation runs every ``eval_every`` steps, or at ``eval_points`` evenly spaced budget fractions
(plus ``prune_at_frac``), and always at the end. ``TrainResult.curves`` holds (step, value) lists:
``train/loss`` (cross-entropy), ``train/<task>/loss``, ``train/aux_loss`` (when non-zero),
``train/grad_norm`` (before clipping), ``lr``, ``eval/<task>/<metric>``, ``eval/<task>/score``,
``eval/quality``.

Reproducibility: ``seed`` seeds the batch order and torch's RNG for the run (the caller's RNG state
is restored afterwards); on the CPU the same seed and model init give identical losses.

Warm-up: the first ``WARMUP_STEPS`` steps compile the Triton kernels (and autotune them) on a
fresh process, which can take longer than the whole rest of a short trial. They count towards the
step and token budgets but not towards ``time_limit_s`` or throughput, so neither the time budget
nor the early stop nor ``train_tokens_per_s`` punishes a trial for running first.

Cost numbers: ``train_tokens_per_s`` excludes warm-up, evaluation and profiled steps; ``peak_mem_bytes`` is
``torch.cuda.max_memory_allocated`` on CUDA, and on the CPU the process's peak resident set size
(``getrusage``: the whole process since it started, not just this run). On CUDA, steps 5-9 run
under ``torch.profiler`` and ``kernel_time_share`` = GPU-busy time (kernels, copies; overlaps
counted once) / wall time of those steps: near 1 the GPU is the bottleneck, well below 1 the
model is launch-bound (``None`` on the CPU or for runs shorter than 12 steps). With CUDA graphs
the window starts once every task's batch shape replays a graph (step 5 for one or two tasks,
``graphed_step.settled_step`` in general), and the run must be 7 steps longer than its start.

CUDA graphs (``cuda_graphs``, default on; ``HYBRIDLAB_CUDA_GRAPHS=0`` turns them off): on CUDA
the whole step is captured and replayed as a graph per batch shape (see ``graphed_step``),
falling back to eager steps, with a warning, for a model that cannot be captured (MoE routing
syncs with the host). Steps that capture a graph (or fail to) count like the warm-up steps:
towards the step and token budgets, not towards time or throughput. ``TrainResult.cuda_graph``
says whether steps replayed graphs (``None``: not tried), ``cuda_graph_fallback`` why capture
failed.

Data parallelism (``parallel``, see ``hybridlab.search.distributed``): every rank draws the same
global batch and trains on its shard under DDP or FSDP2, so losses and updates are those of one
process with the same batch; steps run eagerly (no CUDA graphs); cost numbers are rank 0's, with
tokens counted over the global batch.
"""
from __future__ import annotations

import math
import resource
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hybridlab.blocks.base import no_weight_decay_names
from hybridlab.errors import Problem, SpecError
from hybridlab.search.distributed import Parallel
from hybridlab.search.graphed_step import GraphedStep, env_allows_graphs, settled_step
from hybridlab.search.tasks.base import IGNORE, Task, combine_quality, required_vocab

Curve = list[tuple[int, float]]


#: Steps that compile/autotune kernels: excluded from time budget and throughput (see above).
WARMUP_STEPS = 2

@dataclass(frozen=True)
class TrainConfig:
    # budget: whichever is used up first (at least one is required)
    steps: int | None = None
    tokens: int | None = None
    time_limit_s: float | None = None
    # optimisation
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1               # except what blocks exempt (Block.no_weight_decay)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_frac: float = 0.1                # of the budget ...
    warmup_steps: int | None = None         # ... or this many steps, if set
    min_lr_ratio: float = 0.1               # cosine ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0           # max global grad norm; None: no clipping
    aux_loss_weight: float = 0.01
    seed: int = 0
    # evaluation
    eval_every: int | None = None           # steps between evaluations; None: eval_points
    eval_points: int = 4                    # evaluations spread evenly over the budget (+ final)
    eval_batch_size: int = 64
    task_weights: dict[str, float] = field(default_factory=dict)   # for quality; default 1
    # early stop
    prune_at_frac: float | None = 0.3       # None: never prune
    prune_margin: float = 0.05              # "at chance": every task's score <= chance + margin
    stop_at_quality: float | None = None    # stop (complete) once quality reaches this
    # CUDA launch overhead: profile a few steps, report the GPU-busy share of wall time ...
    measure_kernel_share: bool = True
    # ... and cut it by replaying the whole step as a CUDA graph (eager if capture fails)
    cuda_graphs: bool = True

    def __post_init__(self):
        problems = [Problem(msg, field=f"train.{name}") for name, msg in self._check()]
        if problems:
            raise SpecError(problems)

    def _check(self):
        out = []
        if self.steps is None and self.tokens is None and self.time_limit_s is None:
            out.append(("steps", "give a budget: steps, tokens or time_limit_s"))
        for name in ("steps", "tokens", "batch_size", "eval_points"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                out.append((name, f"must be a positive integer, got {v!r}"))
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            out.append(("time_limit_s", "must be > 0"))
        if not self.lr > 0:
            out.append(("lr", "must be > 0"))
        if self.weight_decay < 0:
            out.append(("weight_decay", "must be >= 0"))
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1):
            out.append(("betas", "both must be in [0, 1)"))
        if not 0 <= self.warmup_frac < 1:
            out.append(("warmup_frac", "must be in [0, 1)"))
        if self.warmup_steps is not None and self.warmup_steps < 0:
            out.append(("warmup_steps", "must be >= 0"))
        if not 0 <= self.min_lr_ratio <= 1:
            out.append(("min_lr_ratio", "must be in [0, 1]"))
        if self.grad_clip is not None and not self.grad_clip > 0:
            out.append(("grad_clip", "must be > 0 (or null for no clipping)"))
        if self.eval_every is not None and self.eval_every < 1:
            out.append(("eval_every", "must be >= 1"))
        if self.prune_at_frac is not None and not 0 < self.prune_at_frac < 1:
            out.append(("prune_at_frac", "must be in (0, 1), or null"))
        if self.stop_at_quality is not None and not 0 < self.stop_at_quality <= 1:
            out.append(("stop_at_quality", "must be in (0, 1]"))
        for name in ("measure_kernel_share", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                out.append((name, f"must be true or false, got {getattr(self, name)!r}"))
        return out


@dataclass
class TrainResult:
    status: str                             # complete | pruned | stopped | failed
    stop_reason: str
    steps: int
    tokens: int
    wall_s: float                           # everything, evaluation included
    train_s: float                          # training steps only
    train_tokens_per_s: float               # tokens / train_s (evaluation and profiling excluded)
    peak_mem_bytes: int                     # CUDA: max_memory_allocated; CPU: process peak RSS
    scores: dict[str, float]                # per task label, in [0, 1]
    metrics: dict[str, dict[str, float]]    # per task label: accuracy or bpb
    quality: float
    curves: dict[str, Curve]
    kernel_time_share: float | None = None  # CUDA: GPU-busy time / wall time of profiled steps
    cuda_graph: bool | None = None          # steps replayed CUDA graphs; None: not tried
    cuda_graph_fallback: str | None = None  # why capture failed (training went on eagerly)

    def to_dict(self) -> dict:
        return asdict(self)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf. ``result`` is the partial TrainResult (status "failed")."""

    def __init__(self, step: int, value: float, result: TrainResult):
        self.step, self.value, self.result = step, value, result
        super().__init__(result.stop_reason)


# -- schedule -----------------------------------------------------------------------------------

class LRSchedule:
    """Multiplier on the peak lr: linear warm-up, then cosine to ``min_lr_ratio``.

    ``frac_start``/``frac_end`` are the budget fractions used before/after the step. With
    ``warmup_frac`` the warm-up ends at that fraction (for a step budget: step s of S gets
    (s+1)/(warmup_frac*S)); with ``warmup_steps`` it ends after that many steps and the cosine
    runs over the rest of the budget.
    """

    def __init__(self, cfg: TrainConfig):
        self.warmup_steps = cfg.warmup_steps
        self.warmup_frac = cfg.warmup_frac
        self.min_ratio = cfg.min_lr_ratio
        self._warm_end = 0.0     # budget fraction where step warm-up ended

    def __call__(self, step: int, frac_start: float, frac_end: float) -> float:
        if self.warmup_steps is not None:
            if step < self.warmup_steps:
                self._warm_end = frac_end
                return (step + 1) / self.warmup_steps
            warm = self._warm_end
        else:
            warm = self.warmup_frac
            if frac_start < warm:
                return min(1.0, max(frac_end, 1e-9) / warm)
        t = min(1.0, max(0.0, (frac_start - warm) / max(1e-12, 1.0 - warm)))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


# -- one step -----------------------------------------------------------------------------------

def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed, and exempt. The exempt parameters are exactly those that
    ``no_weight_decay_names`` gives: each block's ``no_weight_decay()`` hook, and outside blocks
    the 1-D ones (norms). A weight shared under several names is exempt if any name is."""
    named = dict(model.named_parameters(remove_duplicate=False))
    exempt = {id(named[n]) for n in no_weight_decay_names(model)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if id(p) in exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device,
                   capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over ``weight_decay_groups``. ``capturable``: its step may be captured in a CUDA
    graph (CUDA only)."""
    return torch.optim.AdamW(weight_decay_groups(model, cfg.weight_decay), lr=cfg.lr,
                             betas=tuple(cfg.betas), eps=cfg.eps,
                             fused=device.type == "cuda", capturable=capturable)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               targets: torch.Tensor, cfg: TrainConfig, device: torch.device,
               graphed: bool = False, parallel: Parallel | None = None):
    """Forward, backward, clip, update. Returns detached (ce, aux, grad_norm before clipping).
    ``graphed``: the step is being captured in a CUDA graph. Nothing here reads a value on the
    host, so the whole step can be captured (given a model that does not either). ``parallel``:
    ``inputs``/``targets`` are this rank's shard; the returned losses are the global batch's."""
    optimizer.zero_grad(set_to_none=True)
    # torch advises against autocast's weight-cast cache inside graphs; the casts are the same
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda",
                        cache_enabled=not graphed):
        logits = (model if parallel is None else parallel.module)(inputs)   # DDP syncs grads
    flat = targets.reshape(-1)
    count = (flat != IGNORE).sum().clamp(min=1)       # a batch without targets gives 0, not NaN
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), flat,
                         ignore_index=IGNORE, reduction="sum")
    aux_fn = getattr(model, "aux_loss", None)
    aux = aux_fn().float() if aux_fn is not None else torch.zeros((), device=device)
    if parallel is None:
        ce = ce_term = ce / count
    else:                       # normalised by the global batch's target count (see distributed)
        ce, ce_term, aux_mean = parallel.reduce_loss(ce, (flat != IGNORE).sum(), aux)
    (ce_term + cfg.aux_loss_weight * aux).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if cfg.grad_clip is not None:
        # foreach (torch's default on CUDA, explicit for graphs): one launch, no host sync
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip,
                                                   foreach=device.type == "cuda" or None)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    optimizer.step()
    if parallel is not None:
        aux, grad_norm = aux_mean, parallel.local_value(grad_norm)
    return ce.detach(), aux.detach(), grad_norm.detach()


# -- evaluation ---------------------------------------------------------------------------------

def evaluate_tasks(model: nn.Module, tasks: Sequence[Task], device: torch.device, cfg: TrainConfig):
    """-> (metrics per label, score per label, quality)."""
    metrics = {t.label: t.evaluate(model, device, batch_size=cfg.eval_batch_size) for t in tasks}
    scores = {t.label: t.score(metrics[t.label]) for t in tasks}
    return metrics, scores, combine_quality(scores, cfg.task_weights)


def busy_time(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length of the union of (start, end) intervals: GPU time with overlaps counted once."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def _is_device_work(event) -> bool:
    """Kernels, copies and memsets on the GPU; not the GPU-side spans of user annotations (e.g.
    "Optimizer.step"), which cover gaps between kernels."""
    from torch.autograd import DeviceType
    if event.device_type != DeviceType.CUDA or getattr(event, "is_user_annotation", False):
        return False
    return "annotation" not in str(getattr(event, "activity_type", "") or "").lower()


def _kernel_share(prof, wall_s: float) -> float | None:
    """GPU-busy share of the profiled wall time: near 1 compute-bound, near 0 launch-bound."""
    spans = [(e.time_range.start, e.time_range.end) for e in prof.events() if _is_device_work(e)]
    if not spans or wall_s <= 0:
        return None
    return min(1.0, busy_time(spans) * 1e-6 / wall_s)   # profiler times are microseconds


# -- the loop -----------------------------------------------------------------------------------

@dataclass
class _Pending:
    """A step whose loss is still on the device: read it one step later, so the host can prepare
    the next batch while the GPU works instead of waiting on every step."""
    step: int
    label: str
    ce: torch.Tensor
    aux: torch.Tensor
    grad_norm: torch.Tensor
    lr: float


def train_model(model: nn.Module, tasks: Sequence[Task], cfg: TrainConfig,
                device: torch.device | str = "cpu",
                on_step: Callable[[int, int | None, float], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                parallel: Parallel | None = None) -> TrainResult:
    """Train ``model`` on ``tasks`` within ``cfg``'s budget; see the module docstring.
    ``parallel``: train data-parallel across ranks (hybridlab.search.distributed); call this on
    every rank with the same arguments."""
    device = torch.device(device)
    tasks = list(tasks)
    if not tasks:
        raise ValueError("train_model needs at least one task")
    labels = [t.label for t in tasks]
    if len(set(labels)) != len(labels):
        raise SpecError(Problem(f"task labels must be unique, got {labels}", field="tasks",
                                hint="give a repeated task its own label"))
    bad = [n for n, p in model.named_parameters() if p.is_floating_point() and p.dtype != torch.float32]
    if bad:
        raise ValueError(f"train_model expects fp32 parameters (bf16 comes from autocast); "
                         f"not fp32: {bad[:3]}")
    needed = required_vocab(tasks)
    if parallel is not None:
        if device != parallel.device:
            raise ValueError(f"train_model on {device}, but this rank's device is {parallel.device}")
        if cfg.batch_size < parallel.world_size:
            raise SpecError(Problem(
                f"batch_size {cfg.batch_size} cannot be split over {parallel.world_size} processes",
                field="train.batch_size", hint=f"use at least {parallel.world_size}"))
        if should_stop is not None:
            should_stop = parallel.rank0_decides(should_stop)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        return _Loop(model, tasks, cfg, device, on_step, should_stop, needed, parallel).run()


class _Loop:
    def __init__(self, model, tasks, cfg, device, on_step, should_stop, needed_vocab, parallel=None):
        self.model, self.tasks, self.cfg, self.device = model, tasks, cfg, device
        self.parallel = parallel
        self.on_step, self.should_stop, self.needed_vocab = on_step, should_stop, needed_vocab
        self.curves: dict[str, Curve] = {}
        self.schedule = LRSchedule(cfg)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        mean_tokens = sum(cfg.batch_size * t.tokens_per_example for t in tasks) / len(tasks)
        estimates = [cfg.steps] if cfg.steps else []
        if cfg.tokens:
            estimates.append(math.ceil(cfg.tokens / mean_tokens))
        self.total_steps = min(estimates) if estimates else None   # for progress bars only
        self.steps = self.tokens = 0
        self.train_s = self.eval_s = self.profile_s = self.warmup_s = 0.0
        self.profile_tokens = self.warmup_tokens = 0
        self.pending: _Pending | None = None
        self.kernel_share: float | None = None
        self.graphed: GraphedStep | None = None
        self.start = time.perf_counter()

    # budget fraction used after `steps` steps, `tokens` tokens and `seconds` of training
    def frac(self, steps: int, tokens: int, seconds: float) -> float:
        c = self.cfg
        parts = [steps / c.steps if c.steps else 0.0,
                 tokens / c.tokens if c.tokens else 0.0,
                 seconds / c.time_limit_s if c.time_limit_s else 0.0]
        return max(parts)

    def log(self, key: str, step: int, value: float):
        self.curves.setdefault(key, []).append((step, float(value)))

    def run(self) -> TrainResult:
        cfg, device, model = self.cfg, self.device, self.model
        self._check_vocab()
        model.train()
        graphs = device.type == "cuda" and cfg.cuda_graphs and env_allows_graphs() and \
            self.parallel is None       # data-parallel steps run eagerly
        if self.parallel is not None:
            self.parallel.wrap(model)   # before the optimizer: FSDP2 replaces the parameters
        optimizer = make_optimizer(model, cfg, device, capturable=graphs)
        if graphs:
            self.graphed = GraphedStep(optimizer, lambda i, t, graphed: train_step(
                model, optimizer, i, t, cfg, device, graphed=graphed), device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # budget fractions where an evaluation is due (with eval_every: every that many steps)
        eval_fracs = [] if cfg.eval_every else [k / cfg.eval_points for k in range(1, cfg.eval_points)]
        prune_pending = cfg.prune_at_frac is not None
        if prune_pending and not cfg.eval_every:
            eval_fracs = sorted(set(eval_fracs) | {cfg.prune_at_frac})
        profile_steps = self._profile_window()
        prof = None

        self.start = time.perf_counter()
        status, reason, last = "complete", "", None   # last: (metrics, scores, quality) at the stop
        last_frac_step = 0.0
        while True:
            self._same_clock()
            frac_now = self.frac(self.steps, self.tokens, self.train_s)
            if frac_now >= 1.0:
                reason = self._budget_reason()
                break
            if self.should_stop is not None and self.should_stop():
                status, reason = "stopped", f"stopped by request at step {self.steps}"
                break
            if profile_steps and self.steps == profile_steps[0]:
                prof = self._start_profiler()

            step_t0 = time.perf_counter()
            task = self.tasks[self.steps % len(self.tasks)]
            inputs, targets = task.train_batch(cfg.batch_size, self.data_gen)
            n_tokens = inputs.numel()
            # budget fraction after this step (time part: assume it costs what the last one did)
            frac_end = max(self.frac(self.steps + 1, self.tokens + n_tokens, self.train_s),
                           frac_now + last_frac_step)
            lr = cfg.lr * self.schedule(self.steps, frac_now, frac_end)
            ce, aux, gnorm = self._step(optimizer, inputs, targets, lr)
            previous, self.pending = self.pending, _Pending(self.steps, task.label, ce, aux, gnorm, lr)
            if previous is not None:
                self._record(previous)          # the previous step's loss: ready by now
            self.steps += 1
            self.tokens += n_tokens
            one_off = self.graphed is not None and self.graphed.one_off
            if self.steps <= WARMUP_STEPS or one_off:    # compiling or capturing: off the clock
                if device.type == "cuda" and (self.steps == WARMUP_STEPS or one_off):
                    torch.cuda.synchronize(device)     # no one-off work left to bleed into timing
                self.warmup_s += time.perf_counter() - step_t0
                self.warmup_tokens += n_tokens
            else:
                self.train_s += time.perf_counter() - step_t0

            if prof is not None and self.steps == profile_steps[1]:
                self._stop_profiler(prof)
                prof = None
            self._same_clock()
            frac_done = self.frac(self.steps, self.tokens, self.train_s)
            last_frac_step = max(0.0, frac_done - frac_now)
            if frac_done >= 1.0:
                continue                        # the final evaluation follows the loop
            due = bool(cfg.eval_every and self.steps % cfg.eval_every == 0) or \
                bool(eval_fracs and frac_done >= eval_fracs[0])
            if not due:
                continue
            while eval_fracs and frac_done >= eval_fracs[0]:
                eval_fracs.pop(0)
            self._flush()
            metrics, scores, quality = self._evaluate()
            if prune_pending and frac_done >= cfg.prune_at_frac:
                prune_pending = False
                why = self._chance_level(scores, frac_done)
                if why:
                    status, reason, last = "pruned", why, (metrics, scores, quality)
                    break
            if cfg.stop_at_quality is not None and quality >= cfg.stop_at_quality:
                reason = f"reached quality {quality:.4f} >= {cfg.stop_at_quality} at step {self.steps}"
                last = (metrics, scores, quality)
                break

        if prof is not None:                    # the run ended inside the profiling window
            self._stop_profiler(prof)
        self._flush()
        if last is None:
            last = self._evaluate()
        return self._result(status, reason, *last)

    def _step(self, optimizer, inputs, targets, lr: float):
        if self.graphed is not None:
            return self.graphed(inputs, targets, lr)    # copies the batch to the GPU itself
        for group in optimizer.param_groups:
            group["lr"] = lr
        if self.parallel is not None:                   # every rank drew the same global batch
            inputs, targets = self.parallel.shard(inputs, targets)
        return train_step(self.model, optimizer, inputs.to(self.device, non_blocking=True),
                          targets.to(self.device, non_blocking=True), self.cfg, self.device,
                          parallel=self.parallel)

    def _same_clock(self):
        """Data-parallel time budgets follow rank 0's clock, so every rank stops, evaluates and
        sets the learning rate at the same step."""
        if self.parallel is not None and self.cfg.time_limit_s:
            self.train_s, = self.parallel.agree(self.train_s)

    def _check_vocab(self):
        """Fail clearly (not with an index error deep in cross-entropy) if the vocab is too small.
        A HybridModel knows its vocab from its spec; any other model is probed once."""
        spec = getattr(self.model, "spec", None)
        vocab = getattr(getattr(spec, "model", None), "vocab_size", None)
        if vocab is None:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                 enabled=self.device.type == "cuda"):
                probe = torch.zeros(1, 8, dtype=torch.long, device=self.device)
                vocab = self.model(probe).shape[-1]
        if vocab < self.needed_vocab:
            raise ValueError(f"the model's vocabulary ({vocab}) is smaller than the "
                             f"{self.needed_vocab} tokens the tasks need (see required_vocab)")

    def _flush(self):
        """Read the pending step's loss (a device sync), counting the wait as training time."""
        if self.pending is None:
            return
        t0 = time.perf_counter()
        p, self.pending = self.pending, None
        self._record(p)
        self.train_s += time.perf_counter() - t0

    def _budget_reason(self) -> str:
        c = self.cfg
        used = []
        if c.steps and self.steps >= c.steps:
            used.append(f"{c.steps} steps")
        if c.tokens and self.tokens >= c.tokens:
            used.append(f"{c.tokens} tokens")
        if c.time_limit_s and self.train_s >= c.time_limit_s:
            used.append(f"{c.time_limit_s:g} s")
        return "budget used: " + ", ".join(used)

    def _record(self, p: _Pending):
        ce, aux, gnorm = float(p.ce), float(p.aux), float(p.grad_norm)
        loss = ce + self.cfg.aux_loss_weight * aux
        if not math.isfinite(loss):
            reason = f"failed: non-finite loss at step {p.step}"
            result = TrainResult("failed", reason, self.steps, self.tokens,
                                 time.perf_counter() - self.start, self.train_s, 0.0,
                                 self._peak_mem(), {}, {}, 0.0, self.curves)
            raise NonFiniteLoss(p.step, loss, result)
        self.log("train/loss", p.step, ce)
        self.log(f"train/{p.label}/loss", p.step, ce)
        if aux:
            self.log("train/aux_loss", p.step, aux)
        self.log("train/grad_norm", p.step, gnorm)
        self.log("lr", p.step, p.lr)
        if self.on_step is not None:
            self.on_step(p.step + 1, self.total_steps, ce)

    def _evaluate(self):
        t0 = time.perf_counter()
        metrics, scores, quality = evaluate_tasks(self.model, self.tasks, self.device, self.cfg)
        if self.parallel is not None:   # every rank evaluates (FSDP2 needs them); rank 0's count
            metrics, scores, quality = self.parallel.from_rank0((metrics, scores, quality))
        for label, m in metrics.items():
            for key, value in m.items():
                self.log(f"eval/{label}/{key}", self.steps, value)
            self.log(f"eval/{label}/score", self.steps, scores[label])
        self.log("eval/quality", self.steps, quality)
        self.model.train()
        self.eval_s += time.perf_counter() - t0
        return metrics, scores, quality

    def _chance_level(self, scores: dict[str, float], frac_done: float) -> str:
        """The prune message when every task is within the margin of chance, else ''."""
        at_chance = all(scores[t.label] <= t.chance + self.cfg.prune_margin for t in self.tasks)
        if not at_chance:
            return ""
        what = ", ".join(f"{t.label} {scores[t.label]:.3f} vs chance {t.chance:.3f}" for t in self.tasks)
        return f"pruned: chance-level accuracy ({what}) at {round(100 * frac_done)}% of budget"

    # -- CUDA launch-overhead measurement ----------------------------------------------------
    def _profile_window(self) -> tuple[int, int] | None:
        """Profile 5 steps after 5 warm-up steps, or once the graphs are captured (CUDA only, if
        the budget allows)."""
        if self.device.type != "cuda" or not self.cfg.measure_kernel_share:
            return None
        first = 5 if self.graphed is None else max(5, settled_step(len(self.tasks)))
        if self.total_steps is not None and self.total_steps < first + 7:
            return None
        return (first, first + 5)

    def _start_profiler(self):
        from torch.profiler import ProfilerActivity, profile
        self._flush()
        torch.cuda.synchronize(self.device)
        prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        try:
            prof.__enter__()
        except Exception as e:   # no CUPTI, another profiler active: train without the measurement
            warnings.warn(f"kernel time share not measured: {e!r}")
            return None
        self._profile_tokens0, self._profile_train0 = self.tokens, self.train_s
        self._profile_t0 = time.perf_counter()
        return prof

    def _stop_profiler(self, prof):
        self._flush()
        torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - self._profile_t0
        # profiled steps are slower; keep them out of the throughput
        self.profile_s += self.train_s - self._profile_train0
        self.profile_tokens += self.tokens - self._profile_tokens0
        try:
            prof.__exit__(None, None, None)
            self.kernel_share = _kernel_share(prof, wall)
        except Exception as e:   # the measurement must never cost the trial
            warnings.warn(f"kernel time share not measured: {e!r}")
            self.kernel_share = None

    def _peak_mem(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)   # bytes on macOS, KiB on Linux

    def _result(self, status, reason, metrics, scores, quality) -> TrainResult:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timed_s = self.train_s - self.profile_s
        timed_tokens = self.tokens - self.profile_tokens - self.warmup_tokens
        if timed_tokens <= 0 or timed_s <= 0:   # too few steps: the slower numbers are all we have
            timed_s, timed_tokens = self.train_s + self.warmup_s, self.tokens
        return TrainResult(
            status=status, stop_reason=reason, steps=self.steps, tokens=self.tokens,
            wall_s=time.perf_counter() - self.start, train_s=self.train_s,
            train_tokens_per_s=timed_tokens / timed_s if timed_s > 0 else 0.0,
            peak_mem_bytes=self._peak_mem(), scores=scores, metrics=metrics, quality=quality,
            curves=self.curves, kernel_time_share=self.kernel_share,
            cuda_graph=None if self.graphed is None else self.graphed.replays > 0,
            cuda_graph_fallback=None if self.graphed is None else self.graphed.fallback)
