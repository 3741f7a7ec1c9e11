"""Several worker processes on one study (``hybridlab search SPEC --workers N``).

Each worker is ``python -m hybridlab.search.workers JOB INDEX``: a fresh interpreter (no fork
of a process holding CUDA or database handles) that loads the same study and runs
``driver.work``. Worker i sees one GPU, ``CUDA_VISIBLE_DEVICES`` = the i-th visible GPU
round-robin (so N > GPUs puts several workers on one GPU); on the CPU each worker gets an equal
share of threads. The parent shows progress read from the database and waits for all of them.
Worker output goes to ``<artifacts>/<study>/logs/worker-<i>.log``.

A worker whose trial hit a context-poisoning CUDA error (an illegal memory access, say) records
that trial as failed and exits with ``EXIT_DEVICE_LOST``; the parent starts a fresh worker in its
place, at most ``MAX_RESTARTS`` times per worker, so one bad candidate cannot fail the rest.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hybridlab.errors import UserError
from hybridlab.interrupts import stop_on_signals  # noqa: F401  (the CLI imports it from here)
from hybridlab.interrupts import stop_requested
from hybridlab.search.driver import (EXIT_DEVICE_LOST, DeviceLost, default_workers_env,
                                     storage_for, trial_budget, work)
from hybridlab.search.objective import safe_name
from hybridlab.search.progress import NullProgress
from hybridlab.search.spec import SearchSpec
from hybridlab.storage import Store


#: fresh processes started in place of one worker that lost its CUDA context
MAX_RESTARTS = 3


class WorkerError(RuntimeError):
    pass


def visible_gpus(device: str = "auto") -> list[str]:
    if device == "cpu":
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def launch_workers(spec: SearchSpec, url: str, target: int, n_workers: int, *,
                   device: str = "auto", progress=None, save_artifacts: bool = True,
                   poll_s: float = 1.0) -> None:
    progress = progress or NullProgress()
    store = Store(url)
    log_dir = store.artifact_root / safe_name(spec.name) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", suffix=".job", dir=log_dir, delete=False) as f:
        pickle.dump({"spec": spec, "url": url, "target": target, "device": device,
                     "save_artifacts": save_artifacts}, f)
        job = f.name
    gpus = visible_gpus(device)

    def start(i: int) -> tuple[subprocess.Popen, Path]:
        env = default_workers_env(n_workers, i, gpus)
        log = log_dir / f"worker-{i}.log"
        with open(log, "ab") as out:
            p = subprocess.Popen([sys.executable, "-m", "hybridlab.search.workers", job, str(i)],
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
        return p, log

    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        procs.extend(start(i) for i in range(n_workers))
        restarts = _watch(spec, url, target, procs, progress, poll_s, restart=start)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    finally:
        try:
            os.unlink(job)
        except OSError:
            pass
    # a worker that lost its CUDA context and was not replaced (nothing was left to start) is fine
    bad = [(i, p.returncode, log) for i, (p, log) in enumerate(procs) if p.returncode != 0
           and not (p.returncode == EXIT_DEVICE_LOST and restarts[i] < MAX_RESTARTS)]
    if any(rc == 130 for _, rc, _ in bad):
        raise KeyboardInterrupt
    if bad:
        i, rc, log = bad[0]
        why = " (its CUDA context was lost too often)" if rc == EXIT_DEVICE_LOST else ""
        if rc == 2:                     # a user error: the worker printed its message last
            why = f" ({_last_line(log)})"
        raise WorkerError(f"worker {i} exited with status {rc}{why}; see {log}")


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:500] if lines else "no output"


def _watch(spec, url, target, procs, progress, poll_s, restart) -> list[int]:
    """Show progress until every worker has exited; ``restart(i)`` replaces worker i after it
    lost its CUDA context, while the study still has trials to start. Returns the restarts."""
    import optuna
    store = Store(url, readonly=True)
    study = optuna.load_study(study_name=spec.name, storage=storage_for(spec, url))
    restarts = [0] * len(procs)
    while True:
        for i, (p, log) in enumerate(procs):
            if (p.poll() == EXIT_DEVICE_LOST
                    and restarts[i] < MAX_RESTARTS and trial_budget(study, target).can_start):
                restarts[i] += 1
                progress.message(f"worker {i} lost its CUDA context; starting a fresh one "
                                 f"({restarts[i]}/{MAX_RESTARTS})")
                procs[i] = restart(i)
        alive = [p for p, _ in procs if p.poll() is None]
        try:
            progress.set_done(trial_budget(study, target).counted)
            progress.running(sorted((r for r in store.runs(spec.name).values()
                                     if r["status"] == "running"),
                                    key=lambda r: r["trial_number"]))
        except Exception as e:         # a display hiccup must never stop the search
            progress.message(f"(progress unavailable: {type(e).__name__})")
        if not alive:
            return restarts
        if stop_requested():             # a signal whose KeyboardInterrupt was swallowed
            raise KeyboardInterrupt
        time.sleep(poll_s)


def _stop(procs) -> None:
    """Ctrl-C: the workers usually got SIGINT from the terminal too. Give them a moment to record
    their interrupted trials, then signal the ones still running, then wait."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.poll() is None for p, _ in procs):
        time.sleep(0.1)
    for p, _ in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGINT)
            except OSError:
                pass
    deadline = time.monotonic() + 60
    for p, _ in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path, index = argv[0], int(argv[1])
    with open(job_path, "rb") as f:
        job = pickle.load(f)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with stop_on_signals():
            ran = work(job["spec"], job["url"], job["target"], device=job["device"],
                       worker=index, save_artifacts=job["save_artifacts"])
    except KeyboardInterrupt:
        print(f"worker {index}: interrupted", flush=True)
        return 130
    except DeviceLost as e:
        print(f"worker {index}: CUDA context lost ({e}); exiting for a fresh worker", flush=True)
        return EXIT_DEVICE_LOST
    except UserError as e:          # a damaged database, say: its message, not a traceback
        print(f"worker {index}: " + "\n".join(e.lines()), flush=True)
        return 2
    print(f"worker {index}: ran {ran} trials", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
