"""hybridlab.storage: schema and version, SQLite WAL + busy timeout, concurrent readers and
writers, round trips of series / scalars / artifacts, the UI's read API, Pareto, hypervolume."""
from __future__ import annotations

import hashlib
import queue
import sqlite3
import threading
import time

import optuna
import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text

from hybridlab.storage import SCHEMA_VERSION, SchemaError, Store, optuna_storage, resolve_url
from hybridlab.storage import pareto as P
from hybridlab.storage.engine import dispose_engines
from hybridlab.storage.record import TrialRecord, dashboard_attrs

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def db(tmp_path):
    yield f"sqlite:///{tmp_path / 'h.db'}"
    dispose_engines()


def _study(url, name="s", directions=("maximize", "minimize"), n=6, fn=None):
    study = optuna.create_study(storage=optuna_storage(url), study_name=name,
                                directions=list(directions), load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["quality", "cost"][: len(directions)])

    def default(t):
        x = t.suggest_float("x", 0.0, 1.0)
        return (x, x * x + 1.0) if len(directions) == 2 else x

    study.optimize(fn or default, n_trials=n)
    return study


# -- schema ----------------------------------------------------------------------------------
def test_schema_created_with_version_and_optuna_tables_untouched(db):
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION
    names = set(sa_inspect(store.engine).get_table_names())
    for t in ("hl_schema_version", "hl_architectures", "hl_runs", "hl_metric_series",
              "hl_scalars", "hl_artifacts"):
        assert t in names
    _study(db)
    # Optuna still recognises the database as its own (schema compatibility check passes).
    optuna.storages.RDBStorage(db)
    study = optuna.load_study(study_name="s", storage=db)
    assert len(study.trials) == 6
    # A second Store on the same file keeps the single version row.
    Store(db)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM hl_schema_version")).scalar() == 1


def test_newer_schema_is_refused(db):
    store = Store(db)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE hl_schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
    dispose_engines()
    with pytest.raises(SchemaError, match="newer"):
        Store(db)


def test_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'hybridlab.db'}"
    assert resolve_url("sub/x.db") == f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    assert resolve_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert resolve_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"


