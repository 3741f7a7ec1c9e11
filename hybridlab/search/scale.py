"""``hybridlab scale``: does the proxy's ranking hold at a larger scale?

    result = scale_study("sqlite:///hybridlab.db", "search-quick", top=8, d_model=512,
                         layers=12, steps=3000)
    result.agreement.spearman, result.stays, result.scaled_front

1. **Choose** the proxy study's top ``top`` feasible completed trials by quality (or, with
   ``front=True``, its Pareto front). A trial that reused an earlier one (same architecture and
   training) is skipped, and of several trials of one architecture the earliest counts, so each
   layout counts once.
2. **Stretch** each layout to ``d_model`` and ``layers`` mixer layers with
   ``hybridlab.export.layout.scale_spec`` (same mixers, same ratio and placement: Composer's
   "stack and stretch"). The vocabulary grows to what the tasks need (256 bytes for text).
3. **Train** each for ``steps`` steps on ``tasks`` (byte-level LM on the Python standard
   library's source by default), ``seeds`` times (seed i sets the init and the batch order),
   never pruned; ``nproc``: data-parallel across that many processes (``search.distributed``).
4. **Record** a linked study (``storage.linked``), ``<study>@scale-d<D>-l<L>`` unless ``name``
   says otherwise: one trial per layout, valued (mean quality, parameters, state bytes), with
   per-seed qualities, scores, curves and seed 0's weights, and user attributes naming its proxy
   trial. Running it again resumes: layouts already scaled are not trained again.
5. **Report** (``scale_report.ScaleResult``): Spearman and Kendall agreement of the proxy and
   scaled quality rankings with bootstrap intervals, which proxy-front members stay on the
   scaled front, and the scaled front (quality against parameters and state bytes).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence

import yaml

from hybridlab.composer.canonical import dump_spec_yaml, spec_hash
from hybridlab.composer.loader import load_spec
from hybridlab.composer.summary import summarize
from hybridlab.errors import Problem, SpecError, StoreError
from hybridlab.export.layout import scale_spec
from hybridlab.export.source import load_stored_spec
from hybridlab.search import distributed
from hybridlab.search.objective import analytic_metrics
from hybridlab.search.scale_report import ScaleResult, build_result
from hybridlab.search.scale_run import fail_stale, run_jobs, scaled_arches
from hybridlab.search.tasks import get_task, required_vocab
from hybridlab.search.trainer import TrainConfig
from hybridlab.storage import Store, StudyLock, open_linked_study, printable, resolve_url
from hybridlab.storage.artifacts import attach as attach_artifacts
from hybridlab.storage.artifacts import required as required_artifacts
from hybridlab.storage.linked import KIND_ATTR, PROXY_ATTR, SETTINGS_ATTR
from hybridlab.storage.locks import LockTimeout

CLI = "<command line>"
#: rank correlations need at least this many layouts
MIN_LAYOUTS = 3
#: the default task: byte-level text, the standard library's own source
DEFAULT_TASKS = (("bytes_lm", {}),)
DEFAULT_CONTEXT = 4096


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One proxy layout and its stretched form (plain data: it travels to the ranks)."""
    proxy_trial: int
    proxy_arch: str
    proxy_pattern: str
    proxy_quality: float
    on_proxy_front: bool
    name: str
    pattern: str
    arch_hash: str
    spec_yaml: str
    n_layers: int
    costs: dict
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ScalePlan:
    url: str
    proxy_study: str
    study_name: str
    selection: str                          # "top 8" or "front"
    d_model: int
    layers: int
    steps: int
    seeds: int
    batch_size: int
    lr: float
    eval_points: int
    tasks: tuple                            # ((name, {settings}), ...)
    context: int                            # of the state-bytes axis
    candidates: tuple[Candidate, ...]
    skipped: tuple[str, ...] = ()

    @property
    def state_metric(self) -> str:
        return f"state_bytes@{self.context}"

    @property
    def metric_names(self) -> list[str]:
        return ["quality", "params_total", self.state_metric]

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize", "minimize"]

    def settings(self) -> dict:
        """What every trial of the linked study is measured with (lists only: JSON round trip)."""
        return {"d_model": self.d_model, "layers": self.layers, "steps": self.steps,
                "seeds": self.seeds, "batch_size": self.batch_size, "lr": self.lr,
                "eval_points": self.eval_points, "context": self.context,
                "tasks": [[name, dict(s)] for name, s in self.tasks]}

    def train_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True, default=str)
                              .encode()).hexdigest()

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=seed,
                           eval_points=self.eval_points, prune_at_frac=None)


def linked_name(study: str, d_model: int, layers: int) -> str:
    return f"{study}@scale-d{d_model}-l{layers}"


