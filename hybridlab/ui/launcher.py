"""Searches started from the web page run in their own process, never in the web server:

    python -m hybridlab.cli.main search SPEC --db URL [--trials N] ...

``Launcher.start`` validates the search spec first (the same ``load_search_spec`` as the CLI,
with every path confined to the page's roots and plugins refused), writes it to a file, and
starts that process in a new session with its output in a log file, unbuffered, with its
progress bar and a line per finished trial (``log_tail`` keeps the bar's latest state of each
line), so the page can follow it live; the process gets no plugin opt-in
(``HYBRIDLAB_PLUGINS`` is dropped from its environment), so a spec naming plugins fails.
``stop`` sends SIGTERM to the process group (the search records and re-queues the trial in
progress, as on Ctrl-C) and SIGKILL if it has not exited after ``grace_s``.
The jobs are remembered by this server only; the searches themselves are in the database.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hybridlab.errors import UserError
from hybridlab.export.safe import safe_component
from hybridlab.ui.paths import Roots, check_text_size, quoted

#: At most this many searches started from the page run at once (each may start workers).
MAX_RUNNING = 4
MAX_WORKERS = 64
MAX_TRIALS = 1_000_000
DEVICES = ("auto", "cpu", "cuda")
#: Environment variables that would let a launched search import a spec's plugins.
PLUGIN_ENV = ("HYBRIDLAB_PLUGINS",)


@dataclass
class Job:
    id: int
    study: str
    spec_file: Path
    log_file: Path
    command: list[str]
    proc: subprocess.Popen
    started: str = field(default_factory=lambda: _dt.datetime.now().isoformat(timespec="seconds"))
    stop_requested: bool = False

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def state(self) -> str:
        rc = self.returncode
        if rc is None:
            return "stopping" if self.stop_requested else "running"
        if self.stop_requested:
            return "stopped"
        return "finished" if rc == 0 else f"failed (exit {rc})"

    def log_tail(self, max_bytes: int = 6000) -> str:
        """The end of the log, each line as a terminal would show it (a progress bar redraws
        its line with carriage returns: only its latest state is kept)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 4 * max_bytes))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
        return "\n".join(lines)[-max_bytes:]


class Launcher:
    def __init__(self, url: str, folder: str | os.PathLike, roots: Roots, grace_s: float = 30.0):
        self.url = url
        self.folder = Path(folder)
        self.roots = roots
        self.grace_s = grace_s
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def running(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.returncode is None]

    def start(self, spec_text: str, *, base_dir: str | os.PathLike,
              spec_path: str | os.PathLike | None = None, trials: int | None = None,
              workers: int = 1, device: str = "auto") -> Job:
        """Validate and launch. ``spec_path``: run that file as it is (when the editor holds
        its unchanged text); otherwise the editor text is written to a file, with a relative
        ``base:`` path made absolute against ``base_dir``. Every path is confined to the roots.
        Raises ``SpecError`` for an invalid spec, ``UserError`` for bad settings."""
        trials, workers, device = check_settings(trials, workers, device)
        if len(self.running()) >= MAX_RUNNING:
            raise UserError(f"{MAX_RUNNING} searches started from this page are still running; "
                            f"stop one before starting another")
        if spec_path is not None:
            target, text = self.roots.read_spec(spec_path)
            spec = validate_search_text(text, target.parent, self.roots, shown=str(target))
        else:
            check_text_size(spec_text or "", "the search spec")
            text = spec_text if spec_text.endswith("\n") else spec_text + "\n"
            base_dir = self.roots.resolve(base_dir)
            spec = validate_search_text(text, base_dir, self.roots)
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            target = self.folder / f"{safe_component(spec.name, 'search')}-{stamp}.yaml"
            target.write_text(_absolute_base(text, base_dir))
        log = self.folder / f"{target.stem}.log"
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "hybridlab.cli.main", "search", str(target), "--db",
               self.url, "--workers", str(workers), "--device", device]
        if trials:
            cmd += ["--trials", str(trials)]
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=str(self.roots.roots[0]),
                                    env=child_env(), start_new_session=True)
        with self._lock:
            job = Job(id=next(self._ids), study=spec.name, spec_file=target, log_file=log,
                      command=cmd, proc=proc)
            self.jobs[job.id] = job
        return job

    def stop(self, job_id: int) -> Job:
        job = self.jobs[job_id]
        if job.returncode is None:
            job.stop_requested = True
            _signal_group(job.proc, signal.SIGTERM)
            threading.Thread(target=self._reap, args=(job,), daemon=True).start()
        return job

    def _reap(self, job: Job) -> None:
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            if job.proc.poll() is not None:
                return
            time.sleep(0.2)
        _signal_group(job.proc, signal.SIGKILL)
        job.proc.wait()

    def stop_all(self) -> None:
        for job in list(self.jobs.values()):
            if job.returncode is None:
                self.stop(job.id)

    def latest(self) -> Job | None:
        return self.jobs[max(self.jobs)] if self.jobs else None


def _signal_group(proc: subprocess.Popen, sig) -> None:
    try:
        os.killpg(proc.pid, sig)          # the search and any worker processes it started
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def check_settings(trials, workers, device) -> tuple[int | None, int, str]:
    """The launch settings a caller sent, as the command line takes them, or ``UserError``."""
    def whole(value, name, low, high):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{name} must be a whole number, got {quoted(value)}") from None
        if not number.is_integer() or not low <= number <= high:
            raise UserError(f"{name} must be a whole number from {low} to {high:,}, "
                            f"got {quoted(value)}")
        return int(number)

    trials = None if trials in (None, "", 0) else whole(trials, "trials", 1, MAX_TRIALS)
    workers = 1 if workers in (None, "") else whole(workers, "worker processes", 1, MAX_WORKERS)
    device = device or "auto"
    if device not in DEVICES:
        raise UserError(f"device must be one of {', '.join(DEVICES)}, got {quoted(device)}")
    return trials, workers, device


def child_env() -> dict[str, str]:
    """The server's environment for a launched search, without the plugin opt-in: a search
    started from the page never imports a spec's plugins, whatever the server was started
    with."""
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env["PYTHONUNBUFFERED"] = "1"        # the log fills as the search runs, not at its end
    return env


def validate_search_text(text: str, base_dir: Path, roots: Roots, shown: str = "<editor>"):
    """``load_search_spec`` on spec text: a relative ``base:`` is read from ``base_dir``, only
    inside the roots; plugins are never imported. Raises ``SpecError``."""
    from hybridlab.search.spec import load_search_spec

    check_text_size(text, "the search spec")
    return load_search_spec(text if text.endswith("\n") else text + "\n", file=shown,
                            base_dir=base_dir, allowed_roots=roots.roots, allow_plugins=False)


def _absolute_base(text: str, base_dir: Path) -> str:
    """The spec text with a relative ``base:`` path made absolute (everything else as typed;
    the text is rewritten only in that case, losing comments). Only for text that passed
    ``validate_search_text`` (its size and YAML aliases are bounded)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not isinstance(data, dict) or not isinstance(data.get("base"), str):
        return text
    base = Path(data["base"]).expanduser()
    if base.is_absolute():
        return text
    data["base"] = str((base_dir / base).resolve())
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