# -- SQLite settings ---------------------------------------------------------------------------
def test_wal_and_busy_timeout_on_every_connection_including_optunas(db, tmp_path):
    store = Store(db)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    storage = optuna_storage(db)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    # WAL is recorded in the file itself: a plain sqlite3 connection sees it.
    raw = sqlite3.connect(tmp_path / "h.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_reader_is_read_only(db):
    Store(db)
    _study(db, n=2)
    ui = Store(db, readonly=True)
    with pytest.raises(PermissionError):
        ui.set_scalars(1, {"a": 1.0})
    with ui.engine.connect() as conn:
        with pytest.raises(Exception, match="readonly|read-only|query_only"):
            conn.execute(text("DELETE FROM hl_scalars"))
    assert [s["name"] for s in ui.list_studies()] == ["s"]


def test_reader_on_missing_database_sees_nothing(tmp_path):
    ui = Store(f"sqlite:///{tmp_path / 'nothing.db'}", readonly=True)
    assert ui.list_studies() == []
    assert ui.series(1) == {}
    assert not (tmp_path / "nothing.db").exists()


def test_open_read_transaction_does_not_block_a_writer(db):
    store = Store(db)
    store.start_run(study_name="s", trial_id=1, trial_number=0)
    ui = Store(db, readonly=True)
    with ui.engine.connect() as reader:
        reader.begin()
        before = reader.execute(text("SELECT COUNT(*) FROM hl_metric_series")).scalar()
        t0 = time.monotonic()
        store.add_series(1, {"loss": [(i, 1.0 / (i + 1)) for i in range(50)]})  # must not wait
        assert time.monotonic() - t0 < 5
        # The reader keeps its snapshot until its transaction ends.
        assert reader.execute(text("SELECT COUNT(*) FROM hl_metric_series")).scalar() == before
        reader.rollback()
        assert reader.execute(text("SELECT COUNT(*) FROM hl_metric_series")).scalar() == 50


def _hammer(url, worker, n, errors):
    try:
        store = Store(url)
        for i in range(n):
            tid = worker * 10_000 + i
            store.start_run(study_name="s", trial_id=tid, trial_number=tid)
            store.add_series(tid, {"loss": [(s, float(s)) for s in range(20)]})
            store.set_scalars(tid, {"score/a": 0.5, "cost/params_total": 10})
            store.finish_run(tid, "complete", wall_s=0.1)
    except Exception as e:  # reported to the parent
        errors.put(repr(e))


def test_concurrent_writers_and_a_reader_never_fail(db):
    """Two writers (each with its own connection, as two processes would have) and a reader
    hammer one SQLite file: no "database is locked", nothing lost."""
    Store(db)
    _study(db, n=1)
    errors: queue.Queue = queue.Queue()
    writers = [threading.Thread(target=_hammer, args=(db, w, 40, errors)) for w in range(2)]
    for t in writers:
        t.start()
    ui = Store(db, readonly=True)
    reads = 0
    reader_errors = []
    while any(t.is_alive() for t in writers):
        try:
            ui.runs("s")
            ui.list_studies()
            reads += 1
        except Exception as e:
            reader_errors.append(repr(e))
        time.sleep(0.01)
    for t in writers:
        t.join()
    assert not reader_errors
    assert errors.empty(), errors.get()
    assert reads > 0
    runs = Store(db).runs("s")
    assert len(runs) == 80 and all(r["status"] == "complete" for r in runs.values())


def test_reader_while_optuna_writes(db):
    Store(db)
    stop = threading.Event()
    seen, errors = [], []

    def read():
        ui = Store(db, readonly=True)
        while not stop.is_set():
            try:
                seen.append(sum(s["n_trials"] for s in ui.list_studies()))
            except Exception as e:
                errors.append(repr(e))

    th = threading.Thread(target=read)
    th.start()
    try:
        _study(db, n=25)
    finally:
        stop.set()
        th.join()
    assert not errors
    assert seen and max(seen) >= 1


# -- round trips -------------------------------------------------------------------------------
def test_series_scalars_artifacts_round_trip(db, tmp_path):
    store = Store(db)
    store.record_architecture("abc", name="m", pattern="MM*M", n_layers=4, spec_yaml="name: m\n",
                              params_total=1234, params_active=1000)
    store.record_architecture("abc", name="again")   # immutable: first one kept
    store.start_run(study_name="s", trial_id=7, trial_number=3, arch_hash="abc",
                    train_hash="t1", device="cpu")
    curves = {"loss": [(0, 2.5), (10, 1.5), (20, float("nan"))], "eval/acc": [(20, 0.75)]}
    assert store.add_series(7, curves) == 4
    store.set_scalars(7, {"score/mqar": 0.9, "cost/params_total": 1234}, kind="score")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x" * 1000)
    rec = store.add_artifact(trial_id=7, study_name="s", trial_number=3, kind="weights",
                             path=weights)
    assert rec["size"] == 1000
    assert rec["sha256"] == hashlib.sha256(b"x" * 1000).hexdigest()
    store.finish_run(7, "complete", wall_s=2.0)

    ui = Store(db, readonly=True)
    got = ui.series(7)
    assert got["loss"] == [(0, 2.5), (10, 1.5), (20, None)]   # non-finite stored as NULL
    assert got["eval/acc"] == [(20, 0.75)]
    assert ui.series(7, names=["eval/acc"]) == {"eval/acc": [(20, 0.75)]}
    assert ui.scalars(7) == {"score/mqar": 0.9, "cost/params_total": 1234.0}
    arts = ui.artifacts(7)
    assert [(a["kind"], a["size"]) for a in arts] == [("weights", 1000)]
    run = ui.run(7)
    assert run["status"] == "complete" and run["wall_s"] == 2.0 and run["arch_hash"] == "abc"
    assert run["torch_version"]    # library versions recorded
    assert ui.architecture("abc")["name"] == "m"

    # reuse lookup and copying records to a reusing trial
    assert store.find_reusable("s", "abc", "t1")["trial_number"] == 3
    assert store.find_reusable("s", "abc", "other") is None
    assert store.find_reusable("s", "abc", "t1", exclude_trial_id=7) is None
    store.start_run(study_name="s", trial_id=8, trial_number=4, arch_hash="abc", train_hash="t1")
    store.copy_trial_records(7, 8)
    store.finish_run(8, "complete", reused_from=3)
    assert store.series(8) == store.series(7)
    assert store.scalars(8) == store.scalars(7)
    assert store.artifacts(8)[0]["trial_number"] == 4
    assert store.find_reusable("s", "abc", "t1")["trial_number"] == 3


def test_trials_detail_pareto_and_hypervolume(db):
    store = Store(db)
    pts = [(0.2, 1.0), (0.5, 2.0), (0.4, 3.0), (0.9, 5.0), (0.1, 0.5)]   # (max quality, min cost)
    it = iter(pts)

    def fn(t):
        t.suggest_float("x", 0, 1)
        q, c = next(it)
        t.set_constraint("params_max", -1.0 if q != 0.9 else 1.0)   # last-but-one: infeasible
        t.set_user_attr("pattern", "M*")
        return q, c

    study = _study(db, fn=fn, n=len(pts))
    tid = study.trials[1]._trial_id
    store.start_run(study_name="s", trial_id=tid, trial_number=1)
    store.set_scalars(tid, {"score/mqar": 0.5, "cost/params_total": 99})
    store.add_series(tid, {"loss": [(0, 1.0)]})

    ui = Store(db, readonly=True)
    rows = ui.trials("s")
    assert [r["number"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["values"] == {"quality": 0.5, "cost": 2.0}
    assert rows[3]["feasible"] is False and rows[0]["pattern"] == "M*"
    pareto = sorted(r["number"] for r in ui.pareto("s"))
    assert pareto == [0, 1, 4]    # 2 is dominated by 1; 3 infeasible
    summary = ui.list_studies()[0]
    assert summary["counts"]["COMPLETE"] == 5
    assert summary["best"]["quality"] == {"value": 0.5, "trial_number": 1, "direction": "maximize"}
    assert summary["best"]["cost"]["trial_number"] == 4
    detail = ui.trial_detail("s", 1)
    assert detail["scores"] == {"mqar": 0.5} and detail["costs"] == {"params_total": 99.0}
    assert detail["curves"] == {"loss": [(0, 1.0)]}
    with pytest.raises(KeyError):
        ui.trial_detail("s", 99)
    hv = ui.hypervolume_history("s", reference_point=[0.0, 10.0])
    assert [h["trial_number"] for h in hv] == [0, 1, 2, 4]
    # by hand in loss space (-q, c) with reference (0, 10):
    assert hv[0]["hypervolume"] == pytest.approx(0.2 * 9.0)
    assert hv[1]["hypervolume"] == pytest.approx(0.2 * 9.0 + 0.3 * 8.0)
    assert hv[2]["hypervolume"] == hv[1]["hypervolume"]    # dominated point adds nothing
    assert hv[3]["hypervolume"] == pytest.approx(hv[1]["hypervolume"] + 0.1 * 0.5)
    scaled = ui.hypervolume_history("s")
    assert all(a["hypervolume"] <= b["hypervolume"] for a, b in zip(scaled, scaled[1:]))


def test_hypervolume_3d_matches_brute_force():
    import random
    rng = random.Random(0)
    pts = [tuple(rng.random() for _ in range(3)) for _ in range(12)]
    ref = (1.0, 1.0, 1.0)
    n = 40   # grid count of dominated cells (cell centres)
    inside = 0
    for i in range(n):
        for j in range(n):
            for k in range(n):
                c = ((i + .5) / n, (j + .5) / n, (k + .5) / n)
                if any(all(p[d] <= c[d] for d in range(3)) for p in pts):
                    inside += 1
    assert P.hypervolume(pts, ref) == pytest.approx(inside / n ** 3, abs=0.02)
    assert P.pareto_indices([(1, 1), (0, 2), (2, 2)]) == [0, 1]


# -- the trial record ------------------------------------------------------------------------
def test_trial_record_round_trip_piece_by_piece(db):
    store = Store(db)

    def fn(t):      # trial 0 as an older hybridlab wrote it: part of its result in user attrs
        if t.number == 0:
            for key, value in (("pattern", "**"), ("fail_reason", "boom"), ("reused_from", 0)):
                t.set_user_attr(key, value)
        return 0.5, 1.0

    study = _study(db, n=2, fn=fn)
    new = study.trials[1]
    store.record_architecture("h1", name="t", pattern="M*M", n_layers=3, params_total=1200,
                              params_active=1000)
    store.start_run(study_name="s", trial_id=new._trial_id, trial_number=1)
    # what a worker writes as the trial goes; each call stands alone (a killed worker keeps it)
    store.update_record(new._trial_id, arch_hash="h1", train_hash="t1")
    store.update_record(new._trial_id, curves={"train/loss": [(0, 2.0), (1, 1.5)]}, seed=7,
                        scores={"mqar": 0.75}, train={"quality": 0.75, "train_steps": 2})
    partial = store.record(new._trial_id)
    assert partial.status == "running" and partial.train == {"quality": 0.75, "train_steps": 2}
    store.update_record(new._trial_id, costs={"params_total": 1200}, status="complete",
                        wall_s=3.5)
    rec = Store(db, readonly=True).record(new._trial_id)
    assert rec == TrialRecord(
        status="complete", pattern="M*M", arch_hash="h1", train_hash="t1", n_layers=3,
        params_total=1200, params_active=1000, seed=7, scores={"mqar": 0.75},
        costs={"params_total": 1200.0}, train={"quality": 0.75, "train_steps": 2.0},
        curves={"train/loss": [(0, 2.0), (1, 1.5)]}, wall_s=3.5)
    assert store.run(new._trial_id)["finished_at"] is not None
    with pytest.raises(TypeError, match="pattern"):
        store.update_record(new._trial_id, pattern="M")     # the architecture's, not the run's
    assert dashboard_attrs(rec) == {"pattern": "M*M", "n_layers": 3, "params_total": 1200,
                                    "params_active": 1000, "quality": 0.75}

    rows = {r["number"]: r for r in Store(db, readonly=True).trials("s")}
    assert (rows[1]["pattern"], rows[1]["status"], rows[1]["wall_s"]) == ("M*M", "complete", 3.5)
    assert rows[1]["n_layers"] == 3 and rows[1]["failure_reason"] is None
    assert (rows[0]["pattern"], rows[0]["failure_reason"], rows[0]["reused_from"],
            rows[0]["status"]) == ("**", "boom", 0, "complete")
