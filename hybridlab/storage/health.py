"""Whether a database can be used, and what to tell the user when it cannot.

Readers never change a file they open, so they repair nothing: they say what is wrong, where,
and what to do, as a ``StoreError`` (the CLI prints it with exit 2; the UI shows it).

* ``check_file(url)``      SQLite only, by ``stat`` alone: a folder, an unreadable file, a file
                           that is no whole number of pages (cut short, or not a database).
* ``require_database(url)`` the same, and a missing SQLite file is an error (commands that
                           only read: a typo in --db is not an empty database).
* ``table_state(engine)``  which of hybridlab's and Optuna's tables are there and our schema
                           version; a half set of either (a damaged or edited database) or a
                           schema from a newer hybridlab is refused.
* ``printable(name)``      a study name safe to print (control characters escaped).
* ``translated(url)``      turns database errors met on the way (a page that cannot be read, a
                           missing table or column, a lock held too long) into that StoreError.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

from sqlalchemy import func, select, table
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from hybridlab.errors import StoreError

from .engine import display_url, is_sqlite, sqlite_path
from .schema import Base, SchemaVersion, check_version

SQLITE_MIN_PAGE = 512

#: Optuna's tables (RDBStorage, schema of Optuna 3 to 5): all of them or none.
OPTUNA_TABLES = frozenset({
    "studies", "study_directions", "study_user_attributes", "study_system_attributes",
    "trials", "trial_params", "trial_values", "trial_user_attributes",
    "trial_system_attributes", "trial_intermediate_values", "trial_heartbeats",
    "version_info", "alembic_version"})
HYBRIDLAB_TABLES = frozenset(Base.metadata.tables)

UNCHANGED = "Nothing was changed."


class UnknownStudy(StoreError, KeyError):
    """No study of that name (a ``KeyError`` too, for callers that look names up)."""
    __str__ = Exception.__str__


class UnknownTrial(StoreError, KeyError):
    """No trial of that number in the study."""
    __str__ = Exception.__str__


def printable(text) -> str:
    """A name from the database as it may be printed: as is when every character prints,
    else escaped as Python writes a string (control characters never reach the terminal)."""
    text = str(text)
    return text if text.isprintable() else repr(text)


RESTORE = ("Restore it from a backup or copy, or give --db another database (a new file name "
           "starts a new one)")


# -- the file itself ---------------------------------------------------------------------------
def check_file(url: str) -> None:
    """Refuse, before SQLite opens it, a SQLite "database" that is a folder, unreadable, or
    not a whole number of pages long (cut short, or no database at all). A missing or empty
    file passes (an empty file is an empty SQLite database); other back-ends pass.

    Only ``stat``: the file itself is never opened here. Closing any descriptor of a SQLite
    file drops every POSIX lock this process holds on it -- those of its live connections
    too -- which lets another connection checkpoint under a reader's feet."""
    if not is_sqlite(url):
        return
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a database file: give --db the database "
                         f"file itself (for example {path / 'hybridlab.db'})")
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot read the database {path}: permission denied; check its "
                         f"permissions")
    size = path.stat().st_size
    if size % SQLITE_MIN_PAGE:      # every page size is a multiple of 512 bytes
        raise StoreError(f"{path} is not a whole SQLite database: {size:,} bytes is no whole "
                         f"number of database pages (a file cut short, or not a database at "
                         f"all). {UNCHANGED} {RESTORE}")


