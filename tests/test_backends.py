"""One contract, two back-ends: every test here runs on a SQLite file and on a real PostgreSQL
server (tests/postgres_server.py; in CI a server that cannot start fails these tests).

* two workers (``--workers 2``) and a separate process on one study;
* SIGKILL of a search mid-trial, then the same command again: the killed trial is retried and
  the study reaches its trial count;
* the UI's reader (``Store(url, readonly=True)`` and ``storage.views``) reading while a search
  writes;
* two processes started at once on a fresh database, from different working directories
  ("machines") writing to one database and one shared artifact folder; a third process in a
  third folder exports the winner;
* the artifact store: PostgreSQL refuses a search without ``--artifacts``, a joining process
  must give the study's shared folder (mounted anywhere), readers resolve through the store.

Every search runs as its own ``hybridlab`` process, as a user would start it, with a tiny
one-layer model trained for a fixed wall-clock time.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hybridlab.cli.main import main
from hybridlab.export.source import find_trial
from hybridlab.storage import Store, views
from hybridlab.storage.artifacts import (MARKER, ArtifactsError, ArtifactStore, attach,
                                         open_root, recorded, trial_path)
from hybridlab.storage.engine import dispose_engines
from hybridlab.storage.repository import file_sha256

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec_text(name: str, trials: int, seconds: float) -> str:
    """A search whose trials each train a 1-layer d_model-16 Mamba-2 for ``seconds``."""
    return yaml.safe_dump({
        "name": name,
        "base": {"name": "t", "model": {"d_model": 16, "vocab_size": 16},
                 "blocks": {"M": {"type": "mamba2", "d_state": 4, "headdim": 8, "expand": 2,
                                  "chunk_size": 8}},
                 "layout": {"layers": 1, "mix": {"M": 1}}},
        "space": {"train.lr": {"float": [1.0e-4, 1.0e-2], "log": True}},
        "tasks": [{"name": "parity", "train_max_len": 8, "test_min_len": 8, "test_max_len": 10,
                   "test_examples": 16}],
        "train": {"steps": 100000, "time_limit_s": seconds, "batch_size": 4, "eval_points": 1,
                  "prune_at_frac": None},
        "cost": {"prefill_len": 16, "decode_steps": 2, "decode_batch": 1, "repeats": 1},
        "objectives": [{"metric": "quality", "direction": "maximize"}],
        "sampler": {"name": "random", "seed": 0},
        "trials": trials,
        # a short grace, but not so short that a busy machine's late heartbeat fails a live trial
        "heartbeat": {"interval_s": 1, "grace_s": 10},
    }, sort_keys=False)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path) -> str:
    """The contract's database: a new SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'runs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(autouse=True)
def _fresh_engines(monkeypatch):
    monkeypatch.delenv("HYBRIDLAB_ARTIFACTS", raising=False)
    yield
    dispose_engines()


def machine(tmp_path: Path, tag: str, spec: str) -> Path:
    """A working folder of its own (one "machine") holding its copy of the search spec."""
    folder = tmp_path / tag
    folder.mkdir()
    (folder / "search.yaml").write_text(spec)
    return folder


def env() -> dict:
    out = dict(os.environ, OMP_NUM_THREADS="1")
    out.pop("HYBRIDLAB_ARTIFACTS", None)
    return out


def hybridlab(cwd: Path, *args: str, gun: Path | None = None) -> subprocess.Popen:
    """``hybridlab ARGS`` started in ``cwd``; with ``gun``, it imports everything, says so,
    and waits for the file ``gun`` before it runs."""
    pre = ["-m", "hybridlab.cli.main"]
    if gun is not None:
        script = gun.with_name("go.py")
        script.write_text(GO)
        pre = [str(script), str(gun)]
    return subprocess.Popen([sys.executable, *pre, *args], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"{result.args}: {result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def search_args(url: str, artifacts: str | Path, *extra: str) -> list[str]:
    return ["search", "search.yaml", "--db", url, "--artifacts", str(artifacts),
            "--no-progress", "--device", "cpu", *extra]


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


def wait_for(pred, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args} exited ({p.returncode}) while waiting for "
                                     f"{what}: {p.stderr.read()[-3000:] if p.stderr else ''}")
        try:
            if pred():
                return
        except Exception:      # the study or tables may not exist yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def ready(gun: Path, n: int) -> bool:
    return len(list(gun.parent.glob(f"{gun.name}.ready-*"))) >= n


