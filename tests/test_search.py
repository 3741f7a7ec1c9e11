"""A real search end to end on the CPU (tiny models, real training, a few steps): recording,
artifacts, resume, duplicate reuse, constraints, two workers on one SQLite file, the CLI."""
from __future__ import annotations

import copy
import hashlib

import optuna
import pytest
import torch
import yaml

import hybridlab
from hybridlab.cli.main import main
from hybridlab.errors import SpecError
from hybridlab.search.driver import run_search
from hybridlab.storage import Store
from hybridlab.storage.engine import dispose_engines

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {
    "name": "tiny",
    "base": {
        "name": "t",
        "model": {"d_model": 16, "vocab_size": 16},
        "blocks": {
            "M": {"type": "mamba2", "d_state": 4, "headdim": 8, "expand": 2, "chunk_size": 8},
            "*": {"type": "attention", "n_heads": 2},
        },
        "layout": {"layers": 2, "mix": {"M": 1, "*": 1}},
    },
    "space": {
        "blocks.M.type": {"choice": ["mamba1", "mamba2"]},
        "blocks.M.d_state": {"choice": [2, 4]},
        'layout.mix."*"': {"choice": [0, 1]},
    },
    "tasks": [{"name": "parity", "train_max_len": 8, "test_min_len": 8, "test_max_len": 10,
               "test_examples": 16}],
    "train": {"steps": 8, "batch_size": 4, "eval_points": 1, "prune_at_frac": None},
    "cost": {"prefill_len": 16, "decode_steps": 2, "decode_batch": 1, "repeats": 1},
    "objectives": [{"metric": "quality", "direction": "maximize"},
                   {"metric": "state_bytes@1024", "direction": "minimize"}],
    "sampler": {"name": "random", "seed": 0},
    "trials": 4,
    "heartbeat": {"interval_s": 1, "grace_s": 3},
}


def tiny_spec(tmp_path, name: str = "tiny", **changes) -> str:
    """Write the tiny search spec (top-level keys replaced by ``changes``); return its path."""
    data = copy.deepcopy(TINY)
    data["name"] = name
    data.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture(autouse=True)
def _fresh_engines():
    yield
    dispose_engines()