def require_database(url: str) -> None:
    """For commands that only read: a SQLite file that is not there is an error (a typo in
    --db), not an empty listing."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None and not path.exists():
            raise StoreError(f"no database at {path}: the file does not exist. Give --db the "
                             f"database a search wrote ('hybridlab search SPEC --db FILE' "
                             f"makes one)")
    check_file(url)


# -- tables --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableState:
    hybridlab: bool          # hybridlab's tables are there (all of them)
    optuna: bool             # Optuna has initialised the database (all tables, version rows)
    version: int | None      # our schema version, None without our tables

    @property
    def complete(self) -> bool:
        return self.hybridlab and self.optuna


def table_state(engine: Engine, url: str) -> TableState:
    """What the database holds. Raises ``StoreError`` for a half set of hybridlab's tables,
    a half set of an initialised Optuna's, or a schema from a newer hybridlab."""
    with translated(url):
        with engine.connect() as conn:
            names = set(sa_inspect(conn).get_table_names())
            ours = names & HYBRIDLAB_TABLES
            version = None
            if ours:
                missing = sorted(HYBRIDLAB_TABLES - ours)
                if missing:
                    raise StoreError(
                        f"{display_url(url)} is missing hybridlab's table"
                        f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} (its other "
                        f"tables are there): the database was damaged or edited. {UNCHANGED} "
                        f"{RESTORE}")
                version = conn.execute(select(func.max(SchemaVersion.version))).scalar()
                if version is None:
                    raise StoreError(
                        f"{display_url(url)} has hybridlab's tables but no schema version in "
                        f"hl_schema_version: the database was damaged or edited. {UNCHANGED} "
                        f"{RESTORE}")
                check_version(int(version), display_url(url))
            theirs = names & OPTUNA_TABLES
            initialised = {"version_info", "alembic_version"} <= theirs and all(
                conn.execute(select(func.count()).select_from(table(t))).scalar()
                for t in ("version_info", "alembic_version"))
            if initialised and theirs != OPTUNA_TABLES:
                missing = sorted(OPTUNA_TABLES - theirs)
                raise StoreError(
                    f"{display_url(url)} is missing Optuna's table"
                    f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}: the database was "
                    f"damaged or edited. {UNCHANGED} {RESTORE}")
    return TableState(hybridlab=bool(ours), optuna=initialised,
                      version=None if version is None else int(version))


# -- errors met on the way -----------------------------------------------------------------------
def damaged(url: str, error: BaseException) -> StoreError:
    """A ``StoreError`` saying what a database error means for the user."""
    cause = error
    if not isinstance(cause, SQLAlchemyError) and isinstance(cause.__cause__, SQLAlchemyError):
        cause = cause.__cause__                    # Optuna's StorageInternalError wraps it
    orig = getattr(cause, "orig", None) or cause
    detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]
    low = detail.lower()
    where = display_url(url)
    if "file is not a database" in low:
        what = f"{where} is not a SQLite database, or it is damaged beyond reading"
        todo = f"{UNCHANGED} {RESTORE}"
    elif "malformed" in low or "corrupt" in low or "disk i/o error" in low:
        what = f"{where} is damaged (SQLite: {detail})"
        todo = (f"{UNCHANGED} {RESTORE}; 'sqlite3 FILE .recover' saves what is still "
                f"readable into a new file")
    elif "no such table" in low or "undefinedtable" in low or "does not exist" in low:
        what = f"{where} lacks a table hybridlab reads ({detail})"
        todo = f"It is not a hybridlab database, or it was damaged or edited. {RESTORE}"
    elif "no such column" in low or "undefinedcolumn" in low:
        what = f"{where} does not have the columns this hybridlab reads ({detail})"
        todo = ("It was written by another version of hybridlab or Optuna, or edited; open it "
                "with the version that wrote it")
    elif "locked" in low or "busy" in low:
        what = f"{where} stayed locked by another process ({detail})"
        todo = "Try again when the other process is done"
    elif "unable to open" in low:
        what = f"cannot open {where} ({detail})"
        todo = "Check that the path exists and that you may read it (and write its folder)"
    elif "readonly" in low or "read-only" in low:
        what = f"cannot write {where} ({detail})"
        todo = "The file or its folder is read-only; give --db a database you may write"
    elif isinstance(cause, DBAPIError) and cause.connection_invalidated or "connect" in low:
        what = f"cannot reach {where} ({detail})"
        todo = "Check the host, port, database name and credentials in --db"
    else:
        what = f"cannot use {where} ({type(orig).__name__}: {detail})"
        todo = "Check that it is a hybridlab database and that it is not damaged"
    return StoreError(f"{what}. {todo}")


def _storage_errors() -> tuple[type[BaseException], ...]:
    import optuna
    return (SQLAlchemyError, optuna.exceptions.StorageInternalError)


@contextlib.contextmanager
def translated(url: str):
    """Database errors inside become one ``StoreError`` that says what to do."""
    try:
        yield
    except StoreError:
        raise
    except Exception as e:
        if isinstance(e, _storage_errors()):
            raise damaged(url, e) from None
        raise


def reads(method):
    """Decorator for ``Store`` methods: database errors become a ``StoreError``."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with translated(self.url):
            return method(self, *args, **kwargs)
    return wrapper
