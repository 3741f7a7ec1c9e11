"""Run a search: create (or resume) the Optuna study and work through its trial budget.

    report = run_search("examples/search-quick.yaml", db="sqlite:///hybridlab.db")

* The study lives in the database (``RDBStorage`` with heartbeats): running the same search
  again resumes it and only runs what is left; several processes (``workers=N``) or machines
  (same ``--db`` URL and study name) share it.
* The budget is ``trials`` finished trials (COMPLETE + PRUNED + FAIL). A trial whose worker died
  (no heartbeat for ``grace_s``) is marked FAIL and re-queued with the same parameters by
  Optuna's ``RetryHeartbeatStaleTrialCallback``; an interrupted trial (Ctrl-C) is re-queued the
  same way. Either way the original does not count, its retry does.
* Workers take a short per-study lock to count the budget and start a trial, so a study never
  runs more than ``trials`` trials, however many workers share it. The study is created under
  the same lock (and the tables under the database's schema lock), so processes started at
  once on a new database all succeed.
* Every worker -- a process of ``--workers N``, or another ``hybridlab search`` joining the
  study -- samples with its own seed: the spec's seed plus the number of workers that joined
  the study before it (a random seed without one), so no two draw the same candidates. Each
  trial records it as the user attributes ``sampler_seed`` and ``sampler_join``.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hybridlab.errors import Problem, SpecError
from hybridlab.interrupts import deferred, stop_requested
from hybridlab.search.objective import TrialRunner
from hybridlab.search.progress import NullProgress, TqdmProgress
from hybridlab.search.space import make_sampler
from hybridlab.search.spec import SearchSpec, load_search_spec
from hybridlab.storage import Store, StudyLock, display_url, optuna_storage
from hybridlab.storage.artifacts import attach as attach_artifacts
from hybridlab.storage.artifacts import required as required_artifacts
from hybridlab.storage.health import translated
from hybridlab.storage.repository import counted_finished


class DeviceLost(RuntimeError):
    """A trial hit a CUDA error that poisons this process's context (its trial is recorded as
    failed). The process must stop; a fresh one can carry on with the study."""


#: a worker's exit status after DeviceLost: the launcher starts a fresh worker in its place
EXIT_DEVICE_LOST = 75


@dataclasses.dataclass
class Budget:
    target: int
    counted: int        # finished trials that count (COMPLETE + PRUNED + FAIL, retried excluded)
    running: int
    waiting: int

    @property
    def can_start(self) -> bool:
        return self.counted + self.running < self.target


@dataclasses.dataclass
class SearchReport:
    study_name: str
    url: str
    target: int
    counts: dict
    ran: int                       # trials this call ran
    best: dict = dataclasses.field(default_factory=dict)
    pareto: list = dataclasses.field(default_factory=list)


def trial_budget(study: optuna.Study, target: int) -> Budget:
    trials = study.get_trials(deepcopy=False)
    counted = counted_finished(trials)
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    return Budget(target, counted, running, waiting)


def storage_for(spec: SearchSpec, url: str):
    hb = spec.heartbeat
    return optuna_storage(url, heartbeat_interval=hb.interval_s, grace_period=hb.grace,
                          max_retry=hb.max_retry)


def prepare_study(spec: SearchSpec, store: Store, target: int) -> optuna.Study:
    """Create the study or check that the existing one is this search; enqueue baselines.
    Under the study lock: processes starting together create it (and its baselines) once."""
    with translated(store.url), StudyLock(store.url, spec.name):
        return _prepare_study(spec, store, target)


def _prepare_study(spec: SearchSpec, store: Store, target: int) -> optuna.Study:
    storage = storage_for(spec, store.url)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(
        storage, include_best_trial=False)}.get(spec.name)
    if existing is not None:
        directions = [d.name.lower() for d in existing.directions]
        fingerprint = existing.user_attrs.get("hybridlab_fingerprint")
        if directions != spec.directions or (fingerprint and fingerprint != spec.fingerprint()):
            what = "objectives" if directions != spec.directions else \
                "base spec, space, tasks, training settings or objectives"
            raise SpecError(Problem(
                f"study {spec.name!r} already exists in {display_url(store.url)} with different "
                f"{what}", file=spec.source or "<search spec>", field="name",
                hint="resuming needs the same search; give this one a new name, or use another "
                     "--db"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(storage=storage, study_name=spec.name,
                                    directions=spec.directions,
                                    sampler=make_sampler(spec.sampler, spec.space),
                                    load_if_exists=True)
        if list(study.metric_names or []) != spec.metric_names:
            study.set_metric_names(spec.metric_names)
    attrs = study.user_attrs
    wanted = {"hybridlab_fingerprint": spec.fingerprint(), "hybridlab_trials": int(target),
              "hybridlab_spec": spec.text, "hybridlab_base": spec.base_source or "(inline)"}
    for key, value in wanted.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)
    for params in spec.baselines:
        study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
    return study


def requeue(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
    """Queue the parameters of an interrupted trial again (as Optuna's retry callback does for
    stale ones): the retry carries ``failed_trial`` / ``retry_history`` system attributes."""
    history = list(frozen.system_attrs.get("retry_history", [])) + [frozen.number]
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
        system_attrs={"failed_trial": frozen.system_attrs.get("failed_trial", frozen.number),
                      "retry_history": history}))


def reconcile_runs(study: optuna.Study, store: Store) -> None:
    """hl_runs rows still 'running' whose Optuna trial was failed by the heartbeat check."""
    runs = store.runs(study.study_name)
    stale = [r for r in runs.values() if r["status"] == "running"]
    if not stale:
        return
    states = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
    retried_by: dict[int, int] = {}
    for t in states.values():
        for n in t.system_attrs.get("retry_history", []) or []:
            retried_by[n] = t.number
    for r in stale:
        t = states.get(r["trial_id"])
        if t is not None and t.state == TrialState.FAIL:
            again = retried_by.get(t.number)
            reason = ("the worker stopped sending heartbeats (killed or lost); marked failed by "
                      "the heartbeat check" + (f", retried as trial {again}" if again is not None
                                               else ""))
            store.finish_run(r["trial_id"], "failed", failure_reason=reason)


#: study system attribute counting the workers that joined the study
JOINS_ATTR = "hybridlab_joins"


def join_study(storage, study_name: str) -> int:
    """This worker's join number: 0 for the first worker ever to join the study, then 1, 2...
    Call under the study lock."""
    study_id = storage.get_study_id_from_name(study_name)
    joined = int(storage.get_study_system_attrs(study_id).get(JOINS_ATTR, 0) or 0)
    storage.set_study_system_attr(study_id, JOINS_ATTR, joined + 1)
    return joined


def worker_seed(base: int | None, join: int) -> int:
    """The sampler seed of the ``join``-th worker: the spec's seed for the first (a search
    run once, by one process, draws as its seed says), then the next ones; without a seed in
    the spec, a fresh random one (recorded, like any other)."""
    if base is None:
        return int.from_bytes(os.urandom(4), "little")
    return (int(base) + int(join)) % 2**32


def _recording_seed(runner, seed: int, join: int):
    """The objective Optuna calls: records the worker's seed on the trial, then runs it."""
    def objective(trial):
        trial.set_user_attr("sampler_seed", seed)
        trial.set_user_attr("sampler_join", join)
        return runner(trial)
    return objective


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def work(spec: SearchSpec, url: str, target: int, *, device: str = "auto",
         worker: int | None = None, progress=None, stop: threading.Event | None = None,
         save_artifacts: bool = True) -> int:
    """One worker: start trials while the budget allows, until the study is done.

    Returns the number of trials this worker ran. Raises KeyboardInterrupt after recording an
    interrupted trial (and re-queueing it), ``StoreError`` when the database fails."""
    with translated(url):
        return _work(spec, url, target, device=device, worker=worker, progress=progress,
                     stop=stop, save_artifacts=save_artifacts)


