"""Failures on the CPU: a trial that raises, goes NaN or runs out of memory is recorded with its
reason and the search goes on; invalid candidates are pruned; Ctrl-C stops cleanly and resumes;
a worker killed with SIGKILL is failed by the heartbeat check, retried, and the study finishes
with nothing lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import torch

import hybridlab.search.trainer as trainer_mod
from hybridlab.cli.main import main
from hybridlab.search.driver import prepare_study, run_search
from hybridlab.search.spec import load_search_spec
from hybridlab.search.workers import MAX_RESTARTS, WorkerError, launch_workers
from hybridlab.storage import Store
from hybridlab.storage.engine import dispose_engines
from test_search import TINY, tiny_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

GRID8 = {"blocks.M.type": {"choice": ["mamba1", "mamba2"]},
         "blocks.M.d_state": {"choice": [2, 4]},
         'layout.mix."*"': {"choice": [0, 1]}}


@pytest.fixture(autouse=True)
def _fresh_engines():
    yield
    dispose_engines()


def scripted_trainer(monkeypatch, script):
    """Replace train_model: call i does script[i] ('real', an exception, or a callable)."""
    real = trainer_mod.train_model
    calls = []

    def fake(model, tasks, cfg, device="cpu", on_step=None, should_stop=None):
        action = script[len(calls)] if len(calls) < len(script) else "real"
        calls.append(action)
        if action == "real":
            return real(model, tasks, cfg, device, on_step=on_step, should_stop=should_stop)
        if callable(action) and not isinstance(action, BaseException):
            return action(real(model, tasks, cfg, device, on_step=on_step,
                               should_stop=should_stop))
        raise action

    monkeypatch.setattr(trainer_mod, "train_model", fake)
    return real


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'f.db'}"

    def prune(result):
        result.status, result.stop_reason = "pruned", "pruned: chance-level accuracy (test)"
        return result

    scripted_trainer(monkeypatch, [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        ValueError("boom"),
        prune,
        "real",
    ])
    spec = tiny_spec(tmp_path, name="fails", space=GRID8, sampler={"name": "grid"}, trials=5)
    report = run_search(spec, db=db)
    ui = Store(db, readonly=True)
    rows = ui.trials("fails")
    assert [r["state"] for r in rows[:4]] == ["FAIL", "FAIL", "PRUNED", "COMPLETE"]
    assert rows[0]["failure_reason"].startswith("out of memory: ")
    assert rows[0]["user_attrs"]["fail_reason"].startswith("out of memory")
    assert rows[1]["failure_reason"].startswith("ValueError: boom")
    assert "Traceback" in rows[1]["failure_reason"] or "File " in rows[1]["failure_reason"]
    assert rows[2]["status"] == "pruned" and "chance-level" in rows[2]["failure_reason"]
    assert ui.series(rows[2]["trial_id"])["train/loss"]          # its curves are kept
    assert rows[4]["state"] == "COMPLETE"                          # the search went on
    assert report.counts == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 2, "RUNNING": 0, "WAITING": 0}
    runs = ui.runs("fails")
    assert {runs[r["trial_id"]]["status"] for r in rows[:2]} == {"failed"}


ILLEGAL_ACCESS = "CUDA error: an illegal memory access was encountered"


@pytest.mark.parametrize("text, lost", [
    ("CUDA error: an illegal memory access was encountered", True),          # torch
    ("Triton Error [CUDA]: an illegal memory access was encountered", True),  # Triton's launcher
    ("CUDA error: unspecified launch failure", True),
    ("CUDA out of memory. Tried to allocate 2.00 GiB", False),                # recoverable
    ("CUDA error: out of memory", False),
    ("shapes do not match", False),
])
def test_which_errors_lose_the_cuda_context(text, lost):
    from hybridlab.search.objective import is_device_lost
    assert is_device_lost(RuntimeError(text)) is lost


def test_a_lost_cuda_context_fails_one_trial_and_a_fresh_process_finishes(tmp_path, monkeypatch):
    """After an illegal memory access every CUDA call in the process fails: the in-process search
    records that trial and carries on in a fresh worker process, instead of failing the rest."""
    db = f"sqlite:///{tmp_path / 'lost.db'}"
    scripted_trainer(monkeypatch, [RuntimeError(ILLEGAL_ACCESS)])
    spec = tiny_spec(tmp_path, name="lost", space=GRID8, sampler={"name": "grid"}, trials=3)
    report = run_search(spec, db=db)
    rows = Store(db, readonly=True).trials("lost")
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "illegal memory access" in rows[0]["failure_reason"]
    assert "fresh worker process" in rows[0]["user_attrs"]["fail_reason"]
    assert {r["worker"] for r in Store(db, readonly=True).runs("lost").values()} == {0}
    assert report.counts["COMPLETE"] == 2 and report.counts["FAIL"] == 1


def _poisoning_worker(tmp_path, monkeypatch, once: bool) -> None:
    """Make worker 0's trainer raise an illegal memory access: in its first process only (once)
    or in every process. A sitecustomize loaded by the worker interpreters does it."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "marker = os.environ.get('HL_TEST_MARKER')\n"
        "if marker and os.environ.get('HYBRIDLAB_WORKER') == '0' and not os.path.exists(marker):\n"
        f"    open(marker, 'w').close() if {once!r} else None\n"
        "    import hybridlab.search.trainer as t\n"
        "    def boom(*a, **k):\n"
        f"        raise RuntimeError({ILLEGAL_ACCESS!r})\n"
        "    t.train_model = boom\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HL_TEST_MARKER", str(tmp_path / "poisoned-once"))


