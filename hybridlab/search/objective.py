"""One trial: sample a candidate, check it, train it (or reuse an identical one), measure it,
and record everything: one ``TrialRecord`` per trial, written through the store as the trial
goes (Optuna gets params, values, constraints, state and the few attributes optuna-dashboard
shows, made from the record in ``_record``).

    runner = TrialRunner(spec, store, device="cpu")
    study.optimize(runner, ...)

Outcomes, as Optuna states and ``hl_runs.status``:

* COMPLETE / complete: trained and measured; values in objective order. A constraint checked
  after training (e.g. ``quality_min``) may still mark it infeasible via ``set_constraint``.
* COMPLETE / complete + ``reused_from``: same architecture (``spec_hash``) and training settings
  as an earlier trial of the study: its values, metrics and files are copied, nothing is trained.
* PRUNED / infeasible: an analytic constraint (parameters, state bytes ... from the summary)
  is violated: recorded with its costs, never trained.
* PRUNED / invalid: the sampled candidate is not a valid model spec (reason recorded).
* PRUNED / pruned: the trainer stopped early (chance-level accuracy); reason recorded.
* FAIL / failed: an exception (non-finite loss, out of memory, a bug ...); reason recorded.
* FAIL / interrupted: Ctrl-C or a stop request; the driver re-queues the same parameters.
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import re
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from hybridlab.errors import SpecError
from hybridlab.interrupts import immediate
from hybridlab.search import space as space_mod
from hybridlab.search.spec import SearchSpec, cost_settings, make_train_config
from hybridlab.storage import Store, library_versions
from hybridlab.storage.artifacts import attach as attach_artifacts
from hybridlab.storage.record import (NOTE_KEYS, STORED_FIELDS, TrialRecord, dashboard_attrs,
                                      short_reason)
from hybridlab.storage.repository import trial_constraints


class CandidateInvalid(Exception):
    """The sampled model spec or training settings do not validate."""


def resolve_device(device: str | None) -> str:
    import torch
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return device


def device_label(device: str) -> str:
    """What ``hl_runs.device`` records: ``cpu``, or ``cuda:0 (NVIDIA H100 ..., CUDA_VISIBLE_DEVICES=3)``."""
    import os

    import torch
    if not device.startswith("cuda"):
        return device
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    label = f"cuda:{index} ({torch.cuda.get_device_name(index)}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return label + (f", CUDA_VISIBLE_DEVICES={visible})" if visible else ")")


def analytic_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Cost metrics known before training, from ``composer.summary.summarize``.

    ``state_bytes@C`` is everything one sequence keeps while decoding at context C: the
    recurrent state (SSM and conv state) plus the KV cache at C."""
    out = {k: float(summary[k]) for k in ("params_total", "params_active", "params_embedding",
                                          "params_non_embedding") if k in summary}
    out["recurrent_state_bytes"] = float(summary["state_bytes"])
    for c in summary.get("contexts", []):
        kv = float(summary["kv_bytes"][str(c)])
        out[f"kv_bytes@{c}"] = kv
        out[f"state_bytes@{c}"] = float(summary["state_bytes"]) + kv
        out[f"flops_per_token@{c}"] = float(summary["flops_per_token"][str(c)])
    return out


