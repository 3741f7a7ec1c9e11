"""Optuna's ``RDBStorage`` on hybridlab's database, set up as hybridlab's own engines are.

* the SQLite pragmas (WAL, busy timeout, BEGIN IMMEDIATE for writers; read-only connections
  with ``query_only`` for readers) on Optuna's engine too;
* a writer creates Optuna's tables under the database's schema lock, so two processes started
  at once on a new database do not both create them (Optuna's own creation is not safe against
  that: "table studies already exists", "UNIQUE constraint failed: alembic_version"); it first
  refuses a database with half of Optuna's or hybridlab's tables, or a newer hybridlab schema,
  rather than create what is missing;
* a reader never creates or migrates anything;
* with ``heartbeat_interval`` set, a trial whose process stopped beating for ``grace_period``
  seconds is marked FAIL by the next worker and re-queued (WAITING, same parameters) by
  ``RetryHeartbeatStaleTrialCallback`` up to ``max_retry`` times.

Database errors on the way become a ``StoreError`` that says what to do.
"""
from __future__ import annotations

import warnings

from .engine import (readonly_sqlite_url, configure_sqlite_engine, is_sqlite, resolve_url,
                     sqlite_engine_kwargs, writer_engine)
from .health import check_file, table_state, translated
from .locks import schema_lock


def optuna_storage(url: str | None = None, *, heartbeat_interval: int | None = None,
                   grace_period: int | None = None, max_retry: int | None = 2,
                   readonly: bool = False):
    """Optuna ``RDBStorage`` on the database at ``url`` (see the module's docstring)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = resolve_url(url)
    check_file(url)
    sqlite = is_sqlite(url)
    kwargs: dict = {}
    engine_kwargs = sqlite_engine_kwargs() if sqlite else {"pool_pre_ping": True}
    target = readonly_sqlite_url(url) if (sqlite and readonly) else url

    def build():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat_interval:
                kwargs["heartbeat_interval"] = int(heartbeat_interval)
                kwargs["grace_period"] = int(grace_period or 2 * heartbeat_interval)
                kwargs["heartbeat_stale_trial_callback"] = RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retry)
            return RDBStorage(target, engine_kwargs=engine_kwargs,
                              skip_table_creation=readonly, skip_compatibility_check=readonly,
                              **kwargs)

    with translated(url):
        if readonly:
            storage = build()
        else:
            with schema_lock(url):
                # refuse a half-built or newer database instead of "repairing" it; our
                # writer engine also creates a new SQLite file in WAL mode before Optuna's
                table_state(writer_engine(url), url)
                storage = build()
    if sqlite:
        configure_sqlite_engine(storage.engine, readonly=readonly)
    return storage
