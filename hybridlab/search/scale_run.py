"""Training and recording the layouts of a ``hybridlab scale`` (see ``search.scale``).

``run_jobs`` trains each stretched layout ``plan.seeds`` times and records it as one trial of the
linked study: values (mean quality, parameters, state bytes), scalars (``score/<task>`` and
``train/...`` as means over seeds, ``seed<i>/quality``, ``cost/...``), curves (seed 0 under the
usual names, seed i under ``seed<i>/...``), seed 0's weights and spec as artifacts, and user
attributes naming the proxy trial. Under ``nproc`` every rank runs it; rank 0 alone writes.

A layout whose training fails (non-finite loss, out of memory) is recorded as a failed trial with
its reason and the others go on (a later run tries it again); under ``nproc`` only a non-finite
loss does that (every rank sees the same loss), other errors stop the run. Ctrl-C records the
trial in progress as interrupted, then stops.
"""
from __future__ import annotations

import gc
import statistics
import sys
import time

import optuna
import torch

from hybridlab.composer.builder import build_model
from hybridlab.composer.loader import load_spec
from hybridlab.interrupts import immediate, stop_requested
from hybridlab.search.objective import device_label, resolve_device
from hybridlab.search.tasks import get_task
from hybridlab.search.trainer import NonFiniteLoss, train_model
from hybridlab.storage import Store, library_versions
from hybridlab.storage.artifacts import attach as attach_artifacts

STALE_REASON = ("the scale process stopped (killed or lost) before this layout finished; "
                "running the same command again trains it again")


def scaled_arches(study) -> set[str]:
    """Proxy architectures the linked study already holds a completed trial of."""
    return {t.user_attrs.get("proxy_arch_hash") for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE}


def fail_stale(store: Store, study) -> None:
    """Trials left RUNNING by a scale process that died (call under the study's lock)."""
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            t_id = t._trial_id
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            store.finish_run(t_id, "failed", failure_reason=STALE_REASON)


class _Bar:
    """tqdm over the training runs (layouts x seeds), the running step in the postfix."""

    def __init__(self, name: str, total: int):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, unit="run", desc=f"scale {name}", dynamic_ncols=True,
                        file=sys.stderr, smoothing=0.0)
        self._last = 0.0

    def step(self, what: str, step: int, total: int | None, loss: float) -> None:
        now = time.monotonic()
        if now - self._last < 0.5:
            return
        self._last = now
        where = f"{step}/{total}" if total else str(step)
        self.bar.set_postfix_str(f"{what}: step {where} loss {loss:.3f}", refresh=True)

    def done(self) -> None:
        self.bar.update(1)

    def message(self, text: str) -> None:
        self.bar.write(text, file=self.bar.fp)

    def close(self) -> None:
        self.bar.close()


