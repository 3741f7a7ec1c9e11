"""Hostile and broken databases: every one is a clear StoreError (exit 2, no traceback) in
`hybridlab studies`, `hybridlab search status`, `hybridlab search` and the library, and a read
never changes the file. Two `hybridlab search` processes started at once on a new database both
succeed and draw different candidates (SQLite, and PostgreSQL where a server can be started)."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hybridlab.cli.main import main
from hybridlab.errors import StoreError
from hybridlab.search.driver import join_study, prepare_study, worker_seed
from hybridlab.search.spec import load_search_spec
from hybridlab.storage import SCHEMA_VERSION, SchemaError, Store, UnknownStudy, printable
from hybridlab.storage.engine import dispose_engines
from hybridlab.storage.optuna_db import optuna_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_engines():
    yield
    dispose_engines()


def make_db(path: Path, study: str = "s", n: int = 3) -> str:
    """A real hybridlab database: our tables, Optuna's, one study with finished trials and
    their run rows; closed (WAL checkpointed) so the file alone holds everything."""
    url = f"sqlite:///{path}"
    store = Store(url)
    s = optuna.create_study(storage=store.optuna_storage(), study_name=study,
                            directions=["maximize"])
    for i in range(n):
        t = s.ask()
        t.suggest_float("x", 0, 1)
        store.start_run(study_name=study, trial_id=t._trial_id, trial_number=t.number)
        s.tell(t, float(i))
        store.finish_run(t._trial_id, "complete", wall_s=1.0)
    store.optuna_storage().engine.dispose()
    dispose_engines()
    con = sqlite3.connect(path)                  # everything into the main file
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return url


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit(path: Path, *sql: str) -> None:
    con = sqlite3.connect(path)
    for statement in sql:
        con.execute(statement)
    con.commit()
    con.close()


def garble_table(path: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage (the rest of the file stays valid)."""
    con = sqlite3.connect(path)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(bytes([0x0D, 0, 0, 0, 0xFF, 0xFF]) + os.urandom(page - 6))


# Each case: how to break a good database, and what the message must say.
CASES = {
    "truncated":       (lambda p: p.write_bytes(p.read_bytes()[:5000]),
                        "is not a whole SQLite database"),
    "truncated-pages": (lambda p: p.write_bytes(p.read_bytes()[:-4096]), "is damaged"),
    "cut-in-header":   (lambda p: p.write_bytes(p.read_bytes()[:40]),
                        "is not a whole SQLite database"),
    "random-bytes":    (lambda p: p.write_bytes(os.urandom(20480)), "is not a SQLite database"),
    "random-odd-size": (lambda p: p.write_bytes(os.urandom(20000)),
                        "is not a whole SQLite database"),
    "text-file":       (lambda p: p.write_text("root:x:0:0:root:/root:/bin/bash\n"),
                        "is not a whole SQLite database"),
    "directory":       (lambda p: (p.unlink(), p.mkdir()), "is a folder, not a database file"),
    "no-hl_runs":      (lambda p: edit(p, "DROP TABLE hl_runs"),
                        "missing hybridlab's table hl_runs"),
    "no-hl-two":       (lambda p: edit(p, "DROP TABLE hl_scalars", "DROP TABLE hl_artifacts"),
                        "missing hybridlab's tables hl_artifacts, hl_scalars"),
    "no-version-row":  (lambda p: edit(p, "DELETE FROM hl_schema_version"),
                        "no schema version"),
    "no-optuna-trials": (lambda p: edit(p, "DROP TABLE trial_values", "DROP TABLE trials"),
                         "missing Optuna's tables trial_values, trials"),
    "future-schema":   (lambda p: edit(p, f"UPDATE hl_schema_version SET version="
                                          f"{SCHEMA_VERSION + 7}"),
                        "written by a newer hybridlab"),
    "garbled-trials":  (lambda p: garble_table(p, "trials"), "is damaged"),
}


@pytest.fixture(scope="module")
def good_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.db"
    make_db(path)
    return path


def broken(good: Path, tmp_path: Path, case: str) -> Path:
    path = tmp_path / "broken.db"
    path.write_bytes(good.read_bytes())
    CASES[case][0](path)
    return path


