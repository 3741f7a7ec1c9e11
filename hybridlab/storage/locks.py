"""A short, cross-process lock per study, so workers agree on how many trials are left.

Workers hold it only while they count the study's trials and start the next one (a fraction of
a second), never while training. SQLite: an advisory file lock beside the database file (SQLite
already requires all writers to be on one machine). PostgreSQL: ``pg_advisory_lock`` on a
dedicated connection, which works across machines. Other back-ends: an in-process lock only.

    lock = StudyLock(url, "my-study")
    lock.acquire(); ...; lock.release()      # release is idempotent
    with StudyLock(url, "my-study"): ...
"""
from __future__ import annotations

import hashlib
import os
import threading
import time

from sqlalchemy import text

from .engine import is_sqlite, resolve_url, sqlite_path, writer_engine

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class StudyLock:
    def __init__(self, url: str, study_name: str, timeout_s: float = 300.0):
        self.url = resolve_url(url)
        self.study_name = study_name
        self.timeout_s = timeout_s
        with _local_guard:
            self._local = _local_locks.setdefault(f"{self.url}\0{study_name}", threading.Lock())
        self._fd: int | None = None
        self._conn = None
        self._held = False

    # -- public ----------------------------------------------------------------------------
    def acquire(self) -> None:
        if not self._local.acquire(timeout=self.timeout_s):
            raise TimeoutError(f"could not lock study {self.study_name!r}")
        try:
            if is_sqlite(self.url) and sqlite_path(self.url) is not None:
                self._acquire_file()
            elif writer_engine(self.url).dialect.name == "postgresql":
                self._acquire_pg()
        except BaseException:
            self._local.release()
            raise
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            if self._fd is not None:
                import fcntl
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
            if self._conn is not None:
                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key()})
                    self._conn.commit()
                finally:
                    self._conn.close()
                    self._conn = None
        finally:
            self._local.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    # -- back-ends -------------------------------------------------------------------------
    def _key(self) -> int:
        digest = hashlib.sha1(f"hybridlab:{self.study_name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def _acquire_file(self) -> None:
        import fcntl

        digest = hashlib.sha1(self.study_name.encode()).hexdigest()[:12]
        lock_path = f"{sqlite_path(self.url)}.{digest}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TimeoutError(f"could not lock {lock_path} within {self.timeout_s:.0f} s")
                time.sleep(0.05)
        self._fd = fd

    def _acquire_pg(self) -> None:
        conn = writer_engine(self.url).connect()
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self._key()})
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn


def study_lock(url: str, study_name: str, timeout_s: float = 300.0) -> StudyLock:
    return StudyLock(url, study_name, timeout_s)