def _cli_error(message: str, field: str, hint: str = "") -> SpecError:
    return SpecError(Problem(message, file=CLI, field=field, hint=hint))


def _check_sizes(top, front, d_model, layers, steps, seeds, batch_size, lr, eval_points,
                 nproc) -> None:
    problems = []
    for flag, value in (("--d-model", d_model), ("--layers", layers), ("--steps", steps),
                        ("--seeds", seeds), ("--batch-size", batch_size),
                        ("--eval-points", eval_points)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(Problem(f"must be a positive integer, got {value!r}", file=CLI,
                                    field=flag))
    if top is not None and front:
        problems.append(Problem("give --top K or --front, not both", file=CLI, field="--top"))
    if top is not None and (not isinstance(top, int) or top < MIN_LAYOUTS):
        problems.append(Problem(f"must be at least {MIN_LAYOUTS}, got {top!r}", file=CLI,
                                field="--top", hint="rank correlations need 3 layouts or more"))
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        problems.append(Problem(f"must be > 0, got {lr!r}", file=CLI, field="--lr"))
    if nproc is not None and batch_size is not None and isinstance(nproc, int) and \
            isinstance(batch_size, int) and batch_size < nproc:
        problems.append(Problem(f"--batch-size {batch_size} cannot be split over {nproc} "
                                "processes", file=CLI, field="--batch-size",
                                hint=f"use at least {nproc}"))
    if problems:
        raise SpecError(problems)


def _build_tasks(tasks):
    """Validated task objects from ``[(name, settings), ...]`` (errors point at --task)."""
    try:
        return [get_task(name, **dict(settings)) for name, settings in tasks]
    except SpecError as e:
        raise SpecError([dataclasses.replace(p, file=CLI, field=p.field or "--task")
                         for p in e.problems]) from None


# -- choosing the layouts -------------------------------------------------------------------------
def proxy_quality(row: Mapping) -> float | None:
    """A trial row's quality: the objective, else what the trainer recorded."""
    for value in (row["values"].get("quality"), (row.get("user_attrs") or {}).get("quality"),
                  (row.get("metrics") or {}).get("train/quality")):
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            return v
    return None


def choose(store: Store, study: str, *, top: int | None, front: bool):
    """-> (chosen trial rows best first, proxy-front architecture hashes, notes on skipped
    trials). Raises a user error when fewer than 3 distinct layouts can be ranked."""
    rows = store.trials(study, states=["COMPLETE"])         # UnknownStudy names the studies
    front_arches = {r["arch_hash"] for r in store.pareto(study) if r.get("arch_hash")}
    skipped, seen, layouts = [], {}, []
    for r in sorted(rows, key=lambda r: r["number"]):
        if r.get("reused_from") is not None:
            skipped.append(f"trial {r['number']} reuses trial {r['reused_from']}")
            continue
        arch, quality = r.get("arch_hash"), proxy_quality(r)
        if not arch or quality is None or not r.get("feasible", True):
            continue
        if arch in seen:
            skipped.append(f"trial {r['number']} has the architecture of trial {seen[arch]}")
            continue
        seen[arch] = r["number"]
        layouts.append((quality, r))
    if front:
        layouts = [(q, r) for q, r in layouts if r["arch_hash"] in front_arches]
    layouts.sort(key=lambda qr: (-qr[0], qr[1]["number"]))
    what = "layouts on its Pareto front" if front else "distinct feasible completed layouts"
    if len(layouts) < MIN_LAYOUTS:
        raise _cli_error(
            f"study {printable(study)!r} has {len(layouts)} {what}; ranking needs at least "
            f"{MIN_LAYOUTS}", "--front" if front else "--study",
            hint="let the search finish more trials (hybridlab search SPEC --trials N)"
                 + ("" if not front else ", or choose by quality with --top K"))
    if top is not None:
        layouts = layouts[:top]
    return [r for _, r in layouts], front_arches, skipped


def state_context(metric_names: Sequence[str]) -> int:
    """The context of the proxy's state-bytes objective (``state_bytes@1024`` -> 1024)."""
    for name in metric_names:
        m = re.fullmatch(r"(?:state_bytes|kv_bytes)@(\d+)", name)
        if m:
            return int(m.group(1))
    return DEFAULT_CONTEXT


def stretch(store: Store, study: str, row: Mapping, *, d_model: int, layers: int,
            vocab: int, context: int, on_front: bool) -> Candidate:
    """The proxy trial's layout rebuilt at ``d_model`` x ``layers`` (export/layout.py)."""
    number = int(row["number"])
    arch = store.architecture(row["arch_hash"]) or {}
    spec = load_stored_spec(
        arch.get("spec_yaml") or "", f"<{study} trial {number}>",
        where=f"the spec of trial {number} of study {study!r}", origin="a database",
        then="run the scale from Python: hybridlab.search.scale.scale_study(...)")
    where = f"<trial {number} at d_model {d_model}, {layers} layers>"
    try:
        text, info = scale_spec(spec, d_model, layers)
        doc = yaml.safe_load(text)
        notes = list(info["notes"])
        if int(doc["model"]["vocab_size"]) < vocab:
            notes.append(f"vocab_size {doc['model']['vocab_size']} -> {vocab} (the tasks' tokens)")
            doc["model"]["vocab_size"] = int(vocab)
        scaled = load_spec(yaml.safe_dump(doc, sort_keys=False), source=where)
    except SpecError as e:
        raise SpecError([dataclasses.replace(p, file=where, hint=p.hint or
                         "choose another --d-model or --layers") for p in e.problems]) from None
    costs = analytic_metrics(summarize(scaled, contexts=(context,)))
    return Candidate(proxy_trial=number, proxy_arch=row["arch_hash"],
                     proxy_pattern=row.get("pattern") or spec.pattern,
                     proxy_quality=float(proxy_quality(row)), on_proxy_front=on_front,
                     name=scaled.name, pattern=scaled.pattern, arch_hash=spec_hash(scaled),
                     spec_yaml=dump_spec_yaml(scaled), n_layers=len(scaled.layers),
                     costs=costs, notes=tuple(notes))


def plan_scale(store: Store, study: str, *, top: int | None = None, front: bool = False,
               d_model: int, layers: int, steps: int, tasks=None, seeds: int = 1,
               batch_size: int = 32, lr: float = 1e-3, eval_points: int = 4,
               name: str | None = None, nproc: int | None = None) -> ScalePlan:
    """Check everything, choose and stretch the layouts; trains nothing."""
    _check_sizes(top, front, d_model, layers, steps, seeds, batch_size, lr, eval_points, nproc)
    if top is None and not front:
        top = 8
    tasks = tuple((str(n), dict(s or {})) for n, s in (tasks or DEFAULT_TASKS))
    vocab = required_vocab(_build_tasks(tasks))
    try:
        TrainConfig(steps=steps, batch_size=batch_size, lr=lr, eval_points=eval_points,
                    prune_at_frac=None)
    except SpecError as e:
        raise SpecError([dataclasses.replace(p, file=CLI) for p in e.problems]) from None
    meta = store.load_study(study)                          # UnknownStudy lists the studies
    context = state_context(list(meta.metric_names or []))
    rows, front_arches, skipped = choose(store, study, top=top, front=front)
    candidates = tuple(stretch(store, study, r, d_model=d_model, layers=layers, vocab=vocab,
                               context=context, on_front=r["arch_hash"] in front_arches)
                       for r in rows)
    return ScalePlan(url=store.url, proxy_study=study,
                     study_name=name or linked_name(study, d_model, layers),
                     selection=_selection(front, top, len(rows)), d_model=d_model,
                     layers=layers, steps=steps, seeds=seeds, batch_size=batch_size,
                     lr=float(lr), eval_points=eval_points, tasks=tasks, context=context,
                     candidates=candidates, skipped=tuple(skipped))


def _selection(front: bool, top: int | None, chosen: int) -> str:
    if front:
        return "front"
    return f"top {top}" if chosen == top else f"all {chosen} (top {top} asked)"


# -- running it ---------------------------------------------------------------------------------
def scale_study(db: str | Store | None, study: str, *, top: int | None = None,
                front: bool = False, d_model: int, layers: int, steps: int, tasks=None,
                seeds: int = 1, nproc: int | None = None, device: str = "auto",
                batch_size: int = 32, lr: float = 1e-3, eval_points: int = 4,
                name: str | None = None, save_weights: bool = True,
                artifacts: str | os.PathLike | None = None,
                progress: bool = False) -> ScaleResult:
    """Choose, stretch, train and record the layouts of ``study`` that are not scaled yet, then
    report on all of them (see the module docstring). ``tasks``: ``[(name, {settings})]``.
    ``artifacts``: the folder for seed 0's weights (as ``hybridlab search --artifacts``; needed
    with a server database unless ``HYBRIDLAB_ARTIFACTS`` is set). User errors raise
    ``UserError``s; a failed rank under ``nproc`` raises ``distributed.RankFailed`` (the rank
    printed why)."""
    if nproc is not None:
        distributed.check_nproc(nproc, device)
    # a server database needs a shared artifact folder: refused before anything is touched
    url = db.url if isinstance(db, Store) else resolve_url(db)
    root = required_artifacts(url, artifacts) if save_weights else None
    store = db if isinstance(db, Store) else Store(url)
    plan = plan_scale(store, study, top=top, front=front, d_model=d_model, layers=layers,
                      steps=steps, tasks=tasks, seeds=seeds, batch_size=batch_size, lr=lr,
                      eval_points=eval_points, name=name, nproc=nproc)
    # held for the whole run: a second scale of the same study fails at once, and a trial left
    # running when it is free is one whose process died (the study's own lock stays free for
    # the short writes that take it)
    run_lock = StudyLock(store.url, f"{plan.study_name} (scale run)", timeout_s=2.0)
    try:
        run_lock.acquire()
    except LockTimeout:
        raise StoreError(f"another 'hybridlab scale' is writing study "
                         f"{printable(plan.study_name)!r}; wait for it to finish (or stop it), "
                         f"then run this again to resume") from None
    try:
        with StudyLock(store.url, plan.study_name):
            linked = open_linked_study(
                store, plan.study_name, proxy=study, kind="scale", directions=plan.directions,
                metric_names=plan.metric_names, settings=plan.settings())
        if root is not None:        # record the folder on the study, or check it is the same
            attach_artifacts(store, plan.study_name, root)
        previous = linked.user_attrs.get("hybridlab_trials") or 0
        if len(plan.candidates) > previous:
            linked.set_user_attr("hybridlab_trials", len(plan.candidates))
        fail_stale(store, linked)
        done = scaled_arches(linked)
        todo = [c for c in plan.candidates if c.proxy_arch not in done]
        if todo and nproc is not None:
            distributed.run_ranks(nproc, _rank_jobs, plan, todo, device, root, progress)
        elif todo:
            run_jobs(plan, todo, device=device, artifacts=root, progress=progress)
    finally:
        run_lock.release()
    return build_result(store, plan, trained=[c.proxy_trial for c in todo])


def _rank_jobs(plan: ScalePlan, todo, device: str, artifacts, progress: bool) -> int:
    """One rank of a data-parallel scale (started by ``run_ranks``)."""
    parallel = distributed.Parallel.from_env(device)
    try:
        run_jobs(plan, todo, device=device, parallel=parallel, artifacts=artifacts,
                 progress=progress)
    finally:
        parallel.close()
    return 0


# -- reading one back --------------------------------------------------------------------------
def read_scale(store: Store, name: str) -> ScaleResult:
    """The report of the linked scale study ``name`` from what it stores: trains and writes
    nothing (a read-only ``Store`` will do: the UI's path). Its layouts are those the study
    holds; front membership is the proxy study's current front."""
    attrs = store.load_study(name).user_attrs             # UnknownStudy names the studies
    proxy, settings = attrs.get(PROXY_ATTR), attrs.get(SETTINGS_ATTR) or {}
    if not proxy or attrs.get(KIND_ATTR) != "scale":
        raise StoreError(f"study {printable(name)!r} is not a scale of another study (made by "
                         f"'hybridlab scale'); pick a study named '<study>@scale-...'")
    front = {r["arch_hash"] for r in store.pareto(proxy) if r.get("arch_hash")}
    speaking = {}
    for r in sorted(store.trials(name), key=lambda r: r["number"]):
        ua = r.get("user_attrs") or {}
        arch = ua.get("proxy_arch_hash")
        if arch and r["state"] in ("COMPLETE", "FAIL") and \
                speaking.get(arch, {}).get("state") != "COMPLETE":
            speaking[arch] = r
    candidates = []
    for arch, r in speaking.items():
        ua = r["user_attrs"]
        candidates.append(Candidate(
            proxy_trial=int(ua["proxy_trial"]), proxy_arch=arch,
            proxy_pattern=ua.get("proxy_pattern", ""), proxy_quality=float(ua["proxy_quality"]),
            on_proxy_front=arch in front, name="", pattern=ua.get("pattern", ""),
            arch_hash=ua.get("arch_hash", ""), spec_yaml="", n_layers=int(ua.get("n_layers", 0)),
            costs=dict(ua.get("costs") or {}), notes=tuple(ua.get("scale_notes") or ())))
    candidates.sort(key=lambda c: (-c.proxy_quality, c.proxy_trial))
    plan = ScalePlan(
        url=store.url, proxy_study=proxy, study_name=name,
        selection=f"all {len(candidates)} stored", d_model=settings.get("d_model", 0),
        layers=settings.get("layers", 0), steps=settings.get("steps", 0),
        seeds=settings.get("seeds", 1), batch_size=settings.get("batch_size", 0),
        lr=settings.get("lr", 0.0), eval_points=settings.get("eval_points", 0),
        tasks=tuple((n, dict(s)) for n, s in settings.get("tasks", [])),
        context=int(settings.get("context", DEFAULT_CONTEXT)), candidates=tuple(candidates))
    return build_result(store, plan)