def train_hash(train: Mapping[str, Any], spec: SearchSpec) -> str:
    blob = json.dumps({"train": dict(train), "tasks": [dataclasses.asdict(t) for t in spec.tasks]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "study"


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) < 500 else text[:497] + "..."


class TrialRunner:
    """The Optuna objective. ``on_event(kind, **info)`` feeds progress displays:
    ``("start", number=)``, ``("step", number=, step=, total=, loss=)``,
    ``("end", number=, status=, reason=)``."""

    def __init__(self, spec: SearchSpec, store: Store, *, device: str = "auto",
                 worker: int | None = None,
                 on_event: Callable[..., None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 before_trial: Callable[[], None] | None = None,
                 save_artifacts: bool = True):
        self.spec = spec
        self.store = store
        self.device = resolve_device(device)
        self.worker = worker
        self.on_event = on_event or (lambda kind, **info: None)
        self.should_stop = should_stop
        self.before_trial = before_trial
        self.save_artifacts = save_artifacts
        self.current: optuna.Trial | None = None   # the trial in progress
        self.last_trial_id: int | None = None      # the latest trial this runner started
        self.device_lost: str | None = None        # set by a CUDA error that poisons the context
        self.versions = library_versions()
        self._last_db_update = 0.0
        self._rec = TrialRecord()                  # the record of the trial in progress
        self._shown: dict[str, Any] = {}           # its dashboard attributes written so far
        self._constraints: dict[str, float] = {}   # its constraint values so far

    # -- the record ------------------------------------------------------------------------
    def _record(self, trial: optuna.Trial, **fields) -> None:
        """Record part of the trial's ``TrialRecord``: in the store first (the source of
        truth; what is written stays if the worker dies), then the dashboard's attributes."""
        rec = self._rec
        for key, value in fields.items():
            if key in NOTE_KEYS:
                rec.notes[key] = value
            elif isinstance(getattr(rec, key), dict):
                getattr(rec, key).update(value)
            else:
                setattr(rec, key, value)
        stored = {k: v for k, v in fields.items() if k in STORED_FIELDS}
        if stored:
            self.store.update_record(trial._trial_id, **stored)
        for key, value in dashboard_attrs(rec).items():
            if key not in self._shown or self._shown[key] != value:
                trial.set_user_attr(key, value)
                self._shown[key] = value

    def _set_constraints(self, trial: optuna.Trial, values: Mapping[str, float]) -> None:
        """Set constraint values (Optuna 5 keys ``constraints:<key>``) and mirror them, in the
        spec's constraint order, into the legacy system attribute ``constraints`` that
        optuna-dashboard reads to show feasibility."""
        for key, value in values.items():
            if key not in self._constraints:
                trial.set_constraint(key, value)
                self._constraints[key] = float(value)
        order = [c.key for c in self.spec.constraints if c.key in self._constraints]
        order += [k for k in self._constraints if k not in order]
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints",
                                            [self._constraints[k] for k in order])

    # -- the objective ---------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial):
        if self.before_trial is not None:
            self.before_trial()      # e.g. release the study lock taken to start this trial
        self.current = trial
        self.last_trial_id = trial._trial_id
        self._rec, self._shown, self._constraints = TrialRecord(), {}, {}
        self.on_event("start", number=trial.number)
        t0 = time.monotonic()
        study_name = trial.study.study_name
        try:
            self.store.start_run(study_name=study_name, trial_id=trial._trial_id,
                                 trial_number=trial.number, device=device_label(self.device),
                                 worker=self.worker, versions=self.versions)
            values = self._run(trial, t0)
        except optuna.TrialPruned as e:
            self.on_event("end", number=trial.number, status="pruned", reason=str(e))
            raise
        except KeyboardInterrupt:
            reason = "interrupted (Ctrl-C or stop request); re-queued for the next run"
            self._record(trial, status="interrupted", failure_reason=reason,
                         wall_s=time.monotonic() - t0)
            self.on_event("end", number=trial.number, status="interrupted", reason=reason)
            raise
        except Exception as e:
            reason, expected = _failure_reason(e)
            if is_device_lost(e):
                # every later CUDA call in this process fails too: this worker must stop
                self.device_lost = reason
                reason += " (the CUDA context is lost: a fresh worker process takes over)"
            detail = reason if expected else \
                reason + "\n\n" + "".join(traceback.format_exception(e)[-6:])
            self._record(trial, status="failed", failure_reason=detail,
                         wall_s=time.monotonic() - t0)
            self.on_event("end", number=trial.number, status="failed", reason=reason)
            raise
        finally:
            self.current = None
            _free_memory()
        self.on_event("end", number=trial.number, status="complete", reason="")
        return values

    def _run(self, trial: optuna.Trial, t0: float):
        spec, store = self.spec, self.store
        tid = trial._trial_id
        values = space_mod.suggest(trial, spec.space)
        model_dict, train_settings, dropped = space_mod.apply(spec, values)
        if dropped:
            self._record(trial, dropped_fields=dropped)

        # 1. the candidate must be a valid model spec and training configuration
        try:
            model_spec, cfg = self._validate(model_dict, train_settings)
        except CandidateInvalid as e:
            reason = f"invalid candidate: {e}"
            self._record(trial, status="invalid", failure_reason=reason,
                         wall_s=time.monotonic() - t0)
            raise optuna.TrialPruned(reason) from None

        # 2. what it is, and what it costs before training
        from hybridlab.composer.canonical import dump_spec_yaml, spec_hash
        from hybridlab.composer.summary import summarize

        arch = spec_hash(model_spec)
        thash = train_hash(train_settings, spec)
        summary = summarize(model_spec, contexts=spec.contexts() or (4096,))
        analytic = analytic_metrics(summary)
        store.record_architecture(arch, name=model_spec.name, pattern=model_spec.pattern,
                                  n_layers=len(model_spec.layers),
                                  spec_yaml=dump_spec_yaml(model_spec),
                                  params_total=int(summary["params_total"]),
                                  params_active=int(summary["params_active"]))
        self._record(trial, arch_hash=arch, train_hash=thash, pattern=model_spec.pattern,
                     n_layers=len(model_spec.layers),
                     params_total=int(summary["params_total"]),
                     params_active=int(summary["params_active"]))

        # 3. analytic constraints: infeasible candidates are recorded, not trained
        violated = []
        self._set_constraints(trial, {c.key: c.violation(analytic[c.metric])
                                      for c in spec.constraints if c.analytic})
        for c in spec.constraints:
            if c.analytic:
                v = analytic[c.metric]
                if c.violation(v) > 0:
                    violated.append(f"{c.metric} = {v:.4g} {'>' if c.bound == 'max' else '<'} "
                                    f"{c.bound} {c.limit:.4g}")
        if violated:
            reason = "infeasible: " + "; ".join(violated)
            self._record(trial, costs=analytic, status="infeasible", failure_reason=reason,
                         wall_s=time.monotonic() - t0)
            raise optuna.TrialPruned(reason)

        # 4. the same architecture and training settings ran before: reuse its result
        source = store.find_reusable(trial.study.study_name, arch, thash, exclude_trial_id=tid)
        if source is not None:
            src = self._finished_source(trial, int(source["trial_number"]))
            if src is not None:
                return self._reuse(trial, source, src, t0)

        # 5. train, measure, record
        return self._train_and_measure(trial, model_spec, cfg, analytic, t0)

    def _validate(self, model_dict: dict, train_settings: dict):
        import hybridlab
        try:
            model_spec = hybridlab.load_spec(model_dict, source="<candidate>",
                                             allow_plugins=self.spec.allow_plugins)
        except SpecError as e:
            raise CandidateInvalid("; ".join(
                (f"{p.field}: " if p.field else "") + p.message for p in e.problems)) from None
        settings = dict(train_settings)
        weights = {t.label: t.weight for t in self.spec.tasks if t.weight != 1.0}
        if weights and "task_weights" not in settings:
            settings["task_weights"] = weights
        try:
            cfg = make_train_config(settings)
        except SpecError as e:
            raise CandidateInvalid("; ".join(
                (f"{p.field}: " if p.field else "") + p.message for p in e.problems)) from None
        except (TypeError, ValueError) as e:
            raise CandidateInvalid(f"training settings: {e}") from None
        return model_spec, cfg

    @staticmethod
    def _finished_source(trial: optuna.Trial, number: int, wait_s: float = 60.0):
        """The source trial once Optuna has its final state (another worker records its run a
        moment before telling Optuna); None if it did not end COMPLETE or PRUNED."""
        deadline = time.monotonic() + wait_s
        while True:
            src = trial.study.get_trials(deepcopy=False)[number]
            if src.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
                return src
            if src.state != optuna.trial.TrialState.RUNNING or time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    def _reuse(self, trial: optuna.Trial, source: dict, src, t0: float):
        """Copy the source trial's result (its record's numbers, curves and files, its
        constraints) into this trial's record."""
        store, tid = self.store, trial._trial_id
        number = int(source["trial_number"])
        self._set_constraints(trial, trial_constraints(src))
        store.copy_trial_records(source["trial_id"], tid)
        done = store.record(source["trial_id"]) or TrialRecord()
        rec = self._rec
        rec.scores, rec.costs, rec.train = dict(done.scores), dict(done.costs), dict(done.train)
        rec.artifacts, rec.seed = dict(done.artifacts), done.seed
        rec.notes.update({k: src.user_attrs[k] for k in ("stop_reason", "cuda_graph_fallback")
                          if k in src.user_attrs})
        if src.state == optuna.trial.TrialState.PRUNED or src.values is None:
            reason = f"reused trial {number}: {short_reason(done.failure_reason) or 'pruned'}"
            self._record(trial, reused_from=number, status="pruned", failure_reason=reason,
                         wall_s=time.monotonic() - t0)
            raise optuna.TrialPruned(reason)
        self._record(trial, reused_from=number, status="complete", failure_reason=None,
                     wall_s=time.monotonic() - t0)
        return list(src.values)

    def _train_and_measure(self, trial, model_spec, cfg, analytic, t0):
        import torch

        import hybridlab
        from hybridlab.search.cost import measure_costs
        from hybridlab.search.tasks import get_task
        from hybridlab.search.trainer import NonFiniteLoss, train_model

        spec, store, tid = self.spec, self.store, trial._trial_id
        tasks = [get_task(t.name, label=t.label if t.label != t.name else None, **t.settings)
                 for t in spec.tasks]
        torch.manual_seed(cfg.seed)
        model = hybridlab.build_model(model_spec, device=self.device)
        number = trial.number

        def on_step(step: int, total: int | None, loss: float) -> None:
            self.on_event("step", number=number, step=step, total=total, loss=loss)
            now = time.monotonic()
            if now - self._last_db_update > 2.0:
                self._last_db_update = now
                store.update_run(tid, step=int(step), total_steps=total)

        try:
            # the long parts of a trial: a stop signal interrupts them at once (the bookkeeping
            # around them runs deferred, see hybridlab/interrupts.py; Store writes always finish)
            with immediate():
                result = train_model(model, tasks, cfg, self.device, on_step=on_step,
                                     should_stop=self.should_stop)
        except NonFiniteLoss as e:
            self._record(trial, curves=e.result.curves)
            raise
        store.update_run(tid, step=result.steps)
        train_metrics = {
            "quality": result.quality,
            "train_tokens_per_s": result.train_tokens_per_s,
            "peak_mem_bytes": float(result.peak_mem_bytes),
            "train_wall_s": result.wall_s,
            "train_steps": float(result.steps),
            "train_tokens": float(result.tokens),
        }
        loss = result.curves.get("train/loss")
        if loss:
            train_metrics["final_loss"] = loss[-1][1]
        if result.kernel_time_share is not None:
            train_metrics["kernel_time_share"] = result.kernel_time_share
        if result.cuda_graph is not None:
            train_metrics["cuda_graph"] = float(result.cuda_graph)      # 1: steps replayed graphs
        notes = {"stop_reason": result.stop_reason}
        if result.cuda_graph_fallback:
            notes["cuda_graph_fallback"] = result.cuda_graph_fallback
        self._record(trial, curves=result.curves, seed=cfg.seed,
                     scores={k: float(v) for k, v in result.scores.items()},
                     train=train_metrics, **notes)

        if result.status == "stopped":
            raise KeyboardInterrupt(result.stop_reason)
        if result.status == "pruned":
            self._record(trial, costs=analytic, status="pruned",
                         failure_reason=result.stop_reason, wall_s=time.monotonic() - t0)
            raise optuna.TrialPruned(result.stop_reason)

        contexts = spec.contexts() or [4096]
        with immediate():
            measured = measure_costs(model, model_spec, self.device, contexts, **spec.cost)
        settings = set(cost_settings())
        costs = dict(analytic)
        costs.update({k: float(v) for k, v in measured.items() if k not in settings
                      and isinstance(v, (int, float)) and not isinstance(v, bool)})
        self._record(trial, costs=costs)

        metrics = {**costs, **train_metrics,
                   **{f"score/{k}": v for k, v in result.scores.items()}}
        self._set_constraints(trial, {c.key: c.violation(metrics[c.metric])
                                      for c in spec.constraints if not c.analytic})
        missing = [o.metric for o in spec.objectives if o.metric not in metrics]
        if missing:
            raise KeyError(f"metrics not measured: {missing} (measured: {sorted(metrics)})")
        values = [float(metrics[o.metric]) for o in spec.objectives]

        if self.save_artifacts:
            self._save_artifacts(trial, model, model_spec)
        self._record(trial, status="complete", wall_s=time.monotonic() - t0)
        return values

    def _save_artifacts(self, trial, model, model_spec) -> None:
        from safetensors.torch import save_model

        from hybridlab.composer.canonical import dump_spec_yaml
        study = trial.study.study_name
        # the study's shared folder, checked again each trial (a share unmounted mid-search)
        artifacts = attach_artifacts(self.store, study)
        folder = artifacts.make_trial_folder(study, trial.number)
        cpu_model = model.cpu() if self.device != "cpu" else model
        weights = artifacts.write(folder, "model.safetensors", lambda tmp: save_model(
            cpu_model, str(tmp), metadata={"study": study, "trial": str(trial.number)}))
        spec_file = artifacts.write(folder, "spec.yaml",
                                    lambda tmp: tmp.write_text(dump_spec_yaml(model_spec)))
        paths = {}
        for kind, path in (("weights", weights), ("spec", spec_file)):
            rec = self.store.add_artifact(trial_id=trial._trial_id,
                                          study_name=trial.study.study_name,
                                          trial_number=trial.number, kind=kind, path=path)
            paths[kind] = rec["path"]
        trial.set_user_attr("artifacts", paths)


def _failure_reason(e: BaseException) -> tuple[str, bool]:
    """(one-line reason, whether the failure is an expected kind that needs no traceback)."""
    from hybridlab.search.trainer import NonFiniteLoss
    if isinstance(e, NonFiniteLoss):
        return str(e).removeprefix("failed: "), True
    if _is_oom(e):
        return "out of memory: " + _short(e), True
    return _short(e), False


def _is_oom(e: BaseException) -> bool:
    import torch
    return isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or \
        "out of memory" in str(e).lower()


#: how torch ("CUDA error: ...") and Triton ("Triton Error [CUDA]: ...") word a CUDA error
_CUDA_ERROR_MARKS = ("CUDA error", "Error [CUDA]")


def is_device_lost(e: BaseException) -> bool:
    """A CUDA error other than out-of-memory (illegal memory access, launch failure, device-side
    assert ...): CUDA makes these sticky, so every later call in the process fails as well."""
    text = str(e)
    return any(m in text for m in _CUDA_ERROR_MARKS) and not _is_oom(e)


def _free_memory() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def artifact_dir(store: Store, study_name: str, number: int) -> Path:
    return store.artifact_root / safe_name(study_name) / f"trial-{number:05d}"