def _launch_one_worker(tmp_path, name, trials):
    db = f"sqlite:///{tmp_path / (name + '.db')}"
    spec = load_search_spec(tiny_spec(tmp_path, name=name, space=GRID8,
                                      sampler={"name": "grid"}, trials=trials))
    prepare_study(spec, Store(db), trials)
    log = tmp_path / f"{name}-artifacts" / name / "logs" / "worker-0.log"
    return spec, db, log


def test_a_worker_that_lost_its_cuda_context_is_replaced(tmp_path, monkeypatch):
    _poisoning_worker(tmp_path, monkeypatch, once=True)
    spec, db, log = _launch_one_worker(tmp_path, "swap", 3)
    launch_workers(spec, db, 3, 1)
    rows = Store(db, readonly=True).trials("swap")
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "illegal memory access" in rows[0]["failure_reason"]
    text = log.read_text()
    assert "CUDA context lost" in text and "worker 0: ran 2 trials" in text   # the fresh one


def test_a_worker_that_keeps_losing_its_context_stops_the_search(tmp_path, monkeypatch):
    _poisoning_worker(tmp_path, monkeypatch, once=False)
    spec, db, log = _launch_one_worker(tmp_path, "doomed", 8)
    with pytest.raises(WorkerError, match="CUDA context was lost too often"):
        launch_workers(spec, db, 8, 1)
    rows = Store(db, readonly=True).trials("doomed")         # 1 + MAX_RESTARTS processes tried,
    assert [r["state"] for r in rows] == ["FAIL"] * (1 + MAX_RESTARTS)      # one trial each
    assert log.read_text().count("CUDA context lost") == 1 + MAX_RESTARTS


def test_a_real_nan_is_a_failed_trial(tmp_path):
    db = f"sqlite:///{tmp_path / 'n.db'}"
    train = dict(TINY["train"], lr=1.0e30, grad_clip=None)
    spec = tiny_spec(tmp_path, name="nan", train=train, trials=1)
    run_search(spec, db=db)
    row = Store(db, readonly=True).trials("nan")[0]
    assert row["state"] == "FAIL" and row["status"] == "failed"
    assert row["failure_reason"].startswith("non-finite loss at step")
    assert Store(db, readonly=True).series(row["trial_id"])["train/loss"]  # curves up to it


def test_invalid_candidates_are_pruned_with_the_reason(tmp_path):
    db = f"sqlite:///{tmp_path / 'i.db'}"
    spec = tiny_spec(tmp_path, name="invalid", space={"blocks.M.headdim": {"choice": [8, 7]}},
                     sampler={"name": "grid"}, trials=2)
    run_search(spec, db=db)
    rows = {r["params"]["blocks.M.headdim"]: r for r in Store(db, readonly=True).trials("invalid")}
    assert rows[8]["state"] == "COMPLETE"
    assert rows[7]["state"] == "PRUNED" and rows[7]["status"] == "invalid"
    assert "invalid candidate" in rows[7]["failure_reason"]
    assert "headdim" in rows[7]["failure_reason"]