class _Recorder:
    """Rank 0's writes: one linked-study trial per layout."""

    def __init__(self, plan, device: torch.device):
        self.plan = plan
        self.store = Store(plan.url)
        self.study = self.store.load_study(plan.study_name)
        self.device_text = device_label(str(device))
        self.versions = library_versions()

    def start(self, cand):
        store, plan = self.store, self.plan
        trial = self.study.ask()
        tid = trial._trial_id
        store.start_run(study_name=plan.study_name, trial_id=tid, trial_number=trial.number,
                        device=self.device_text, versions=self.versions)
        costs = cand.costs
        store.record_architecture(cand.arch_hash, name=cand.name, pattern=cand.pattern,
                                  n_layers=cand.n_layers, spec_yaml=cand.spec_yaml,
                                  params_total=int(costs["params_total"]),
                                  params_active=int(costs["params_active"]))
        store.update_run(tid, arch_hash=cand.arch_hash, train_hash=plan.train_hash(),
                         total_steps=plan.steps)
        for key, value in (("proxy_study", plan.proxy_study), ("proxy_trial", cand.proxy_trial),
                           ("proxy_arch_hash", cand.proxy_arch),
                           ("proxy_quality", cand.proxy_quality),
                           ("proxy_pattern", cand.proxy_pattern), ("pattern", cand.pattern),
                           ("arch_hash", cand.arch_hash), ("n_layers", cand.n_layers),
                           ("params_total", int(costs["params_total"])),
                           ("params_active", int(costs["params_active"])),
                           ("costs", costs), ("scale_notes", list(cand.notes))):
            trial.set_user_attr(key, value)
        return trial, time.monotonic()

    def seed_done(self, trial, seed: int, result) -> None:
        prefix = "" if seed == 0 else f"seed{seed}/"
        self.store.add_series(trial._trial_id, {prefix + k: v for k, v in result.curves.items()})
        self.store.update_run(trial._trial_id, step=result.steps)

    def save_weights(self, trial, model, spec_yaml: str, root) -> None:
        from safetensors.torch import save_model

        study = self.plan.study_name
        # the study's folder, checked again for each layout (a share unmounted mid-run)
        artifacts = attach_artifacts(self.store, study, root)
        folder = artifacts.make_trial_folder(study, trial.number)
        cpu_model = model.to("cpu")
        weights = artifacts.write(folder, "model.safetensors", lambda tmp: save_model(
            cpu_model, str(tmp), metadata={"study": study, "trial": str(trial.number)}))
        spec_file = artifacts.write(folder, "spec.yaml", lambda tmp: tmp.write_text(spec_yaml))
        paths = {}
        for kind, path in (("weights", weights), ("spec", spec_file)):
            rec = self.store.add_artifact(trial_id=trial._trial_id, study_name=study,
                                          trial_number=trial.number, kind=kind, path=path)
            paths[kind] = rec["path"]
        trial.set_user_attr("artifacts", paths)

    def finish(self, trial, t0: float, cand, results) -> None:
        store, plan, tid = self.store, self.plan, trial._trial_id
        qualities = [float(r.quality) for r in results]
        mean = statistics.fmean(qualities)
        spread = statistics.stdev(qualities) if len(qualities) > 1 else 0.0
        scores = {label: statistics.fmean(float(r.scores[label]) for r in results)
                  for label in results[0].scores}
        train = {"quality": mean, "quality_std": spread, "seeds": float(len(results)),
                 "train_tokens_per_s": statistics.fmean(r.train_tokens_per_s for r in results),
                 "peak_mem_bytes": float(max(r.peak_mem_bytes for r in results)),
                 "train_wall_s": sum(r.wall_s for r in results),
                 "train_steps": float(results[0].steps), "train_tokens": float(results[0].tokens)}
        losses = [r.curves["train/loss"][-1][1] for r in results if r.curves.get("train/loss")]
        if losses:
            train["final_loss"] = statistics.fmean(losses)
        store.set_scalars(tid, {f"score/{k}": v for k, v in scores.items()}, kind="score")
        store.set_scalars(tid, {f"train/{k}": v for k, v in train.items()}, kind="train")
        store.set_scalars(tid, {f"seed{i}/quality": q for i, q in enumerate(qualities)},
                          kind="seed")
        store.set_scalars(tid, {f"cost/{k}": v for k, v in cand.costs.items()}, kind="cost")
        for key, value in (("quality", mean), ("quality_std", spread),
                           ("quality_seeds", qualities), ("scores", scores),
                           ("train_steps", int(results[0].steps)),
                           ("stop_reason", results[0].stop_reason)):
            trial.set_user_attr(key, value)
        store.finish_run(tid, "complete", wall_s=time.monotonic() - t0)
        self.study.tell(trial, [mean, float(cand.costs["params_total"]),
                                float(cand.costs[plan.state_metric])])

    def failed(self, trial, t0: float, status: str, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason)
        self.store.finish_run(trial._trial_id, status, failure_reason=reason,
                              wall_s=time.monotonic() - t0)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _train_once(spec, tasks, cfg, device, parallel, on_step, should_stop):
    """-> (TrainResult, model) for one seed."""
    torch.manual_seed(cfg.seed)                          # the model's init
    place = device if parallel is None else parallel.build_device(
        build_model(spec, device="meta").num_parameters())
    model = build_model(spec, device=place)
    with immediate():              # a stop signal interrupts the training itself at once
        result = train_model(model, tasks, cfg, device, on_step=on_step,
                             should_stop=should_stop, parallel=parallel)
    return result, model