def check_study(url: str, name: str, trials: int, shared: Path) -> list[dict]:
    """Exactly ``trials`` trials, all complete, each with its weights in the shared folder
    (where the study records it), byte for byte as the database recorded them."""
    ui = Store(url, readonly=True)
    rows = ui.trials(name)
    assert [r["state"] for r in rows] == ["COMPLETE"] * trials, \
        [(r["state"], r["failure_reason"]) for r in rows]
    root = shared.resolve()
    assert recorded(ui, name)["root"] == str(root)
    for r in rows:
        weights = {a["kind"]: a for a in ui.artifacts(r["trial_id"])}["weights"]
        path = trial_path(root, name, r["number"], "model.safetensors")
        assert weights["path"] == str(path)
        assert file_sha256(path) == (weights["sha256"], weights["size"])
    return rows


# -- the contract ------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_workers_and_another_process_share_one_study(db, tmp_path):
    """``--workers 2`` on one machine and a second ``hybridlab search`` on another join one
    study: exactly its trial count is run, by all three workers, each drawing with its own
    seed, every file in the one shared folder."""
    spec = spec_text("shared", trials=6, seconds=1.0)
    a, b = machine(tmp_path, "a", spec), machine(tmp_path, "b", spec)
    shared = tmp_path / "shared"
    gun = tmp_path / "go-b"
    proc_b = hybridlab(b, *search_args(db, shared), gun=gun)       # imports while A starts
    proc_a = hybridlab(a, *search_args(db, "../shared", "--workers", "2"))

    def both_workers_training():
        runs = Store(db, readonly=True).runs("shared").values()
        return len({r["pid"] for r in runs if r["status"] == "running"}) == 2
    try:
        wait_for(both_workers_training, 240, "both workers of A training", [proc_a])
        wait_for(lambda: ready(gun, 1), 120, "B's imports", [proc_b])
    finally:
        gun.touch()                 # B joins while A's workers are mid-trial
    result_a, result_b = finish(proc_a), finish(proc_b)
    ok(result_a)
    ok(result_b)

    rows = check_study(db, "shared", 6, shared)
    runs = Store(db, readonly=True).runs("shared")
    pids = {runs[r["trial_id"]]["pid"] for r in rows}
    assert proc_b.pid in pids, "the second process ran no trial"
    assert len(pids - {proc_b.pid}) == 2, "each of A's two workers should have run trials"
    seeds = {}
    for r in rows:
        seeds.setdefault(runs[r["trial_id"]]["pid"], set()).add(r["user_attrs"]["sampler_seed"])
    assert all(len(s) == 1 for s in seeds.values())
    assert len(set().union(*seeds.values())) == 3, f"workers drew with the same seed: {seeds}"
    assert len({r["params"]["train.lr"] for r in rows}) == 6


@pytest.mark.slow
def test_sigkill_mid_trial_then_the_same_command_resumes(db, tmp_path):
    """A search killed with SIGKILL mid-trial: run again (here from another folder), it fails
    the killed trial by its stale heartbeat, retries it with the same parameters and reaches
    the study's trial count; the finished trial is kept as it was."""
    spec = spec_text("killed", trials=3, seconds=3.0)
    a, b = machine(tmp_path, "a", spec), machine(tmp_path, "b", spec)
    shared = tmp_path / "shared"
    proc = hybridlab(a, *search_args(db, shared))
    try:
        def one_done_one_training():
            runs = Store(db, readonly=True).runs("killed").values()
            return (sum(r["status"] == "complete" for r in runs) == 1 and
                    sum(r["status"] == "running" and r["step"] is not None for r in runs) == 1)
        wait_for(one_done_one_training, 240, "a finished trial and one mid-training", [proc])
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        killed = finish(proc, timeout=30)
    assert killed.returncode == -signal.SIGKILL
    ui = Store(db, readonly=True)
    before = ui.trials("killed")
    assert [r["state"] for r in before] == ["COMPLETE", "RUNNING"]

    ok(finish(hybridlab(b, *search_args(db, shared))))
    ui = Store(db, readonly=True)
    rows = ui.trials("killed")
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert rows[0]["values"] == before[0]["values"]                       # nothing lost
    retry = [r for r in rows if r["retried_from"] == 1]
    assert len(retry) == 1 and retry[0]["params"] == before[1]["params"]
    assert retry[0]["state"] == "COMPLETE"
    assert ui.run(rows[1]["trial_id"])["status"] == "failed"
    assert "heartbeat" in ui.run(rows[1]["trial_id"])["failure_reason"]
    assert ui.study_summary("killed")["finished"] == 3
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    for r in complete:
        assert find_trial(ui, "killed", trial=r["number"]).weights.is_relative_to(
            shared.resolve())


