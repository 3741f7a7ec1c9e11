"""Database URLs and SQLAlchemy engines.

One place decides how hybridlab talks to a database:

* ``resolve_url`` turns what the user typed (``--db``) into a SQLAlchemy URL. A bare path
  (``runs/my.db``) means SQLite; ``sqlite:///hybridlab.db`` in the working directory is the default.
* ``writer_engine`` / ``reader_engine`` build engines. For SQLite every new connection gets
  ``PRAGMA journal_mode=WAL`` and a ``busy_timeout`` through a SQLAlchemy ``connect`` event, and
  writer transactions start with ``BEGIN IMMEDIATE`` (the write lock is taken up front and waited
  for, instead of failing with "database is locked" when a read transaction tries to upgrade).
  Readers use deferred transactions with ``PRAGMA query_only``: in WAL mode they never block or
  break a writer.

Optuna's ``RDBStorage`` on the same database is built by ``optuna_db.optuna_storage``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from hybridlab.errors import StoreError

DEFAULT_URL = "sqlite:///hybridlab.db"
BUSY_TIMEOUT_S = 30.0

_engines: dict[tuple[str, bool], Engine] = {}
_engines_lock = threading.Lock()
_engines_pid = os.getpid()


def resolve_url(url: str | os.PathLike | None = None) -> str:
    """``None`` -> the default; a bare path -> ``sqlite:///<absolute path>``; URLs pass through.

    ``postgresql://`` without a driver is read as ``postgresql+psycopg://`` (psycopg 3).
    """
    if url is None or str(url).strip() == "":
        url = DEFAULT_URL
    url = str(url)
    if "://" not in url:
        return "sqlite:///" + str(Path(url).expanduser().resolve())
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StoreError(f"--db {url.split('://', 1)[0]}://... is not a database URL; give a "
                         f"SQLite file (runs.db) or postgresql+psycopg://user:password@host/"
                         f"database") from None
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:  # make relative SQLite paths absolute so workers agree
            return "sqlite:///" + str(path)
    return url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (absolute), or None for in-memory databases."""
    u = make_url(url)
    db = u.database
    if not db or db == ":memory:" or db.startswith("file::memory:"):
        return None
    if db.startswith("file:"):
        db = db[len("file:"):]
    return Path(db).expanduser().resolve()


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def artifact_root(url: str) -> Path:
    """Folder for trial artifacts: ``<db dir>/<db stem>-artifacts`` beside a SQLite file,
    ``./hybridlab-artifacts`` (or ``$HYBRIDLAB_ARTIFACTS``) for server databases."""
    env = os.environ.get("HYBRIDLAB_ARTIFACTS")
    if env:
        return Path(env).expanduser().resolve()
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            return path.parent / f"{path.stem}-artifacts"
    return Path.cwd() / "hybridlab-artifacts"


# -- SQLite connection set-up -----------------------------------------------------------------
def _sqlite_on_connect(readonly: bool):
    timeout_ms = int(BUSY_TIMEOUT_S * 1000)

    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite otherwise begins lazily).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={timeout_ms}")
            if readonly:
                cur.execute("PRAGMA query_only=1")
            else:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    return on_connect


def _sqlite_on_begin(readonly: bool):
    statement = "BEGIN" if readonly else "BEGIN IMMEDIATE"

    def on_begin(conn):
        conn.exec_driver_sql(statement)

    return on_begin


def configure_sqlite_engine(engine: Engine, readonly: bool = False) -> Engine:
    """Install the WAL / busy_timeout / BEGIN IMMEDIATE events on an existing SQLite engine and
    drop its pooled connections so that every connection from now on has them."""
    if engine.dialect.name != "sqlite":
        return engine
    if not getattr(engine, "_hybridlab_configured", False):
        event.listen(engine, "connect", _sqlite_on_connect(readonly))
        event.listen(engine, "begin", _sqlite_on_begin(readonly))
        engine._hybridlab_configured = True  # type: ignore[attr-defined]
        engine.dispose()
    return engine


def sqlite_engine_kwargs() -> dict:
    return {"connect_args": {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}}


def readonly_sqlite_url(url: str) -> str:
    path = sqlite_path(url)
    if path is None:
        return url
    return f"sqlite:///file:{path}?mode=ro&uri=true"


def _make_engine(url: str, readonly: bool) -> Engine:
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None and not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
        target = readonly_sqlite_url(url) if readonly else url
        engine = sqlalchemy.create_engine(target, **sqlite_engine_kwargs())
        return configure_sqlite_engine(engine, readonly=readonly)
    kwargs: dict = {"pool_pre_ping": True}
    try:
        engine = sqlalchemy.create_engine(url, **kwargs)
    except ImportError as e:        # the URL names a driver that is not installed
        hint = " (pip install \"psycopg[binary]\")" if "psycopg" in str(e) else ""
        raise StoreError(f"cannot open {display_url(url)}: its database driver is not "
                         f"installed ({e}){hint}") from None
    except (ValueError, sqlalchemy.exc.ArgumentError) as e:
        raise StoreError(f"--db {display_url(url)} is not a database URL ({e}); give a SQLite "
                         f"file or postgresql+psycopg://user:password@host/database") from None
    if readonly and engine.dialect.name == "postgresql":
        engine = engine.execution_options(postgresql_readonly=True)
    return engine


def _cached(url: str, readonly: bool) -> Engine:
    global _engines_pid
    with _engines_lock:
        if _engines_pid != os.getpid():  # forked: never share pooled connections
            _engines.clear()
            _engines_pid = os.getpid()
        key = (url, readonly)
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _make_engine(url, readonly)
        return engine


def writer_engine(url: str | None = None) -> Engine:
    """Engine for writing (one per URL and process)."""
    return _cached(resolve_url(url), False)


def reader_engine(url: str | None = None) -> Engine:
    """Read-only engine for the UI and listings: never takes a write lock."""
    return _cached(resolve_url(url), True)


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def database_exists(url: str) -> bool:
    """False only for a SQLite file that is not there yet (server databases: assumed to exist)."""
    url = resolve_url(url)
    if is_sqlite(url):
        path = sqlite_path(url)
        return path is None or path.exists()
    return True
