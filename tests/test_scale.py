"""`hybridlab scale` on the CPU at tiny size: a real tiny search as the proxy, its layouts
stretched and trained again (real training, a few steps), the linked study, the report's rank
correlations against agreement() on the stored values, resume, failures, and the user errors."""
from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

import hybridlab.search.scale_run as scale_run
from hybridlab.cli.main import main
from hybridlab.composer.loader import load_spec
from hybridlab.errors import SpecError, StoreError
from hybridlab.search.agreement import agreement
from hybridlab.search.driver import run_search
from hybridlab.search.scale import plan_scale, read_scale, scale_study
from hybridlab.storage import Store, StudyLock, linked_studies, open_linked_study, proxy_of
from hybridlab.storage.engine import dispose_engines
from test_search import TINY

optuna.logging.set_verbosity(optuna.logging.WARNING)

# byte-level text at a tiny size: scores are continuous (1 - bpb/8), so rankings have no ties
TEXT = {"name": "bytes_lm", "seq_len": 16, "max_train_bytes": 20000, "max_val_bytes": 340}
TEXT_SETTINGS = {k: v for k, v in TEXT.items() if k != "name"}
TASK_ARG = "bytes_lm:seq_len=16,max_train_bytes=20000,max_val_bytes=340"
# four distinct layouts first, then two random trials of the same four: two reuse earlier ones
LAYOUTS = [{"blocks.M.type": t, 'layout.mix."*"': a} for t in ("mamba1", "mamba2") for a in (0, 1)]
SIZE = ["--d-model", "24", "--layers", "3", "--steps", "3", "--batch-size", "4",
        "--eval-points", "1", "--task", TASK_ARG]


def _proxy_spec(tmp_path: Path, name: str, trials: int, baselines) -> str:
    data = copy.deepcopy(TINY)
    data.update(name=name, trials=trials, baselines=baselines, tasks=[TEXT],
                space={"blocks.M.type": {"choice": ["mamba1", "mamba2"]},
                       'layout.mix."*"': {"choice": [0, 1]}})
    data["base"]["model"]["vocab_size"] = 256
    data["train"] = {"steps": 6, "batch_size": 4, "eval_points": 1, "prune_at_frac": None}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def proxy_db(tmp_path_factory):
    """A real tiny search (6 trials, 4 distinct layouts) and one with too few layouts."""
    tmp = tmp_path_factory.mktemp("scale")
    db = f"sqlite:///{tmp / 'runs.db'}"
    run_search(_proxy_spec(tmp, "proxy", 6, LAYOUTS), db=db, save_artifacts=False)
    run_search(_proxy_spec(tmp, "small", 2, LAYOUTS[:2]), db=db, save_artifacts=False)
    yield db
    dispose_engines()


def _rows(db: str, study: str) -> list[dict]:
    return Store(db, readonly=True).trials(study)


