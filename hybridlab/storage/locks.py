"""Short cross-process locks on one database: per study, and for creating the schema.

* ``StudyLock(url, study)``: workers hold it only while they count the study's trials and start
  the next one (a fraction of a second), never while training; the search also holds it while
  it creates the study, so two processes never create it (or enqueue its baselines) twice.
* ``schema_lock(url)``: held while a writer creates or checks the tables (Optuna's and ours),
  so two processes started at once on a new database do not both create them.

SQLite: an advisory file lock beside the database file (SQLite already requires all writers to
be on one machine); the kernel drops it when its process dies, so a stale lock file blocks
nothing. PostgreSQL: ``pg_advisory_lock`` on a dedicated connection, which works across
machines. Other back-ends: an in-process lock only.

    with StudyLock(url, "my-study"): ...
    lock = StudyLock(url, "my-study"); lock.acquire(); ...; lock.release()  # idempotent release
"""
from __future__ import annotations

import hashlib
import os
import threading
import time

from sqlalchemy import text

from hybridlab.errors import StoreError

from .engine import display_url, is_sqlite, resolve_url, sqlite_path, writer_engine

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class LockTimeout(StoreError, TimeoutError):
    """Another process held a database lock for longer than the timeout."""


class DatabaseLock:
    """A named lock on one database: ``file_tag`` names the SQLite lock file
    (``<db>.<file_tag>.lock``), ``key`` the PostgreSQL advisory lock."""

    def __init__(self, url: str, what: str, key: str, file_tag: str, timeout_s: float = 300.0):
        self.url = resolve_url(url)
        self.what = what
        self.key = key
        self.file_tag = file_tag
        self.timeout_s = timeout_s
        with _local_guard:
            self._local = _local_locks.setdefault(f"{self.url}\0{key}", threading.Lock())
        self._fd: int | None = None
        self._conn = None
        self._held = False

    # -- public ----------------------------------------------------------------------------
    def acquire(self) -> None:
        if not self._local.acquire(timeout=self.timeout_s):
            raise LockTimeout(f"could not lock {self.what} of {display_url(self.url)} within "
                              f"{self.timeout_s:.0f} s: another thread of this process holds it")
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
                import fcntl            # Unix only: imported where SQLite locks are taken
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
            if self._conn is not None:
                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"),
                                       {"k": self._pg_key()})
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
    def _pg_key(self) -> int:
        digest = hashlib.sha1(self.key.encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def lock_path(self) -> str:
        return f"{sqlite_path(self.url)}.{self.file_tag}.lock"

    def _acquire_file(self) -> None:
        import fcntl                    # Unix only: imported where SQLite locks are taken

        lock_path = self.lock_path()
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"cannot create the lock file {lock_path} ({e.strerror}): writing "
                             f"to {display_url(self.url)} needs a writable folder beside it; "
                             f"give --db a path in a folder you can write") from None
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LockTimeout(
                        f"could not lock {self.what} of {display_url(self.url)} within "
                        f"{self.timeout_s:.0f} s ({lock_path} is held by another process); "
                        f"wait for it to finish, or stop it") from None
                time.sleep(0.02)
        self._fd = fd

    def _acquire_pg(self) -> None:
        conn = writer_engine(self.url).connect()
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self._pg_key()})
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn


class StudyLock(DatabaseLock):
    def __init__(self, url: str, study_name: str, timeout_s: float = 300.0):
        super().__init__(url, f"study {study_name!r}", key=f"hybridlab:{study_name}",
                         file_tag=hashlib.sha1(study_name.encode()).hexdigest()[:12],
                         timeout_s=timeout_s)
        self.study_name = study_name


def study_lock(url: str, study_name: str, timeout_s: float = 300.0) -> StudyLock:
    return StudyLock(url, study_name, timeout_s)


def schema_lock(url: str, timeout_s: float = 300.0) -> DatabaseLock:
    """The lock writers hold while they create or check the tables of a database."""
    return DatabaseLock(url, "the schema", key="hybridlab-schema", file_tag="schema",
                        timeout_s=timeout_s)
