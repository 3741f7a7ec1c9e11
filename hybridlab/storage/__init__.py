"""Persistence for searches: SQLAlchemy tables beside Optuna's in one database (SQLite by
default, PostgreSQL for searches spanning machines). ``Store`` is the one door in and out."""
from .engine import (DEFAULT_URL, artifact_root, display_url, reader_engine, resolve_url,
                     writer_engine)
from .health import UnknownStudy, printable
from .linked import linked_studies, open_linked_study, proxy_of  # noqa: F401  (linked studies)
from .locks import StudyLock, schema_lock, study_lock
from .optuna_db import optuna_storage
from .repository import Store, library_versions
from .schema import SCHEMA_VERSION, SchemaError

__all__ = ["DEFAULT_URL", "SCHEMA_VERSION", "SchemaError", "Store", "StudyLock", "UnknownStudy",
           "artifact_root", "display_url", "library_versions", "optuna_storage", "printable",
           "reader_engine", "resolve_url", "schema_lock", "study_lock", "writer_engine"]
