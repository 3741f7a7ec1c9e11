"""Searches started from the web page run in their own process, never in the web server:

    python -m hybridlab.cli.main search SPEC --db URL --no-progress [--trials N] ...

``Launcher.start`` validates the search spec first (the same ``load_search_spec`` as the CLI),
writes it to a file, and starts that process in a new session with its output in a log file.
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

from hybridlab.export.safe import safe_component


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
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""


class Launcher:
    def __init__(self, url: str, folder: str | os.PathLike, grace_s: float = 30.0):
        self.url = url
        self.folder = Path(folder)
        self.grace_s = grace_s
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, spec_text: str, *, base_dir: str | os.PathLike | None = None,
              spec_path: str | os.PathLike | None = None, trials: int | None = None,
              workers: int = 1, device: str = "auto") -> Job:
        """Validate and launch. ``spec_path``: run that file as it is (when the editor holds
        its unchanged text); otherwise the editor text is written to a file, with a relative
        ``base:`` path made absolute against ``base_dir`` (default: the server's directory).
        Raises ``SpecError`` for an invalid spec."""
        from hybridlab.search.spec import load_search_spec

        base_dir = Path(base_dir or Path.cwd()).resolve()
        if spec_path is not None:
            spec = load_search_spec(Path(spec_path))
            target = Path(spec_path).resolve()
        else:
            text = spec_text if spec_text.endswith("\n") else spec_text + "\n"
            spec = _validate_text(text, base_dir)
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            target = self.folder / f"{safe_component(spec.name, 'search')}-{stamp}.yaml"
            target.write_text(_absolute_base(text, base_dir))
        log = self.folder / f"{target.stem}.log"
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "hybridlab.cli.main", "search", str(target), "--db",
               self.url, "--no-progress", "--workers", str(int(workers)), "--device", device]
        if trials:
            cmd += ["--trials", str(int(trials))]
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=str(base_dir),
                                    start_new_session=True)
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


def _validate_text(text: str, base_dir: Path):
    """``load_search_spec`` on editor text, with relative paths read from ``base_dir``."""
    from hybridlab.search.spec import load_search_spec

    cwd = Path.cwd()
    if cwd.resolve() == base_dir:
        return load_search_spec(text, file="<editor>")
    # load_search_spec resolves a relative `base:` of YAML text against the working directory
    return load_search_spec(_absolute_base(text, base_dir), file="<editor>")


def _absolute_base(text: str, base_dir: Path) -> str:
    """The spec text with a relative ``base:`` path made absolute (everything else as typed;
    the text is rewritten only in that case, losing comments)."""
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
