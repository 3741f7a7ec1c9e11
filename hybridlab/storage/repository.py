"""The one door to hybridlab's data: record and read architectures, runs, metric series,
scalars, artifacts, studies, trials, Pareto sets and hypervolume.

Nothing outside ``hybridlab.storage`` writes SQL. Optuna's own tables are only ever touched
through Optuna's storage API, so the database stays a valid Optuna storage
(``optuna-dashboard sqlite:///hybridlab.db`` opens it).

    store = Store("sqlite:///hybridlab.db")                  # writer (creates hl_ tables)
    ui = Store("sqlite:///hybridlab.db", readonly=True)     # reader: never blocks a writer
    ui.list_studies(); ui.trials("my-study"); ui.trial_detail("my-study", 3)

Every method opens a short transaction of its own; no session is held between calls.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from hybridlab.interrupts import deferred

from . import read_model
from .engine import (artifact_root, database_exists, display_url, reader_engine, resolve_url,
                     writer_engine)
from .health import (TableState, UnknownStudy, UnknownTrial, check_file, printable, reads,
                     table_state, translated)
from .locks import schema_lock
from .optuna_db import optuna_storage
from .record import (RUN_FIELDS, SCALAR_GROUPS, SEED_SCALAR, TrialRecord, legacy_record,
                     record_from_rows)
from .schema import (Architecture, Artifact, MetricPoint, Run, Scalar, ensure_schema,
                     schema_version, utcnow)

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def file_sha256(path: str | os.PathLike) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class Store:
    """Access to one database. ``readonly=True`` gives the UI's path: a read-only connection
    (SQLite ``mode=ro`` + ``query_only``; PostgreSQL read-only transactions)."""

    def __init__(self, url: str | None = None, *, readonly: bool = False):
        self.url = resolve_url(url)
        self.readonly = readonly
        self._optuna = None
        self._state: TableState | None = None     # a reader's checked, complete database
        if readonly:      # checked on first read: a reader never fails before it is used
            self.engine = reader_engine(self.url) if database_exists(self.url) else None
        else:
            check_file(self.url)
            self.engine = writer_engine(self.url)
            # serialised: processes started at once on a new database create the tables once
            with translated(self.url), schema_lock(self.url):
                table_state(self.engine, self.url)    # refuses half sets and newer schemas
                ensure_schema(self.engine)

    # -- plumbing --------------------------------------------------------------------------
    @property
    def artifact_root(self) -> Path:
        return artifact_root(self.url)

    def optuna_storage(self, **heartbeat):
        """Optuna's RDBStorage for this database (read-only for a read-only store)."""
        if heartbeat and not self.readonly:
            return optuna_storage(self.url, **heartbeat)
        if self._optuna is None:
            self._optuna = optuna_storage(self.url, readonly=self.readonly)
        return self._optuna

    @reads
    def schema_version(self) -> int | None:
        return None if self.engine is None else schema_version(self.engine)

    def tables(self) -> TableState:
        """Which tables the database holds (a reader checks the file and the tables; a
        ``StoreError`` says what is wrong with a damaged or newer database)."""
        if self._state is not None:
            return self._state
        if self.engine is None:
            if not database_exists(self.url):
                return TableState(hybridlab=False, optuna=False, version=None)
            self.engine = reader_engine(self.url)       # it appeared since (first search)
        check_file(self.url)
        state = table_state(self.engine, self.url)
        if state.complete:
            self._state = state
        return state

    def _ready(self) -> bool:
        """A reader on a database without our tables (or without a file) sees nothing."""
        if not self.readonly:
            return True                                   # the constructor made the tables
        return self.tables().hybridlab

    @contextlib.contextmanager
    def _write(self):
        if self.readonly:
            raise PermissionError("this Store is read-only")
        with deferred(), self.engine.begin() as conn:    # a stop signal waits for the commit
            yield conn

    # -- writing ---------------------------------------------------------------------------
    def record_architecture(self, arch_hash: str, *, name: str = "", pattern: str = "",
                            n_layers: int = 0, spec_yaml: str = "",
                            params_total: int | None = None,
                            params_active: int | None = None) -> None:
        """Insert the architecture if it is new (architectures are immutable by hash)."""
        try:
            with self._write() as conn:
                exists = conn.execute(select(Architecture.hash).where(
                    Architecture.hash == arch_hash)).first()
                if exists is None:
                    conn.execute(Architecture.__table__.insert().values(
                        hash=arch_hash, name=name, pattern=pattern, n_layers=n_layers,
                        spec_yaml=spec_yaml, params_total=params_total,
                        params_active=params_active, created_at=utcnow()))
        except IntegrityError:  # recorded by another process in between
            pass

    def start_run(self, *, study_name: str, trial_id: int, trial_number: int,
                  arch_hash: str | None = None, train_hash: str | None = None,
                  device: str = "", worker: int | None = None,
                  versions: Mapping[str, str] | None = None) -> None:
        versions = dict(versions or library_versions())
        values = dict(study_name=study_name, trial_number=trial_number, arch_hash=arch_hash,
                      train_hash=train_hash, status="running", failure_reason=None,
                      device=device, host=socket.gethostname(), pid=os.getpid(),
                      worker=worker, torch_version=versions.get("torch", ""),
                      triton_version=versions.get("triton", ""),
                      optuna_version=versions.get("optuna", ""),
                      hybridlab_version=versions.get("hybridlab", ""),
                      started_at=utcnow(), heartbeat_at=utcnow())
        with self._write() as conn:
            done = conn.execute(update(Run).where(Run.trial_id == trial_id).values(**values))
            if done.rowcount == 0:
                conn.execute(Run.__table__.insert().values(trial_id=trial_id, **values))

    def update_run(self, trial_id: int, **fields) -> None:
        with self._write() as conn:
            conn.execute(update(Run).where(Run.trial_id == trial_id).values(**fields))

    def heartbeat(self, trial_id: int) -> None:
        self.update_run(trial_id, heartbeat_at=utcnow())

    def finish_run(self, trial_id: int, status: str, *, failure_reason: str | None = None,
                   wall_s: float | None = None, reused_from: int | None = None) -> None:
        fields: dict[str, Any] = dict(status=status, failure_reason=failure_reason)
        if wall_s is not None:
            fields["wall_s"] = wall_s
        if reused_from is not None:
            fields["reused_from"] = int(reused_from)
        self.update_record(trial_id, **fields)

    def add_series(self, trial_id: int, curves: Mapping[str, Iterable[Sequence[float]]]) -> int:
        """Append metric series ``{name: [(step, value), ...]}``; returns the number of points."""
        with self._write() as conn:
            return _put_series(conn, trial_id, curves)

    def set_scalars(self, trial_id: int, values: Mapping[str, Any], kind: str = "metric") -> None:
        """Record final numbers (replacing earlier values of the same names)."""
        with self._write() as conn:
            _put_scalars(conn, trial_id, values, kind)

    def update_record(self, trial_id: int, **fields) -> None:
        """Write parts of a trial's ``TrialRecord`` (field names of ``record.TrialRecord``), all
        in one transaction, each to its table: run columns replace, ``scores`` / ``costs`` /
        ``train`` replace the numbers of those names, ``curves`` append. A status other than
        ``running`` marks the run finished. Pattern, layers and parameter counts belong to the
        architecture (``record_architecture``), artifacts to ``add_artifact``."""
        unknown = set(fields) - set(RUN_FIELDS) - set(SCALAR_GROUPS) - {"seed", "curves"}
        if unknown:
            raise TypeError(f"update_record: not stored here: {sorted(unknown)}")
        run = {k: fields[k] for k in RUN_FIELDS if k in fields}
        if "wall_s" in run and run["wall_s"] is not None:
            run["wall_s"] = float(run["wall_s"])
        if run.get("status") not in (None, "running"):
            run.update(finished_at=utcnow(), heartbeat_at=utcnow())
        with self._write() as conn:
            if run:
                conn.execute(update(Run).where(Run.trial_id == trial_id).values(**run))
            for field, prefix in SCALAR_GROUPS.items():
                if fields.get(field):
                    _put_scalars(conn, trial_id, {f"{prefix}/{k}": v
                                                  for k, v in fields[field].items()}, prefix)
            if fields.get("seed") is not None:
                _put_scalars(conn, trial_id, {SEED_SCALAR: fields["seed"]}, "setting")
            if fields.get("curves"):
                _put_series(conn, trial_id, fields["curves"])

    def add_artifact(self, *, trial_id: int, study_name: str, trial_number: int, kind: str,
                     path: str | os.PathLike) -> dict:
        """Record a file (sha256 and size computed here); replaces an earlier one of that kind."""
        path = Path(path).resolve()
        sha, size = file_sha256(path)
        with self._write() as conn:
            conn.execute(delete(Artifact).where(Artifact.trial_id == trial_id,
                                                Artifact.kind == kind))
            conn.execute(Artifact.__table__.insert().values(
                trial_id=trial_id, study_name=study_name, trial_number=trial_number,
                kind=kind, path=str(path), sha256=sha, size=size, created_at=utcnow()))
        return {"kind": kind, "path": str(path), "sha256": sha, "size": size}

    def copy_trial_records(self, src_trial_id: int, dst_trial_id: int) -> None:
        """Give a reusing trial the series, scalars and artifact records of the trial it reuses."""
        with self._write() as conn:
            pts = conn.execute(select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
                               .where(MetricPoint.trial_id == src_trial_id)).all()
            if pts:
                conn.execute(MetricPoint.__table__.insert(),
                             [dict(trial_id=dst_trial_id, name=n, step=s, value=v)
                              for n, s, v in pts])
            scal = conn.execute(select(Scalar.name, Scalar.kind, Scalar.value)
                                .where(Scalar.trial_id == src_trial_id)).all()
            if scal:
                conn.execute(delete(Scalar).where(Scalar.trial_id == dst_trial_id))
                conn.execute(Scalar.__table__.insert(),
                             [dict(trial_id=dst_trial_id, name=n, kind=k, value=v)
                              for n, k, v in scal])
            dst = conn.execute(select(Run.study_name, Run.trial_number)
                               .where(Run.trial_id == dst_trial_id)).first()
            arts = conn.execute(select(Artifact.__table__).where(
                Artifact.trial_id == src_trial_id)).mappings().all()
            for a in arts:
                conn.execute(Artifact.__table__.insert().values(
                    trial_id=dst_trial_id,
                    study_name=dst.study_name if dst else a["study_name"],
                    trial_number=dst.trial_number if dst else a["trial_number"],
                    kind=a["kind"], path=a["path"], sha256=a["sha256"], size=a["size"],
                    created_at=utcnow()))

    # -- lookups used while searching --------------------------------------------------------
    @reads
    def find_reusable(self, study_name: str, arch_hash: str, train_hash: str,
                      exclude_trial_id: int | None = None) -> dict | None:
        """The earliest finished (complete or pruned) run of the same architecture and training
        settings in this study, as ``{"trial_id", "trial_number", "status"}``."""
        if not self._ready():
            return None
        q = (select(Run.trial_id, Run.trial_number, Run.status)
             .where(Run.study_name == study_name, Run.arch_hash == arch_hash,
                    Run.train_hash == train_hash, Run.status.in_(("complete", "pruned")),
                    Run.reused_from.is_(None))
             .order_by(Run.trial_number))
        if exclude_trial_id is not None:
            q = q.where(Run.trial_id != exclude_trial_id)
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else dict(row._mapping)

    @reads
    def run(self, trial_id: int) -> dict | None:
        if not self._ready():
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(Run.__table__).where(Run.trial_id == trial_id)
                               ).mappings().first()
            return None if row is None else _row_dict(row)

    @reads
    def runs(self, study_name: str) -> dict[int, dict]:
        """hl_runs rows of a study by trial_id."""
        if not self._ready():
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(Run.__table__).where(Run.study_name == study_name)
                                ).mappings().all()
            return {r["trial_id"]: _row_dict(r) for r in rows}

    @reads
    def architecture(self, arch_hash: str) -> dict | None:
        if not self._ready():
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(Architecture.__table__).where(
                Architecture.hash == arch_hash)).mappings().first()
            return None if row is None else _row_dict(row)

    @reads
    def series(self, trial_id: int, names: Iterable[str] | None = None
               ) -> dict[str, list[tuple[int, float | None]]]:
        if not self._ready():
            return {}
        q = (select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
             .where(MetricPoint.trial_id == trial_id)
             .order_by(MetricPoint.name, MetricPoint.step, MetricPoint.id))
        if names is not None:
            q = q.where(MetricPoint.name.in_(list(names)))
        out: dict[str, list[tuple[int, float | None]]] = {}
        with self.engine.connect() as conn:
            for name, step, value in conn.execute(q):
                out.setdefault(name, []).append((step, value))
        return out

    @reads
    def scalars(self, trial_id: int) -> dict[str, float | None]:
        if not self._ready():
            return {}
        with self.engine.connect() as conn:
            return {n: v for n, v in conn.execute(
                select(Scalar.name, Scalar.value).where(Scalar.trial_id == trial_id))}

    @reads
    def artifacts(self, trial_id: int) -> list[dict]:
        if not self._ready():
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(Artifact.__table__).where(Artifact.trial_id == trial_id)
                                .order_by(Artifact.id)).mappings().all()
            return [_row_dict(r) for r in rows]

    # -- studies and trials (the UI's read API) ----------------------------------------------
    def _has_optuna_tables(self) -> bool:
        """Whether Optuna has initialised this database (a reader must not try to)."""
        if self._optuna is not None or not self.readonly:
            return True
        return self.tables().optuna

    @reads
    def study_names(self) -> list[str]:
        if not self._has_optuna_tables():
            return []
        import optuna
        return [s.study_name for s in optuna.get_all_study_summaries(
            self.optuna_storage(), include_best_trial=False)]

    @reads
    def load_study(self, study_name: str):
        """Optuna's study; ``UnknownStudy`` (a StoreError) names the studies there are."""
        import optuna
        if not self._has_optuna_tables():
            raise self.unknown_study(study_name)
        try:
            return optuna.load_study(study_name=study_name, storage=self.optuna_storage())
        except KeyError:
            raise self.unknown_study(study_name) from None

    def unknown_study(self, study_name: str) -> UnknownStudy:
        names = self.study_names()
        where = display_url(self.url)
        if names:
            known = ", ".join(printable(n) for n in names[:30]) + (" ..." if len(names) > 30
                                                                    else "")
            return UnknownStudy(f"no study {study_name!r} in {where}; its studies: {known}")
        return UnknownStudy(f"no study {study_name!r} in {where}: it holds no studies yet "
                            f"(run 'hybridlab search SPEC --db ...' first, or check --db)")

    @reads
    def list_studies(self) -> list[dict]:
        """One row per study: name, directions, metric names, trial counts per state,
        best value per objective (with trial number), compute time, start/last update."""
        out = []
        for name in self.study_names():
            out.append(self.study_summary(name))
        return out

    @reads
    def study_summary(self, study_name: str) -> dict:
        """Counts per state, retry-aware ``finished``, target, best per objective, compute time,
        the Pareto front: the read model's summary (``read_model.StudyView.summary``)."""
        return read_model.study_view(self, study_name).summary()

    @reads
    def trials(self, study_name: str, states: Iterable[str] | None = None) -> list[dict]:
        """One row per trial: number, state, params, values (by metric name), user attrs,
        scalar metrics, pattern, feasibility, duration, failure reason, reuse."""
        study = self.load_study(study_name)
        directions = [d.name.lower() for d in study.directions]
        names = _metric_names(study)
        wanted = set(states) if states else None
        runs = self.runs(study_name)
        scal = self._all_scalars([t._trial_id for t in study.get_trials(deepcopy=False)])
        archs = self._architectures({r["arch_hash"] for r in runs.values() if r["arch_hash"]})
        rows = []
        for t in study.get_trials(deepcopy=False):
            if wanted and t.state.name not in wanted:
                continue
            run, scalars = runs.get(t._trial_id), scal.get(t._trial_id, {})
            arch = archs.get(run["arch_hash"]) if run and run.get("arch_hash") else None
            rec = record_from_rows(run, arch, scalars, notes=t.user_attrs)
            rows.append(_trial_row(t, names, directions, rec, run, scalars))
        return rows

    @reads
    def _architectures(self, hashes: set[str]) -> dict[str, dict]:
        if not self._ready() or not hashes:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(Architecture.__table__).where(
                Architecture.hash.in_(sorted(hashes)))).mappings().all()
            return {r["hash"]: _row_dict(r) for r in rows}

    @reads
    def record(self, trial_id: int) -> TrialRecord | None:
        """The trial's ``TrialRecord`` with curves and artifacts (None: no run recorded)."""
        run = self.run(trial_id)
        if run is None:
            return None
        arch = self.architecture(run["arch_hash"]) if run.get("arch_hash") else None
        notes = self.optuna_storage().get_trial_user_attrs(trial_id)    # the diagnostics
        return record_from_rows(run, arch, self.scalars(trial_id), curves=self.series(trial_id),
                                artifacts=self.artifacts(trial_id), notes=notes)

    @reads
    def _all_scalars(self, trial_ids: list[int]) -> dict[int, dict[str, float | None]]:
        if not self._ready() or not trial_ids:
            return {}
        out: dict[int, dict[str, float | None]] = {}
        with self.engine.connect() as conn:
            for tid, name, value in conn.execute(
                    select(Scalar.trial_id, Scalar.name, Scalar.value)
                    .where(Scalar.trial_id.in_(trial_ids))):
                out.setdefault(tid, {})[name] = value
        return out

    @reads
    def trial_detail(self, study_name: str, number: int) -> dict:
        """Everything about one trial: the row of ``trials`` plus spec YAML, curves, scores,
        costs, failure reason and artifact files."""
        study = self.load_study(study_name)
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not matches:
            raise UnknownTrial(f"study {study_name!r} has no trial {number}")
        t = matches[0]
        directions = [d.name.lower() for d in study.directions]
        names = _metric_names(study)
        run = self.run(t._trial_id)
        scalars = self.scalars(t._trial_id)
        arch = self.architecture(run["arch_hash"]) if run and run.get("arch_hash") else None
        curves = self.series(t._trial_id)
        artifacts = self.artifacts(t._trial_id)
        rec = record_from_rows(run, arch, scalars, curves=curves, artifacts=artifacts,
                               notes=t.user_attrs)
        row = _trial_row(t, names, directions, rec, run, scalars)
        row.update({
            "run": run,
            "spec_yaml": (arch or {}).get("spec_yaml") or t.user_attrs.get("spec_yaml", ""),
            "architecture": arch,
            "curves": curves,
            "scores": rec.scores if rec else {},
            "costs": rec.costs if rec else {},
            "artifacts": artifacts,
            "intermediate_values": dict(t.intermediate_values),
            "system_attrs": {k: v for k, v in t.system_attrs.items()},
        })
        return row

    @reads
    def pareto(self, study_name: str) -> list[dict]:
        """The read model's Pareto front as trial rows: feasible non-dominated COMPLETE trials
        over all objectives, a trial reusing another's result left out (its original stands
        for it)."""
        front = set(read_model.study_view(self, study_name).front)
        return [r for r in self.trials(study_name, states=["COMPLETE"]) if r["number"] in front]

    @reads
    def hypervolume_history(self, study_name: str,
                            reference_point: Sequence[float] | None = None) -> list[dict]:
        """Hypervolume of the feasible front after each finished trial (in trial order).

        Without ``reference_point`` objectives are scaled to [0, 1] over all feasible complete
        trials (maximised ones flipped) and the reference is 1.1 on every axis, so values of
        different units weigh alike; with one (raw units, e.g. ``[0.0, 1e6]``) no scaling.
        """
        return read_model.hypervolume_history(read_model.study_view(self, study_name),
                                              reference_point=reference_point)