def fingerprint(path: Path):
    return ("dir", sorted(os.listdir(path))) if path.is_dir() else sha(path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_database_is_a_clear_error_and_is_never_changed(case, good_db, tmp_path, capsys):
    path = broken(good_db, tmp_path, case)
    before = fingerprint(path)
    phrase = CASES[case][1]
    for argv in (["studies", "--db", str(path)], ["search", "status", "s", "--db", str(path)],
                 ["studies", "--db", f"sqlite:///{path}", "--json"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert phrase in err, err
        assert str(path) in err and "Traceback" not in err
        assert "root:x:0" not in err                   # never quotes the file
    # the library's readers say the same, and so does the start of a search (which writes)
    url = f"sqlite:///{path}"
    with pytest.raises(StoreError, match=phrase):
        Store(url, readonly=True).list_studies()
    with pytest.raises(StoreError, match=phrase):
        prepare_study(race_spec(tmp_path), Store(url), 2)
    if case not in ("garbled-trials", "truncated-pages"):    # these open; their reads fail
        with pytest.raises(StoreError, match=phrase):
            optuna_storage(url)
    dispose_engines()
    assert fingerprint(path) == before, "a read (or a refused write) changed the database"


def test_future_schema_is_a_schema_error_with_exit_2_in_search(good_db, tmp_path, capsys):
    path = broken(good_db, tmp_path, "future-schema")
    with pytest.raises(SchemaError, match=r"schema version \d+; this hybridlab knows versions "
                                          r"up to"):
        Store(f"sqlite:///{path}")
    spec = REPO / "examples" / "search-quick.yaml"
    assert main(["search", str(spec), "--db", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "newer hybridlab" in err and "Upgrade hybridlab" in err and "Traceback" not in err


def race_spec(folder: Path):
    path = folder / "race.yaml"
    path.write_text(RACE_SPEC)
    return load_search_spec(path)


def test_real_cli_process_prints_no_traceback(good_db, tmp_path):
    path = broken(good_db, tmp_path, "garbled-trials")
    done = subprocess.run([sys.executable, "-m", "hybridlab.cli.main", "search", "status", "s",
                           "--db", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "is damaged" in done.stderr and "Traceback" not in done.stderr


def test_the_database_file_is_never_opened_outside_sqlite(good_db, tmp_path, monkeypatch,
                                                          capsys):
    """Closing any descriptor of a SQLite file drops this process's locks on it (those of its
    live connections too): only SQLite may open it. A search's worker opened the file to read
    its header while its own connections were live, and a reader then met a "malformed" file."""
    path = tmp_path / "watched.db"
    path.write_bytes(good_db.read_bytes())
    opened = []
    real_open, real_os_open = open, os.open

    def spy_open(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    def spy_os_open(file, *a, **k):
        opened.append(str(file))
        return real_os_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    url = f"sqlite:///{path}"
    writer = Store(url)
    assert writer.study_names() == ["s"]
    optuna_storage(url)
    assert [r["name"] for r in Store(url, readonly=True).list_studies()] == ["s"]
    assert main(["search", "status", "s", "--db", str(path)]) == 0
    capsys.readouterr()
    assert not [f for f in opened if Path(f).resolve() == path.resolve()]


@pytest.mark.parametrize("url, phrase", [
    ("postgresql://someone:secret@127.0.0.1:1/nowhere", "cannot reach"),
    ("mysql://someone:secret@localhost/db", "database driver is not installed"),
    ("nonsense://x", "is not a database URL"),
    ("a b://x", "is not a database URL"),
])
def test_unusable_urls(url, phrase, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLAB_ARTIFACTS", str(tmp_path))   # a server search needs one
    for argv in (["studies", "--db", url], ["search", "status", "s", "--db", url],
                 ["search", str(REPO / "examples" / "search-quick.yaml"), "--db", url]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert phrase in err and "secret" not in err and "Traceback" not in err


def test_broken_postgres_databases(postgres_url, capsys):
    from sqlalchemy import text
    store = Store(postgres_url)
    optuna.create_study(storage=store.optuna_storage(), study_name="s").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert main(["studies", "--db", postgres_url]) == 0
    capsys.readouterr()
    with store.engine.begin() as conn:
        conn.execute(text(f"UPDATE hl_schema_version SET version = {SCHEMA_VERSION + 1}"))
    dispose_engines()
    for argv in (["studies", "--db", postgres_url], ["search", "status", "s", "--db",
                                                      postgres_url]):
        assert main(argv) == 2
        assert "written by a newer hybridlab" in capsys.readouterr().err
    with pytest.raises(SchemaError):
        Store(postgres_url)
    with Store(postgres_url, readonly=True).engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM hl_schema_version")).scalar() == \
            SCHEMA_VERSION + 1                             # refused, not migrated
    dispose_engines()
    from hybridlab.storage.engine import writer_engine
    with writer_engine(postgres_url).begin() as conn:
        conn.execute(text(f"UPDATE hl_schema_version SET version = {SCHEMA_VERSION}"))
        conn.execute(text("DROP TABLE hl_runs"))
    dispose_engines()
    assert main(["search", "status", "s", "--db", postgres_url]) == 2
    assert "missing hybridlab's table hl_runs" in capsys.readouterr().err
    with pytest.raises(StoreError, match="hl_runs"):
        Store(postgres_url)                                # never re-created behind your back


def test_empty_and_missing_files(tmp_path, capsys):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")                          # an empty file is an empty SQLite database
    assert main(["studies", "--db", str(empty)]) == 0
    assert "no studies" in capsys.readouterr().out
    assert main(["search", "status", "s", "--db", str(empty)]) == 2
    assert "no study 's'" in capsys.readouterr().err
    assert empty.read_bytes() == b""                # still empty: readers created nothing
    missing = tmp_path / "typo.db"
    for argv in (["studies", "--db", str(missing)], ["search", "status", "s", "--db",
                                                      str(missing)]):
        assert main(argv) == 2
        assert f"no database at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_readers_never_create_or_migrate_tables(tmp_path, capsys):
    """A plain Optuna database (someone else's): listed, and left exactly as it was."""
    path = tmp_path / "plain-optuna.db"
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="theirs")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    del study
    dispose_engines()
    before = sha(path)
    assert main(["studies", "--db", str(path)]) == 0
    assert "theirs" in capsys.readouterr().out
    assert main(["search", "status", "theirs", "--db", str(path)]) == 0
    capsys.readouterr()
    dispose_engines()
    assert sha(path) == before
    names = {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert not any(n.startswith("hl_") for n in names)
    assert not list(tmp_path.glob("*.lock"))        # readers take no locks


def test_unknown_study_and_control_characters_are_escaped(tmp_path, capsys):
    evil = "evil\x1b[31mred\nline\x07"
    path = tmp_path / "names.db"
    make_db(path, study=evil, n=1)
    assert main(["studies", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert repr(evil) in out and printable(evil) == repr(evil)
    assert main(["search", "status", evil, "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and repr(evil) in out
    assert main(["search", "status", "nope", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope'" in err and repr(evil) in err and "\x1b" not in err
    with pytest.raises(UnknownStudy) as e:          # a KeyError too, for callers that look up
        Store(f"sqlite:///{path}", readonly=True).study_summary("nope")
    assert isinstance(e.value, KeyError) and str(e.value).startswith("no study 'nope'")
    assert printable("plain name") == "plain name"


def test_each_joining_worker_gets_its_own_seed(tmp_path):
    url = make_db(tmp_path / "seeds.db")
    storage = optuna_storage(url)
    joins = [join_study(storage, "s") for _ in range(3)]
    assert joins == [0, 1, 2]
    assert [worker_seed(7, j) for j in joins] == [7, 8, 9]
    assert worker_seed(None, 0) != worker_seed(None, 0)      # random, and recorded by the run


# -- the start-up race ---------------------------------------------------------------------------
RACE_SPEC = """\
name: race
base:
  name: t
  model: {d_model: 16, vocab_size: 16}
  blocks:
    M: {type: mamba2, d_state: 4, headdim: 8, expand: 2, chunk_size: 8}
  layout: {layers: 1, mix: {M: 1}}
space:
  train.lr: {float: [1.0e-4, 1.0e-2], log: true}
tasks:
  - {name: parity, train_max_len: 8, test_min_len: 8, test_max_len: 10, test_examples: 16}
train: {steps: 100000, time_limit_s: 1.5, batch_size: 4, eval_points: 1, prune_at_frac: null}
cost: {prefill_len: 16, decode_steps: 2, decode_batch: 1, repeats: 1}
objectives:
  - {metric: quality, direction: maximize}
sampler: {name: random, seed: 0}
trials: 2
heartbeat: {interval_s: 5}
"""

# Imports done, say so, then wait for the starting gun: both processes reach the table creation
# within milliseconds of each other (before the fix, 4 tries in 5 lost one process).
GO = """\
import os, sys, time
import optuna, torch  # noqa: F401
import hybridlab.search.driver, hybridlab.search.objective, hybridlab.search.workers  # noqa
from hybridlab.cli.main import main
open(sys.argv[1] + f".ready-{os.getpid()}", "w").close()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.002)
sys.exit(main(sys.argv[2:]))
"""


def race(tmp_path: Path, db: str, tag: str) -> list[subprocess.CompletedProcess]:
    spec = tmp_path / "race.yaml"
    spec.write_text(RACE_SPEC)
    script = tmp_path / "go.py"
    script.write_text(GO)
    gun = tmp_path / f"go-{tag}"
    env = dict(os.environ, OMP_NUM_THREADS="1", HYBRIDLAB_ARTIFACTS=str(tmp_path / "art"))
    procs = [subprocess.Popen([sys.executable, str(script), str(gun), "search", str(spec),
                               "--db", db, "--no-progress", "--device", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    deadline = time.monotonic() + 120            # both processes' imports
    while (len(list(tmp_path.glob(f"{gun.name}.ready-*"))) < 2
           and time.monotonic() < deadline and all(p.poll() is None for p in procs)):
        time.sleep(0.05)
    gun.touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def check_race(results, db: str) -> None:
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
    store = Store(db, readonly=True)
    trials = store.trials("race")
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    runs = store.runs("race")
    pids = {runs[t["trial_id"]]["pid"] for t in trials}
    assert len(pids) == 2, "each process should have run one trial"
    seeds = [t["user_attrs"]["sampler_seed"] for t in trials]
    assert sorted(seeds) == [0, 1], seeds                 # the spec's seed, then the next
    lrs = [t["params"]["train.lr"] for t in trials]
    assert lrs[0] != lrs[1], "two processes drew the same candidate"
    dispose_engines()


def test_two_searches_started_at_once_on_a_new_sqlite_file(tmp_path):
    for attempt in range(2):            # the code before the schema lock failed 3 tries in 3
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        db = f"sqlite:///{folder / 'fresh.db'}"
        check_race(race(folder, db, str(attempt)), db)


def test_two_searches_started_at_once_on_a_new_postgres_database(postgres_url, tmp_path):
    check_race(race(tmp_path, postgres_url, "pg"), postgres_url)
