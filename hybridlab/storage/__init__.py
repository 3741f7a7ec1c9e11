"""Persistence for searches: SQLAlchemy tables beside Optuna's in one database (SQLite by
default, PostgreSQL for searches spanning machines). ``Store`` is the one door in and out."""
from .engine import (DEFAULT_URL, artifact_root, display_url, optuna_storage, reader_engine,
                     resolve_url, writer_engine)
from .locks import StudyLock, study_lock
from .repository import Store, library_versions
from .schema import SCHEMA_VERSION, SchemaError

__all__ = ["DEFAULT_URL", "SCHEMA_VERSION", "SchemaError", "Store", "StudyLock", "artifact_root",
           "display_url", "library_versions", "optuna_storage", "reader_engine", "resolve_url",
           "study_lock", "writer_engine"]