def test_scale_end_to_end(proxy_db, capsys):
    proxy = {r["number"]: r for r in _rows(proxy_db, "proxy")}
    assert sum(r["reused_from"] is not None for r in proxy.values()) == 2
    assert main(["scale", "--db", proxy_db, "--study", "proxy", "--seeds", "2", "--json",
                 "--no-progress", *SIZE]) == 0
    report = json.loads(capsys.readouterr().out)
    linked = "proxy@scale-d24-l3"
    assert report["study"] == linked and report["proxy_study"] == "proxy"
    assert report["trained"] == 4 and report["selection"] == "all 4 (top 8 asked)"

    # each distinct layout once, never a trial that reused another, best proxy quality first
    chosen = [lay["proxy_trial"] for lay in report["layouts"]]
    assert len(chosen) == 4 and all(proxy[n]["reused_from"] is None for n in chosen)
    assert len({proxy[n]["arch_hash"] for n in chosen}) == 4
    qualities = [proxy[n]["values"]["quality"] for n in chosen]
    assert qualities == sorted(qualities, reverse=True)
    assert len(report["skipped"]) == 2

    # the linked study: one trial per layout, linked to its proxy trial, readable as any study
    store = Store(proxy_db, readonly=True)
    assert proxy_of(store, linked) == "proxy"
    assert linked in [s["name"] for s in linked_studies(store, "proxy")]
    assert main(["studies", "--db", proxy_db, "--json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert listed[linked]["counts"]["COMPLETE"] == 4
    assert listed[linked]["metric_names"] == ["quality", "params_total", "state_bytes@1024"]
    rows = store.trials(linked)
    assert sorted(r["user_attrs"]["proxy_trial"] for r in rows) == sorted(chosen)
    for r in rows:
        ua = r["user_attrs"]
        src = proxy[ua["proxy_trial"]]
        assert ua["proxy_arch_hash"] == src["arch_hash"] and ua["proxy_study"] == "proxy"
        assert len(ua["quality_seeds"]) == 2
        assert r["values"]["quality"] == pytest.approx(sum(ua["quality_seeds"]) / 2)
        assert r["metrics"]["seed1/quality"] == pytest.approx(ua["quality_seeds"][1])
        # stretched: same mixers, wider and deeper, a byte vocabulary
        detail = store.trial_detail(linked, r["number"])
        scaled = load_spec(detail["spec_yaml"])
        base = load_spec(store.architecture(src["arch_hash"])["spec_yaml"])
        assert scaled.model.d_model == 24 and scaled.model.vocab_size == 256
        mixers = {"mamba1", "mamba2", "attention"}
        assert {x.type for x in scaled.layers} & mixers == {x.type for x in base.layers} & mixers
        assert sum(x.type in mixers for x in scaled.layers) == 3
        assert r["values"]["params_total"] == pytest.approx(detail["costs"]["params_total"])
        assert len(detail["curves"]["train/loss"]) == 3
        assert len(detail["curves"]["seed1/train/loss"]) == 3
        assert {a["kind"] for a in detail["artifacts"]} == {"weights", "spec"}

    # the correlations are agreement() on the stored values
    by_proxy = {r["user_attrs"]["proxy_trial"]: r["values"]["quality"] for r in rows}
    expect = agreement([proxy[n]["values"]["quality"] for n in chosen],
                       [by_proxy[n] for n in chosen])
    got = report["agreement"]
    assert got["n"] == 4
    assert got["spearman"] == pytest.approx(expect.spearman)
    assert got["kendall"] == pytest.approx(expect.kendall)
    assert got["spearman_ci"] == pytest.approx(list(expect.spearman_ci))
    assert got["kendall_ci"] == pytest.approx(list(expect.kendall_ci))

    # fronts: the proxy study's own, and the scaled one over the stored values
    proxy_front = {r["arch_hash"] for r in store.pareto("proxy")}
    scaled_front = {r["user_attrs"]["proxy_trial"] for r in store.pareto(linked)}
    assert set(report["scaled_front"]) == scaled_front
    for lay in report["layouts"]:
        assert lay["on_proxy_front"] == (proxy[lay["proxy_trial"]]["arch_hash"] in proxy_front)
        assert lay["on_scaled_front"] == (lay["proxy_trial"] in scaled_front)
    on_proxy = {lay["proxy_trial"] for lay in report["layouts"] if lay["on_proxy_front"]}
    assert set(report["stays"]) == on_proxy & scaled_front
    assert set(report["drops"]) == on_proxy - scaled_front
    assert set(report["joins"]) == scaled_front - on_proxy

    # the same report read back from the database alone (the UI's way: read-only, no plan)
    stored = read_scale(Store(proxy_db, readonly=True), linked).as_dict()
    assert stored["agreement"] == report["agreement"]
    for key in ("scaled_front", "stays", "drops", "joins", "steps", "seeds", "tasks"):
        assert stored[key] == report[key], key
    assert [(x["proxy_trial"], x["quality"], x["on_proxy_front"]) for x in stored["layouts"]] \
        == [(x["proxy_trial"], x["quality"], x["on_proxy_front"]) for x in report["layouts"]]

    # the scaled weights export like any trial's
    out = Path(proxy_db.removeprefix("sqlite:///")).parent / "export"
    assert main(["export", "--db", proxy_db, "--study", linked, "--trial", "0",
                 "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file()
    capsys.readouterr()

    # again: nothing is retrained, the same numbers come back, in text
    assert main(["scale", "--db", proxy_db, "--study", "proxy", "--seeds", "2",
                 "--no-progress", *SIZE]) == 0
    out = capsys.readouterr().out
    assert "trained 0 now, 4 from earlier runs" in out
    assert "Spearman rho = " in out and "scaled Pareto front" in out
    assert f"{expect.spearman:.3f}" in out
    assert len(store.trials(linked)) == 4


def test_failed_layout_is_recorded_and_retried(proxy_db, monkeypatch):
    real = scale_run.train_model
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(scale_run, "train_model", flaky)
    kw = dict(top=3, d_model=16, layers=2, steps=2, tasks=[("bytes_lm", TEXT_SETTINGS)],
        batch_size=4, eval_points=1, save_weights=False)
    first = scale_study(proxy_db, "proxy", **kw)
    assert first.study == "proxy@scale-d16-l2" and first.trained == 3
    failed = [lay for lay in first.layouts if lay.status == "failed"]
    assert len(failed) == 1 and "simulated out of memory" in failed[0].failure_reason
    assert first.agreement is None and "only 2 of 3" in first.agreement_note
    assert "failed: RuntimeError: simulated out of memory" in first.describe()

    again = scale_study(proxy_db, "proxy", **kw)             # only the failed one trains
    assert again.trained == 1 and len(calls) == 4
    assert all(lay.status == "complete" for lay in again.layouts)
    assert again.agreement is not None and again.agreement.n == 3
    states = [r["state"] for r in _rows(proxy_db, "proxy@scale-d16-l2")]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]

    # a trial left running by a scale process that was killed is failed by the next run
    left = optuna.load_study(study_name="proxy@scale-d16-l2", storage=proxy_db).ask()
    assert scale_study(proxy_db, "proxy", **kw).trained == 0
    rows = {r["number"]: r for r in _rows(proxy_db, "proxy@scale-d16-l2")}
    assert rows[left.number]["state"] == "FAIL" and len(calls) == 4


def test_plan_chooses_without_training(proxy_db):
    store = Store(proxy_db)
    plan = plan_scale(store, "proxy", top=3, d_model=32, layers=4, steps=10)
    assert len(plan.candidates) == 3 and plan.tasks == (("bytes_lm", {}),)
    assert plan.study_name == "proxy@scale-d32-l4" and plan.context == 1024
    qualities = [c.proxy_quality for c in plan.candidates]
    assert qualities == sorted(qualities, reverse=True)
    assert all(c.costs["params_total"] > 0 for c in plan.candidates)
    assert "proxy@scale-d32-l4" not in store.study_names()       # planning writes nothing


@pytest.mark.parametrize("argv, message", [
    (["--study", "nope"], "no study 'nope'"),
    (["--study", "small"], "ranking needs at least 3"),
    (["--study", "proxy", "--top", "2"], "--top: must be at least 3"),
    (["--study", "proxy", "--d-model", "0"], "--d-model: must be a positive integer"),
    (["--study", "proxy", "--seeds", "0"], "--seeds: must be a positive integer"),
    (["--study", "proxy", "--task", "nosuch"], "unknown task 'nosuch'"),
    (["--study", "proxy", "--nproc", "0"], "--nproc: must be a positive integer"),
    (["--study", "proxy", "--name", "small"], "not a linked study"),
    (["--study", "proxy", "--name", "proxy"], "not a linked study"),
    (["--study", "proxy", "--db", "postgresql+psycopg://u@127.0.0.1:9/none"], "--artifacts DIR"),
    (["--study", "proxy", "--name", "measured-otherwise"],
     "was measured with steps=99; this run asks steps=3"),
])
def test_user_errors_exit_2(proxy_db, capsys, argv, message):
    store = Store(proxy_db)
    other = plan_scale(store, "proxy", top=3, d_model=24, layers=3, steps=99, batch_size=4,
                       eval_points=1, tasks=[("bytes_lm", TEXT_SETTINGS)])
    with StudyLock(store.url, "measured-otherwise"):    # a linked study of other settings
        open_linked_study(store, "measured-otherwise", proxy="proxy", kind="scale",
                          directions=other.directions, metric_names=other.metric_names,
                          settings=other.settings())
    given = set(argv[::2])
    extra = [x for k, v in zip(SIZE[::2], SIZE[1::2]) if k not in given for x in (k, v)]
    db = [] if "--db" in given else ["--db", proxy_db]
    assert main(["scale", *db, "--no-progress", *argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_nproc_matches_one_process(proxy_db):
    """--nproc 2 on the CPU (gloo): the same global batch, so the same scaled qualities."""
    kw = dict(top=3, d_model=16, layers=2, steps=3, tasks=[("bytes_lm", TEXT_SETTINGS)],
              batch_size=4, eval_points=1, device="cpu", save_weights=False)
    one = scale_study(proxy_db, "proxy", name="one-process", **kw)
    two = scale_study(proxy_db, "proxy", name="two-processes", nproc=2, **kw)
    assert two.trained == 3 and [x.status for x in two.layouts] == ["complete"] * 3
    assert [x.quality for x in two.layouts] == pytest.approx([x.quality for x in one.layouts],
                                                             rel=1e-5)


def test_front_chooses_the_proxy_front(proxy_db):
    store = Store(proxy_db)
    front = {r["arch_hash"] for r in store.pareto("proxy")}
    kw = dict(front=True, d_model=16, layers=2, steps=2, tasks=[("bytes_lm", TEXT_SETTINGS)])
    if len(front) >= 3:
        plan = plan_scale(store, "proxy", **kw)
        assert {c.proxy_arch for c in plan.candidates} == front and plan.selection == "front"
        assert all(c.on_proxy_front for c in plan.candidates)
    else:                               # this tiny search's front: too few layouts to rank
        with pytest.raises(SpecError, match=f"has {len(front)} layouts on its Pareto front"):
            plan_scale(store, "proxy", **kw)


@pytest.mark.slow
def test_ctrl_c_records_the_layout_and_resumes(proxy_db):
    """SIGINT while a layout trains: exit 130, its trial FAIL / interrupted (a FAIL trial is
    trained again by the next run: test_failed_layout_is_recorded_and_retried)."""
    argv = [sys.executable, "-m", "hybridlab.cli.main", "scale", "--db", proxy_db, "--study",
            "proxy", "--top", "3", "--name", "interrupted", "--d-model", "16", "--layers", "2",
            "--batch-size", "4", "--eval-points", "1", "--task", TASK_ARG, "--no-progress"]
    proc = subprocess.Popen(argv + ["--steps", "100000"], stderr=subprocess.PIPE, text=True)
    store = Store(proxy_db, readonly=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        names = store.study_names()
        runs = store.runs("interrupted").values() if "interrupted" in names else []
        if any((r.get("step") or 0) > 0 for r in runs):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    rows = store.trials("interrupted")
    assert [(r["state"], r["status"]) for r in rows] == [("FAIL", "interrupted")]


def test_read_scale_refuses_other_studies(proxy_db):
    store = Store(proxy_db, readonly=True)
    with pytest.raises(StoreError, match="is not a scale of another study"):
        read_scale(store, "small")
    with pytest.raises(StoreError, match="no study 'nope'"):
        read_scale(store, "nope")