def run_jobs(plan, todo, *, device: str = "auto", parallel=None, artifacts=None,
             progress: bool = False) -> int:
    """Train and record each candidate of ``todo``; -> how many completed. ``artifacts``: the
    folder for seed 0's weights (None: not kept)."""
    dev = parallel.device if parallel is not None else torch.device(resolve_device(device))
    rank0 = parallel is None or parallel.is_rank0
    tasks = [get_task(name, **dict(settings)) for name, settings in plan.tasks]
    rec = _Recorder(plan, dev) if rank0 else None
    bar = _Bar(plan.study_name, len(todo) * plan.seeds) if progress and rank0 else None
    completed = 0
    try:
        for cand in todo:
            spec = load_spec(cand.spec_yaml, source=f"<scaled trial {cand.proxy_trial}>")
            trial, t0 = rec.start(cand) if rank0 else (None, 0.0)
            results = []
            try:
                for seed in range(plan.seeds):
                    what = f"#{cand.proxy_trial} seed {seed}"

                    def on_step(step, total, loss, what=what):
                        if bar is not None:
                            bar.step(what, step, total, loss)

                    result, model = _train_once(spec, tasks, plan.train_config(seed), dev,
                                                parallel, on_step, stop_requested)
                    if result.status == "stopped":
                        raise KeyboardInterrupt(result.stop_reason)
                    if rank0:
                        rec.seed_done(trial, seed, result)
                    if seed == 0 and artifacts is not None:
                        _save_weights(rec, trial, model, spec, cand.spec_yaml, parallel,
                                      artifacts)
                    results.append(result)
                    del model
                    if bar is not None:
                        bar.done()
            except KeyboardInterrupt:
                if rank0:
                    rec.failed(trial, t0, "interrupted", "interrupted (Ctrl-C or stop request); "
                               "run the same command again to train this layout")
                raise
            except NonFiniteLoss as e:
                if rank0:
                    prefix = f"seed{len(results)}/" if results else ""
                    rec.store.add_series(trial._trial_id,
                                         {prefix + k: v for k, v in e.result.curves.items()})
                    rec.failed(trial, t0, "failed", f"{e} (seed {len(results)})")
                    if bar is not None:
                        bar.message(f"#{cand.proxy_trial}: {e}")
                continue
            except Exception as e:
                if rank0:
                    rec.failed(trial, t0, "failed", f"{type(e).__name__}: {e}"[:500])
                    if bar is not None:
                        bar.message(f"#{cand.proxy_trial} failed: {type(e).__name__}: {e}")
                if parallel is not None:
                    raise               # the ranks may disagree on where they are: stop
                continue
            finally:
                _free_memory()
            if rank0:
                rec.finish(trial, t0, cand, results)
            completed += 1
    finally:
        if bar is not None:
            bar.close()
    return completed


def _free_memory() -> None:
    """Between layouts: the next one may be as large, and an OOM's tensors must go."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _save_weights(rec, trial, model, spec, spec_yaml: str, parallel, root) -> None:
    """Seed 0's weights (``rec`` is None on ranks other than 0). With FSDP2 every rank takes
    part in gathering them; rank 0 writes."""
    if parallel is not None and parallel.sharded:
        weights = parallel.full_state_dict(model)          # a collective: every rank
        if rec is None:
            return
        model = build_model(spec, device="cpu")
        model.load_state_dict(weights)
    if rec is not None:
        rec.save_weights(trial, model, spec_yaml, root)