def test_the_ui_reads_while_a_search_writes(db, tmp_path):
    """The UI's reader polls everything it shows while a search runs: it never fails, never
    blocks the search (even holding a read transaction open), and sees the study grow."""
    spec = spec_text("watched", trials=4, seconds=1.5)
    a = machine(tmp_path, "a", spec)
    shared = tmp_path / "shared"
    proc = hybridlab(a, *search_args(db, shared))
    seen_done, tokens, reads = set(), set(), 0
    try:
        while proc.poll() is None:
            ui = Store(db, readonly=True)
            token = views.change_token(ui)
            tokens.add(token)
            if "watched" in views.study_names(ui):
                rows = views.flat_trials(ui, "watched", token)
                progress = views.progress(ui, "watched")
                # None for a moment: the study exists before its attributes are written
                assert progress["target"] in (None, 4) and progress["done"] <= 4
                seen_done.add(progress["done"])
                ui.study_summary("watched")
                views.hypervolume_history(ui, "watched", token)
                for r in rows:
                    if r["state"] == "COMPLETE":
                        detail = ui.trial_detail("watched", r["number"])
                        assert {x["kind"] for x in detail["artifacts"]} == {"weights", "spec"}
                reads += 1
                if ui.engine is not None:         # a read transaction held across writes
                    with ui.engine.connect() as conn:
                        conn.exec_driver_sql("SELECT count(*) FROM trials").scalar()
                        time.sleep(0.5)
            time.sleep(0.1)
    finally:
        result = finish(proc)
    ok(result)
    assert reads >= 3, "the reader never saw the study while it ran"
    assert len(tokens) >= 3, "change_token did not follow the search"
    assert seen_done & {1, 2, 3}, f"never saw the study part-way: {sorted(seen_done)}"
    check_study(db, "watched", 4, shared)
    final = views.progress(Store(db, readonly=True), "watched")
    assert (final["done"], final["target"]) == (4, 4)


def test_two_machines_start_at_once_and_a_third_exports_the_winner(db, tmp_path):
    """Two processes in different folders start at the same instant on a fresh database, with
    one shared artifact folder (one names it relatively): both succeed, with different seeds.
    A third process, in a third folder, exports the best trial through the database alone."""
    spec = spec_text("race", trials=2, seconds=1.0)
    a, b, c = (machine(tmp_path, t, spec) for t in "abc")
    shared = tmp_path / "shared"
    gun = tmp_path / "go-race"
    procs = [hybridlab(a, *search_args(db, "../shared"), gun=gun),
             hybridlab(b, *search_args(db, shared), gun=gun)]
    try:
        wait_for(lambda: ready(gun, 2), 120, "both processes' imports", procs)
    finally:
        gun.touch()
    for result in [finish(p) for p in procs]:
        ok(result)
    rows = check_study(db, "race", 2, shared)
    runs = Store(db, readonly=True).runs("race")
    assert {runs[r["trial_id"]]["pid"] for r in rows} == {p.pid for p in procs}
    assert sorted(r["user_attrs"]["sampler_seed"] for r in rows) == [0, 1]
    assert not (a / "hybridlab-artifacts").exists() and not (b / "hybridlab-artifacts").exists()

    ok(finish(hybridlab(c, "export", "--db", db, "--study", "race", "--best", "quality",
                        "--out", "winner")))
    ui = Store(db, readonly=True)
    best = views.best_trial(ui, "race", "quality")
    metrics = json.loads((c / "winner" / "metrics.json").read_text())
    assert (metrics["study"], metrics["trial"]) == ("race", best["number"])
    exported = load_file(str(c / "winner" / "model.safetensors"))
    stored = load_file(str(trial_path(shared, "race", best["number"], "model.safetensors")))
    assert exported.keys() == stored.keys()
    assert all(torch.equal(exported[k], stored[k]) for k in stored)
    assert sorted(p.name for p in c.iterdir()) == ["search.yaml", "winner"]