def _work(spec: SearchSpec, url: str, target: int, *, device: str, worker: int | None,
          progress, stop: threading.Event | None, save_artifacts: bool) -> int:
    progress = progress or NullProgress()
    _cpu_threads(device)
    store = Store(url)
    storage = storage_for(spec, url)
    lock = StudyLock(url, spec.name)
    with lock:                           # every worker, here or elsewhere, draws differently
        join = join_study(storage, spec.name)
    seed = worker_seed(spec.sampler.seed, join)
    sampler_cfg = dataclasses.replace(spec.sampler, seed=seed)
    study = optuna.load_study(study_name=spec.name, storage=storage,
                              sampler=make_sampler(sampler_cfg, spec.space))
    def should_stop() -> bool:          # polled by the trainer every step
        return stop_requested() or (stop is not None and stop.is_set())

    runner = TrialRunner(spec, store, device=device, worker=worker,
                         on_event=progress.event, should_stop=should_stop,
                         before_trial=lock.release, save_artifacts=save_artifacts)
    objective = _recording_seed(runner, seed, join)
    poll = max(0.5, min(5.0, spec.heartbeat.interval_s))
    ran = 0
    while not (stop is not None and stop.is_set()):
        if stop_requested():            # a signal whose KeyboardInterrupt was swallowed
            raise KeyboardInterrupt
        lock.acquire()
        try:
            _fail_stale(study)
            reconcile_runs(study, store)
            budget = trial_budget(study, target)
            progress.set_done(budget.counted)
            if budget.can_start:
                runner.last_trial_id = None
                try:
                    # a stop signal during Optuna's own bookkeeping (ask, tell) waits for it to
                    # finish; the runner lets it interrupt the training itself at once
                    with deferred():
                        study.optimize(objective, n_trials=1, catch=(Exception,))
                    if stop_requested():
                        raise KeyboardInterrupt
                except KeyboardInterrupt:
                    _requeue_interrupted(study, runner.last_trial_id)
                    raise
                except Exception:
                    # Optuna could not record the result because another worker had already
                    # failed this trial as stale (its heartbeat came late on a busy machine)
                    # and queued its retry: the retry counts, this worker carries on.
                    if not _taken_over(study, runner.last_trial_id):
                        raise
                ran += 1
                if runner.device_lost:
                    raise DeviceLost(runner.device_lost)
                continue
        finally:
            lock.release()
        if budget.running == 0:
            break
        time.sleep(poll)                 # others still running: wait for them (or their retries)
    progress.set_done(trial_budget(study, target).counted)
    return ran