def states(study):
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def test_real_search_records_everything(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = tiny_spec(tmp_path, baselines=[{"blocks.M.type": "mamba2", "blocks.M.d_state": 4,
                                           'layout.mix."*"': 1}])
    assert main(["search", spec, "--db", db, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "study tiny:" in out and "Pareto front" in out

    study = optuna.load_study(study_name="tiny", storage=db)     # a plain Optuna storage
    assert len(study.trials) == 4 and all(s in ("COMPLETE",) for s in states(study))
    assert study.metric_names == ["quality", "state_bytes@1024"]
    assert study.trials[0].params == {"blocks.M.type": "mamba2", "blocks.M.d_state": 4,
                                      'layout.mix."*"': 1}            # the baseline ran first
    assert study.best_trials

    ui = Store(db, readonly=True)
    rows = ui.trials("tiny")
    arch_trials = [r for r in rows if r["reused_from"] is None]
    for r in rows:
        assert r["status"] == "complete" and r["pattern"] in ("MM", "M*", "*M")
        assert 0.0 <= r["values"]["quality"] <= 1.0
        assert r["metrics"]["score/parity"] == pytest.approx(r["values"]["quality"])
        assert r["metrics"]["cost/state_bytes@1024"] == r["values"]["state_bytes@1024"]
        assert r["metrics"]["cost/decode_tokens_per_s"] > 0
        assert r["metrics"]["train/train_tokens_per_s"] > 0
    detail = ui.trial_detail("tiny", arch_trials[0]["number"])
    assert detail["run"]["torch_version"] == torch.__version__
    assert detail["run"]["optuna_version"] == optuna.__version__
    assert len(detail["curves"]["train/loss"]) == 8
    assert "eval/quality" in detail["curves"]
    assert detail["scores"] == {"parity": pytest.approx(detail["values"]["quality"])}
    # artifacts: weights + spec beside the database, with the right hash; they load back
    arts = {a["kind"]: a for a in detail["artifacts"]}
    assert set(arts) == {"weights", "spec"}
    for a in arts.values():
        assert a["path"].startswith(str(tmp_path / "runs-artifacts" / "tiny"))
        data = open(a["path"], "rb").read()
        assert hashlib.sha256(data).hexdigest() == a["sha256"] and len(data) == a["size"]
    model_spec = hybridlab.load_spec(arts["spec"]["path"])
    assert model_spec.pattern == detail["pattern"]
    model = hybridlab.build_model(model_spec)
    from safetensors.torch import load_model
    missing, unexpected = load_model(model, arts["weights"]["path"])
    assert not missing and not unexpected
    history = ui.hypervolume_history("tiny")
    assert [h["trial_number"] for h in history] == [t.number for t in study.trials]
    assert [h["hypervolume"] for h in history] == pytest.approx(_hypervolumes(study))

    assert main(["search", "status", "tiny", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "4/4 finished" in out and "best per objective" in out and "quality" in out
    assert main(["studies", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "4/4" in out
    _optuna_dashboard_reads(db)


def _hypervolumes(study) -> list[float]:
    """The documented normalisation, written out for two objectives: losses (quality negated)
    scaled to [0, 1] over all trials, reference 1.1 on both axes; then after each trial the
    area of the union of the rectangles [x, 1.1] x [y, 1.1] of the trials so far."""
    losses = [(-t.values[0], t.values[1]) for t in study.trials]
    lows = [min(v[k] for v in losses) for k in (0, 1)]
    spans = [(max(v[k] for v in losses) - lows[k]) or 1.0 for k in (0, 1)]
    points = [tuple((v[k] - lows[k]) / spans[k] for k in (0, 1)) for v in losses]
    out = []
    for n in range(1, len(points) + 1):
        xs = sorted({x for x, _ in points[:n]} | {1.1})
        area = 0.0
        for left, right in zip(xs, xs[1:]):      # strips between distinct x values
            lowest = min(y for x, y in points[:n] if x <= left)
            area += (right - left) * (1.1 - lowest)
        out.append(area)
    return out


def _optuna_dashboard_reads(db):
    """optuna-dashboard serves the same database: our tables do not disturb it."""
    import io

    import optuna_dashboard   # a test dependency (pyproject's [test] extra)
    import json
    app = optuna_dashboard.wsgi(db)
    status = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/api/studies",
                         "QUERY_STRING": "", "SERVER_NAME": "t", "SERVER_PORT": "80",
                         "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http"},
                        lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200")
    names = [s["study_name"] for s in json.loads(body)["study_summaries"]]
    assert names == ["tiny"]


def test_resume_runs_only_the_remaining_trials(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    spec = tiny_spec(tmp_path, name="resume")
    first = run_search(spec, db=db, trials=2)
    assert first.ran == 2
    study = optuna.load_study(study_name="resume", storage=db)
    before = {t.number: (t.values, t.datetime_complete) for t in study.trials}
    again = run_search(spec, db=db, trials=2)          # nothing left to do
    assert again.ran == 0 and len(optuna.load_study(study_name="resume", storage=db).trials) == 2
    final = run_search(spec, db=db)                     # the spec's 4 trials
    assert final.ran == 2 and final.counts["COMPLETE"] == 4
    study = optuna.load_study(study_name="resume", storage=db)
    assert len(study.trials) == 4
    for number, kept in before.items():                 # completed trials untouched
        t = study.trials[number]
        assert (t.values, t.datetime_complete) == kept
    # the same name with a different search is refused, not silently mixed in
    changed = tiny_spec(tmp_path, name="resume", space={"blocks.M.d_state": {"choice": [2, 8]}})
    with pytest.raises(SpecError, match="already exists .* different"):
        run_search(changed, db=db)


def test_duplicate_architectures_reuse_the_first_result(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    # mix weights 1..2 of a pure-Mamba layout all build the same model; lr changes training
    spec = tiny_spec(tmp_path, name="dups", space={
        "layout.mix.M": {"choice": [1, 2]},
        "train.lr": {"choice": [0.001, 0.002]},
    }, base={**TINY["base"], "layout": {"layers": 2, "mix": {"M": 1}}},
        sampler={"name": "grid"}, trials=4)
    report = run_search(spec, db=db)
    assert report.counts["COMPLETE"] == 4
    ui = Store(db, readonly=True)
    rows = {r["number"]: r for r in ui.trials("dups")}
    trained = [r for r in rows.values() if r["reused_from"] is None]
    reused = [r for r in rows.values() if r["reused_from"] is not None]
    assert len(trained) == 2 and len(reused) == 2       # one per learning rate
    for r in reused:
        src = rows[r["reused_from"]]
        assert src["params"]["train.lr"] == r["params"]["train.lr"]
        assert src["params"]["layout.mix.M"] != r["params"]["layout.mix.M"]
        assert r["values"] == src["values"] and r["arch_hash"] == src["arch_hash"]
        assert r["user_attrs"]["reused_from"] == src["number"]
        assert ui.series(r["trial_id"]) == ui.series(src["trial_id"])
        assert [a["path"] for a in ui.artifacts(r["trial_id"])] == \
            [a["path"] for a in ui.artifacts(src["trial_id"])]
        assert r["wall_s"] < src["wall_s"]


def test_constraints_infeasible_candidates_are_not_trained(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    spec = tiny_spec(tmp_path, name="cons", space={"layout.layers": {"choice": [1, 4]}},
                     sampler={"name": "grid"}, trials=2,
                     constraints={"params_max": 3000, "quality_min": 1.5})
    run_search(spec, db=db)
    ui = Store(db, readonly=True)
    rows = {r["params"]["layout.layers"]: r for r in ui.trials("cons")}
    big, small = rows[4], rows[1]
    assert big["state"] == "PRUNED" and big["status"] == "infeasible"
    assert "params_total" in big["failure_reason"] and big["constraints"]["params_max"] > 0
    assert big["metrics"]["cost/params_total"] > 3000       # its cost is recorded ...
    assert ui.series(big["trial_id"]) == {} and ui.artifacts(big["trial_id"]) == []  # ... no training
    # the small one trained, but quality_min (checked after training) makes it infeasible
    assert small["state"] == "COMPLETE" and small["constraints"]["params_max"] <= 0
    assert small["constraints"]["quality_min"] > 0 and not small["feasible"]
    assert ui.pareto("cons") == []
    # Optuna 5 also reads back the legacy list we mirror for the dashboard ("0", "1" ...)
    assert set(small["constraints"]) == {"params_max", "quality_min"}

    # one record per trial, read back from the store
    rec = ui.record(small["trial_id"])
    assert rec.status == "complete" and rec.failure_reason is None and rec.reused_from is None
    assert rec.pattern == small["pattern"] != "" and rec.n_layers == 1
    assert rec.arch_hash == small["arch_hash"] and rec.train_hash
    assert rec.seed is not None and rec.params_total <= 3000
    assert rec.train["quality"] == small["values"]["quality"] and "parity" in rec.scores
    assert rec.costs["params_total"] == rec.params_total and "train/loss" in rec.curves
    assert set(rec.artifacts) == {"weights", "spec"}
    assert rec.notes["stop_reason"]
    assert ui.record(big["trial_id"]).costs["params_total"] > 3000

    # Optuna keeps only the dashboard's attributes, made from the record
    study = optuna.load_study(study_name="cons", storage=db)
    frozen = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
    ua = frozen[small["trial_id"]].user_attrs
    assert ua["pattern"] == rec.pattern and ua["quality"] == rec.train["quality"]
    assert not {"scores", "costs", "arch_hash", "train_steps"} & set(ua)
    assert frozen[big["trial_id"]].user_attrs["fail_reason"] == big["failure_reason"]

    # optuna-dashboard 0.21 reads feasibility from the legacy "constraints" list
    from optuna_dashboard._serializer import serialize_frozen_trial
    shown = {tid: serialize_frozen_trial(study._study_id, t, {})["constraints"]
             for tid, t in frozen.items()}
    assert shown[small["trial_id"]] == [small["constraints"]["params_max"],
                                        small["constraints"]["quality_min"]]
    assert shown[big["trial_id"]] == [big["constraints"]["params_max"]]
    assert any(c > 0 for c in shown[small["trial_id"]]) and shown[big["trial_id"]][0] > 0


def test_two_workers_share_one_sqlite_file(tmp_path):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    spec = tiny_spec(tmp_path, name="two", trials=5)
    report = run_search(spec, db=db, workers=2)
    study = optuna.load_study(study_name="two", storage=db)
    assert len(study.trials) == 5 and states(study).count("COMPLETE") == 5
    assert sorted(t.number for t in study.trials) == list(range(5))
    runs = Store(db, readonly=True).runs("two")
    assert len(runs) == 5 and {r["status"] for r in runs.values()} == {"complete"}
    assert {r["worker"] for r in runs.values()} == {0, 1}           # both did work
    assert report.counts["COMPLETE"] == 5
    logs = (tmp_path / "w-artifacts" / "two" / "logs")
    text = "".join(p.read_text() for p in logs.glob("worker-*.log"))
    assert "database is locked" not in text and "Traceback" not in text