# -- helpers -------------------------------------------------------------------------------------
def _put_series(conn, trial_id: int, curves: Mapping[str, Iterable[Sequence[float]]]) -> int:
    rows = []
    for name, points in curves.items():
        for point in points:
            step, value = point[0], point[1]
            rows.append(dict(trial_id=trial_id, name=str(name), step=int(step),
                             value=_finite(value)))
    if rows:
        conn.execute(MetricPoint.__table__.insert(), rows)
    return len(rows)


def _put_scalars(conn, trial_id: int, values: Mapping[str, Any], kind: str) -> None:
    rows = [dict(trial_id=trial_id, name=str(k), kind=kind, value=_finite(v))
            for k, v in values.items() if _finite(v) is not None or v is None]
    if rows:
        conn.execute(delete(Scalar).where(Scalar.trial_id == trial_id,
                                          Scalar.name.in_([r["name"] for r in rows])))
        conn.execute(Scalar.__table__.insert(), rows)


def counted_finished(trials) -> int:
    """Finished trials (COMPLETE, PRUNED, FAIL) that count toward a search's budget: a trial that
    was retried (heartbeat-stale or interrupted, then re-queued) is replaced by its retry."""
    retried: set[int] = set()
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", []) or [])
    return sum(1 for t in trials if t.state.name in ("COMPLETE", "PRUNED", "FAIL")
               and t.number not in retried)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {}
    for pkg in ("torch", "triton", "optuna", "hybridlab"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = ""
    return out


def _row_dict(row: Mapping) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _metric_names(study) -> list[str]:
    names = study.metric_names
    if names:
        return list(names)
    n = len(study.directions)
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]