# -- the artifact store --------------------------------------------------------------------------
def test_postgres_refuses_a_search_without_a_shared_folder(postgres_url, tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text("nofolder", trials=1, seconds=0.2))
    assert main(["search", str(spec), "--db", postgres_url, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs --artifacts DIR" in err and "Traceback" not in err
    assert Store(postgres_url, readonly=True).study_names() == []   # nothing was created
    from hybridlab.search.driver import run_search
    with pytest.raises(ArtifactsError, match="HYBRIDLAB_ARTIFACTS"):   # the Python API too
        run_search(str(spec), db=postgres_url)


def test_a_joining_process_must_give_the_shared_folder(db, tmp_path, capsys, monkeypatch):
    """A folder that is not the study's (its own disk) is refused before anything is trained;
    the same folder reached by another path (mounted elsewhere) is accepted; a reader that
    mounts it elsewhere finds the weights through HYBRIDLAB_ARTIFACTS."""
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text("joined", trials=1, seconds=0.3))
    shared, local = tmp_path / "shared", tmp_path / "local-disk"
    run = ["search", str(spec), "--db", db, "--no-progress", "--device", "cpu"]
    assert main(run + ["--artifacts", str(shared)]) == 0
    assert (shared / MARKER).is_file()

    capsys.readouterr()
    assert main(run + ["--artifacts", str(local), "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert f"--artifacts {local} is not the artifact folder of study 'joined'" in err
    assert str(shared.resolve()) in err and "holds no marker" in err
    assert not local.exists()                                  # nothing written there
    assert len(Store(db, readonly=True).trials("joined")) == 1  # nothing trained

    other = tmp_path / "other-store"                           # another store's folder
    open_root(other)
    assert main(run + ["--artifacts", str(other), "--trials", "2"]) == 2
    assert "is marked as another artifact folder" in capsys.readouterr().err

    mount = tmp_path / "mount"                                 # the share, mounted elsewhere
    mount.symlink_to(shared, target_is_directory=True)
    assert main(run + ["--artifacts", str(mount), "--trials", "2"]) == 0
    rows = check_study(db, "joined", 2, shared)

    moved = tmp_path / "moved"                                 # a reader that mounts it here
    mount.unlink()
    shared.rename(moved)
    out = tmp_path / "exported"
    assert main(["export", "--db", db, "--study", "joined", "--trial", "1", "--out",
                 str(out)]) == 2
    assert "missing or changed" in capsys.readouterr().err
    monkeypatch.setenv("HYBRIDLAB_ARTIFACTS", str(moved))
    assert main(["export", "--db", db, "--study", "joined", "--trial", "1", "--out",
                 str(out)]) == 0
    assert find_trial(Store(db, readonly=True), "joined", trial=rows[1]["number"]).weights \
        == trial_path(moved, "joined", 1, "model.safetensors")


def test_sqlite_default_folder_is_beside_the_file_and_recorded(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text("plain", trials=1, seconds=0.2))
    db = tmp_path / "runs.db"
    assert main(["search", str(spec), "--db", str(db), "--no-progress", "--device", "cpu"]) == 0
    check_study(f"sqlite:///{db}", "plain", 1, tmp_path / "runs-artifacts")


def test_nothing_is_written_outside_the_folder(tmp_path):
    store = open_root(tmp_path / "root")
    assert open_root(tmp_path / "root").id == store.id               # the marker is kept
    inside = store.make_trial_folder("../../evil", 3)
    assert inside == store.root / "evil" / "trial-00003"
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArtifactsError, match="leads out of the artifact folder"):
        store.make_trial_folder("linked", 0)
    assert list(outside.iterdir()) == []
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    (inside / "spec.yaml").symlink_to(victim)
    store.write(inside, "spec.yaml", lambda tmp: tmp.write_text("name: x\n"))
    assert victim.read_text() == "keep me"                        # replaced, never followed
    assert (inside / "spec.yaml").read_text() == "name: x\n"
    assert not (inside / "spec.yaml").is_symlink()
    for bad in ("../x", "a/b", ".."):
        with pytest.raises(ArtifactsError, match="not a plain file name"):
            store.write(inside, bad, lambda tmp: tmp.write_text(""))
    (store.root / MARKER).write_text("not json")
    with pytest.raises(ArtifactsError, match="is not a hybridlab artifact marker"):
        open_root(store.root)
    assert isinstance(store, ArtifactStore)


def test_attach_records_once_and_checks_after(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = Store(url)
    optuna.create_study(storage=store.optuna_storage(), study_name="s")
    first = attach(store, "s", tmp_path / "one")
    assert recorded(store, "s") == {"root": str(first.root), "id": first.id}
    assert attach(store, "s", tmp_path / "one") == first
    with pytest.raises(ArtifactsError, match="holds no marker"):
        attach(store, "s", tmp_path / "two")
    assert recorded(store, "s")["root"] == str(first.root)        # never overwritten