def test_ctrl_c_stops_cleanly_and_the_interrupted_trial_runs_again(tmp_path, monkeypatch, capsys):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    spec = tiny_spec(tmp_path, name="ctrlc", space=GRID8, sampler={"name": "random", "seed": 1},
                     trials=3)
    real = scripted_trainer(monkeypatch, ["real", KeyboardInterrupt()])
    assert main(["search", spec, "--db", db, "--no-progress"]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    study = optuna.load_study(study_name="ctrlc", storage=db)
    t = study.trials
    assert [x.state.name for x in t] == ["COMPLETE", "FAIL", "WAITING"]
    assert Store(db, readonly=True).run(t[1]._trial_id)["status"] == "interrupted"
    assert t[2].params == t[1].params and t[2].system_attrs["failed_trial"] == 1
    kept = t[0].values

    monkeypatch.setattr(trainer_mod, "train_model", real)
    report = run_search(spec, db=db)
    study = optuna.load_study(study_name="ctrlc", storage=db)
    assert [x.state.name for x in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[0].values == kept and study.trials[2].params == t[1].params
    assert report.ran == 2


def _wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_trial_then_heartbeat_retry_and_resume(tmp_path):
    db = f"sqlite:///{tmp_path / 'kill.db'}"
    train = dict(TINY["train"], steps=100000, time_limit_s=3.0)
    spec = tiny_spec(tmp_path, name="killed", space=GRID8, sampler={"name": "random", "seed": 2},
                     train=train, trials=3, heartbeat={"interval_s": 1, "grace_s": 2})
    cmd = [sys.executable, "-m", "hybridlab.cli.main", "search", spec, "--db", db, "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        def one_done_one_running():
            runs = Store(db, readonly=True).runs("killed")
            done = [r for r in runs.values() if r["status"] == "complete"]
            running = [r for r in runs.values() if r["status"] == "running"
                       and r.get("step") is not None]
            return len(done) == 1 and len(running) == 1
        _wait_for(one_done_one_running, 240, "a finished trial and one mid-training")
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    dispose_engines()
    study = optuna.load_study(study_name="killed", storage=db)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    kept = study.trials[0].values
    killed_params = study.trials[1].params

    report = run_search(spec, db=db)              # the same search again: resume
    study = optuna.load_study(study_name="killed", storage=db)
    trials = study.trials
    assert trials[0].state.name == "COMPLETE" and trials[0].values == kept   # nothing lost
    assert trials[1].state.name == "FAIL"          # failed by the heartbeat check
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].params == killed_params and \
        retry[0].state.name == "COMPLETE"          # re-run by RetryHeartbeatStaleTrialCallback
    assert [t.state.name for t in trials].count("COMPLETE") == 3 and len(trials) == 4
    run = Store(db, readonly=True).run(trials[1]._trial_id)
    assert run["status"] == "failed" and "heartbeat" in run["failure_reason"]
    assert report.counts["COMPLETE"] == 3


def test_a_trial_failed_as_stale_while_it_ran_does_not_crash_its_worker(tmp_path, monkeypatch):
    """Another worker may fail a live trial as stale (its heartbeat came late on a busy machine);
    Optuna then cannot record the result it returns (its tell fails, and Optuna's own bookkeeping
    ends in an AssertionError). The worker carries on with the next trial."""
    from hybridlab.search.objective import TrialRunner
    db = f"sqlite:///{tmp_path / 'stale.db'}"
    real_call = TrialRunner.__call__
    calls = []

    def call(self, trial):
        values = real_call(self, trial)
        calls.append(trial.number)
        if len(calls) == 1:           # finished by someone else just before Optuna records it
            trial.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        return values

    monkeypatch.setattr(TrialRunner, "__call__", call)
    spec = tiny_spec(tmp_path, name="stale", space=GRID8, sampler={"name": "grid"}, trials=3)
    run_search(spec, db=db)
    states = [r["state"] for r in Store(db, readonly=True).trials("stale")]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]
    assert calls == [0, 1, 2]