def _taken_over(study, trial_id: int | None) -> bool:
    """Whether this worker's last trial was finished by someone else (failed as stale)."""
    if trial_id is None:
        return False
    state = study._storage.get_trial(trial_id).state
    return state == TrialState.FAIL


def _cpu_threads(device: str) -> None:
    """Small models on the CPU run fastest (and share the machine best) with few threads:
    OMP_NUM_THREADS if set (workers get an equal share), else half the cores."""
    from hybridlab.search.objective import resolve_device
    if resolve_device(device) != "cpu":
        return
    import torch
    env = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(env) if env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)


def _requeue_interrupted(study: optuna.Study, trial_id: int | None) -> None:
    if trial_id is None:
        return
    for t in study.get_trials(deepcopy=False):
        if t._trial_id == trial_id and t.state == TrialState.FAIL:
            requeue(study, t)


def run_search(spec: SearchSpec | str | Path, *, db: str | None = None, workers: int = 1,
               trials: int | None = None, device: str = "auto", progress: bool = False,
               save_artifacts: bool = True) -> SearchReport:
    """Create or resume the study and run it to ``trials`` finished trials.

    ``workers > 1`` starts that many worker processes (one GPU each, round-robin over the
    visible GPUs). Raises KeyboardInterrupt on Ctrl-C after everything is recorded."""
    if not isinstance(spec, SearchSpec):
        spec = load_search_spec(spec)
    target = int(trials or spec.trials)
    # a server database needs a shared artifact folder: refused before anything is created
    artifacts_root = required_artifacts(db) if save_artifacts else None
    store = Store(db)
    study = prepare_study(spec, store, target)
    if save_artifacts:              # record the folder on the study, or check it is the same
        attach_artifacts(store, spec.name, artifacts_root)
    start_counted = trial_budget(study, target).counted
    bar = TqdmProgress(spec.name, target, start_counted) if progress else NullProgress()
    try:
        from hybridlab.search.workers import launch_workers
        if workers <= 1:
            try:
                work(spec, store.url, target, device=device, worker=0, progress=bar,
                     save_artifacts=save_artifacts)
            except DeviceLost as e:     # this process can no longer use CUDA: go on in a fresh one
                bar.message(f"CUDA context lost ({e}); continuing in a fresh worker process")
                launch_workers(spec, store.url, target, 1, device=device, progress=bar,
                               save_artifacts=save_artifacts)
        else:
            launch_workers(spec, store.url, target, workers, device=device, progress=bar,
                           save_artifacts=save_artifacts)
    finally:
        bar.close()
    return search_report(spec.name, store, target, ran=trial_budget(study, target).counted
                         - start_counted)


def search_report(study_name: str, store: Store, target: int | None = None,
                  ran: int = 0) -> SearchReport:
    summary = store.study_summary(study_name)
    return SearchReport(study_name=study_name, url=store.url,
                        target=int(target or summary.get("target_trials") or 0),
                        counts=summary["counts"], ran=ran, best=summary["best"],
                        pareto=store.pareto(study_name))


def default_workers_env(n_workers: int, index: int, gpus: list[str],
                        base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for worker ``index``: its GPU (round-robin over ``gpus``) and, unless the
    caller set OMP_NUM_THREADS, an equal share of the CPU cores."""
    env = dict(base if base is not None else os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
    env["HYBRIDLAB_WORKER"] = str(index)
    return env
