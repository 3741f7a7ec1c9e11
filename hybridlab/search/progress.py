"""Progress display for a search: one tqdm bar over the study's trials (done / total, ETA) with
the running trial's training step in the postfix, and a line per finished trial.

``NullProgress`` is the silent stand-in (library use, worker processes, tests).
"""
from __future__ import annotations

import sys
import time


class NullProgress:
    def set_done(self, done: int) -> None:
        pass

    def event(self, kind: str, **info) -> None:
        pass

    def running(self, rows: list[dict]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class TqdmProgress(NullProgress):
    """tqdm bar: ``n`` = finished trials of the study (resumed ones included)."""

    def __init__(self, study_name: str, total: int, done: int = 0, file=None):
        from tqdm.auto import tqdm
        self._tqdm = tqdm
        self.bar = tqdm(total=total, initial=min(done, total), unit="trial",
                        desc=f"search {study_name}", dynamic_ncols=True, file=file or sys.stderr,
                        smoothing=0.0)
        self._last = 0.0

    def set_done(self, done: int) -> None:
        delta = min(done, self.bar.total) - self.bar.n
        if delta > 0:
            self.bar.update(delta)

    def event(self, kind: str, **info) -> None:
        number = info.get("number")
        if kind == "start":
            self.bar.set_postfix_str(f"trial {number}: building", refresh=True)
        elif kind == "step":
            now = time.monotonic()
            if now - self._last < 0.5:
                return
            self._last = now
            total = info.get("total")
            step = f"{info['step']}/{total}" if total else str(info["step"])
            loss = info.get("loss")
            text = f"trial {number}: step {step}" + (f" loss {loss:.3f}" if loss is not None
                                                      else "")
            self.bar.set_postfix_str(text, refresh=True)
        elif kind == "end":
            status, reason = info.get("status"), info.get("reason") or ""
            if status != "complete":
                self.message(f"trial {number} {status}" + (f": {reason}" if reason else ""))
            self.bar.set_postfix_str("", refresh=True)

    def running(self, rows: list[dict]) -> None:
        """Several workers: show every running trial's step (read from the database)."""
        parts = []
        for r in rows:
            step, total = r.get("step"), r.get("total_steps")
            where = f"{step}/{total}" if step is not None and total else (
                str(step) if step is not None else "starting")
            parts.append(f"#{r['trial_number']} {where}")
        self.bar.set_postfix_str(("running " + ", ".join(parts)) if parts else "", refresh=True)

    def message(self, text: str) -> None:
        self.bar.write(text, file=self.bar.fp)

    def close(self) -> None:
        self.bar.close()