def _trial_row(t, names, directions, record: TrialRecord | None, run: dict | None,
               scalars: Mapping[str, Any]) -> dict:
    """One row of ``trials``: Optuna's part (state, params, values, constraints) and the trial's
    record (older trials completed by ``legacy_record``)."""
    values = dict(zip(names, t.values)) if t.values is not None else {}
    duration = None
    if t.datetime_start and t.datetime_complete:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    rec = legacy_record(t.user_attrs, t.state.name, record)
    constraints = trial_constraints(t)
    return {
        "number": t.number,
        "trial_id": t._trial_id,
        "state": t.state.name,
        "status": rec.status,
        "values": values,
        "params": dict(t.params),
        "user_attrs": dict(t.user_attrs),
        "metrics": dict(scalars),
        "pattern": rec.pattern,
        "n_layers": rec.n_layers,
        "arch_hash": rec.arch_hash,
        "constraints": constraints,
        "feasible": all(c <= 0 for c in constraints.values()),
        "failure_reason": rec.failure_reason,
        "reused_from": rec.reused_from,
        "device": (run or {}).get("device"),
        "duration_s": duration,
        "wall_s": rec.wall_s,
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
        "retried_from": t.system_attrs.get("failed_trial"),
    }


def trial_constraints(t) -> dict[str, float]:
    """A trial's constraints by key. The legacy list we mirror for optuna-dashboard (system
    attribute ``constraints``) also comes back from Optuna as keys ``"0"``, ``"1"``...: left out."""
    return {k: v for k, v in t.constraints.items() if not k.isdigit()}


def dumps(obj) -> str:
    """JSON for CLI output (datetimes and numpy scalars made plain)."""
    return json.dumps(obj, default=lambda o: o.isoformat() if isinstance(o, datetime) else str(o),
                      indent=2)
