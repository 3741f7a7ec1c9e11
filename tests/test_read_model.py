"""The one read model (``storage.read_model``): its Pareto front and hypervolume against
brute-force references, its table reader against Optuna's own API field by field, and its
counts as the CLI and the UI both show them."""
from __future__ import annotations

import itertools
import math
import random
import time

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hybridlab.storage import Store, optuna_storage, views
from hybridlab.storage import pareto as P
from hybridlab.storage import read_model
from hybridlab.storage.repository import counted_finished

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- references, written out the slow obvious way -------------------------------------------------
def brute_front(points) -> list[int]:
    def dom(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
    return [i for i, p in enumerate(points) if not any(dom(q, p) for q in points)]


def brute_hypervolume(points, ref) -> float:
    """Inclusion-exclusion over every subset of the points that beat the reference: the volume
    of a union of boxes [p, ref] is the alternating sum of the volumes of their intersections."""
    pts = [p for p in points if all(x < r for x, r in zip(p, ref))]
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = [max(p[d] for p in subset) for d in range(len(ref))]
            total += (-1) ** (k + 1) * math.prod(r - c for r, c in zip(ref, corner))
    return total


def _points(rng, n, d, grid=None):
    if grid:                    # few distinct values: ties and equal points on purpose
        return [tuple(float(rng.randrange(grid)) for _ in range(d)) for _ in range(n)]
    return [tuple(rng.random() for _ in range(d)) for _ in range(n)]


# -- Pareto -----------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_front_matches_brute_force(d):
    rng = random.Random(d)
    for trial in range(60):
        n = rng.randrange(0, 40)
        pts = _points(rng, n, d, grid=rng.choice([None, 3, 5]))
        assert P.pareto_indices(pts) == brute_front(pts), (d, pts)


def test_front_keeps_equal_points_and_drops_dominated_twins():
    assert P.pareto_indices([(1, 1), (1, 1), (0, 2), (1, 2), (2, 0)]) == [0, 1, 2, 4]
    assert P.pareto_indices([(1, 1, 1), (1, 1, 1), (1, 1, 2)]) == [0, 1]
    assert P.pareto_indices([]) == []


def test_two_objective_front_is_n_log_n():
    """200,000 points: a quadratic front would take hours; the sort-and-sweep takes well under
    a second (budget 5 s on the loaded 2-core machine)."""
    rng = np.random.default_rng(0)
    pts = rng.random((200_000, 2))
    t0 = time.perf_counter()
    mask = P.pareto_mask(pts)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, elapsed
    sample = np.flatnonzero(mask)[:50]
    for i in sample:          # each front point: nothing dominates it
        assert not np.any(np.all(pts <= pts[i], axis=1) & np.any(pts < pts[i], axis=1))


# -- hypervolume ------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(d):
    rng = random.Random(10 + d)
    for _ in range(25):
        pts = _points(rng, rng.randrange(0, 9), d, grid=rng.choice([None, 4]))
        ref = [1.05 * (4 if any(p and max(p) >= 1 for p in pts) else 1)] * d
        assert P.hypervolume(pts, ref) == pytest.approx(brute_hypervolume(pts, ref),
                                                        rel=1e-9, abs=1e-12)


def test_hypervolume_history_is_the_hypervolume_of_each_prefix():
    rng = random.Random(3)
    for d in (2, 3):
        pts = _points(rng, 30, d)
        ref = [1.1] * d
        hist = P.hypervolume_history(pts, ref)
        assert hist == pytest.approx([P.hypervolume(pts[:i + 1], ref) for i in range(30)])
        assert all(a <= b for a, b in zip(hist, hist[1:]))


def test_normalization_scales_to_unit_range_and_describes_itself():
    losses = [(-0.9, 100.0), (-0.5, 300.0), (-0.1, 200.0)]
    n = P.Normalization.fit(losses)
    scaled = n.apply(losses)
    assert scaled.min(axis=0) == pytest.approx([0, 0]) and scaled.max(axis=0) == \
        pytest.approx([1, 1])
    assert n.reference == [1.1, 1.1]
    text = n.describe(["quality", "params"], ["maximize", "minimize"])
    assert "quality 0.1..0.9" in text and "params 100..300" in text and "1.1" in text


# -- the table reader against Optuna's API ---------------------------------------------------------
DISTS = {"blocks.M.type": CategoricalDistribution(["mamba1", "mamba2", "mamba3"]),
         "layout.layers": IntDistribution(1, 12),
         "blocks.M.d_state": IntDistribution(4, 256, log=True),
         "train.lr": FloatDistribution(1e-4, 1e-2, log=True)}


def _params(rng):
    return {"blocks.M.type": rng.choice(["mamba1", "mamba2", "mamba3"]),
            "layout.layers": rng.randint(1, 12), "blocks.M.d_state": rng.choice([4, 16, 64]),
            "train.lr": 10 ** rng.uniform(-4, -2)}


@pytest.fixture
def db(tmp_path):
    """A study with every kind of trial: complete (some equal, one infinite), infeasible,
    pruned, failed and retried, running, waiting, and trials reusing an earlier result."""
    url = f"sqlite:///{tmp_path / 'rm.db'}"
    store = Store(url)
    study = optuna.create_study(storage=optuna_storage(url), study_name="rm",
                                directions=["maximize", "minimize"])
    study.set_metric_names(["quality", "params_total"])
    study.set_user_attr("hybridlab_trials", 20)
    rng = random.Random(5)
    trials = []
    for i in range(16):
        q, p = round(rng.random(), 3), float(rng.choice([1e4, 2e4, 3e4, 5e4]))
        sys_attrs = {"constraints:params_max": -1.0 if i != 4 else 2.0}
        trials.append(create_trial(values=[q, p], params=_params(rng), distributions=DISTS,
                                   user_attrs={"pattern": f"M*{i}"}, system_attrs=sys_attrs))
    trials.append(create_trial(values=[math.inf, 1e4], params=_params(rng), distributions=DISTS))
    trials.append(create_trial(state=TrialState.PRUNED, params=_params(rng), distributions=DISTS,
                               user_attrs={"fail_reason": "pruned: chance"}))
    trials.append(create_trial(state=TrialState.FAIL, params=_params(rng), distributions=DISTS,
                               user_attrs={"fail_reason": "heartbeat stale"}))
    retry = create_trial(values=[0.2, 2e4], params=_params(rng), distributions=DISTS,
                         system_attrs={"failed_trial": 18, "retry_history": [18]})
    trials.append(retry)
    study.add_trials(trials)
    study.enqueue_trial(_params(rng))                     # WAITING
    running = study.ask()                                 # takes the enqueued one
    study.enqueue_trial(_params(rng))                     # WAITING
    # hybridlab's record: architectures, runs (one reusing trial 2, one trial 3), scalars
    ids = {t.number: t._trial_id for t in study.get_trials(deepcopy=False)}
    for n in range(16):
        arch = f"arch{n if n not in (5, 6) else 2}"
        store.record_architecture(arch, pattern=f"M*{n}", n_layers=n + 1)
        store.start_run(study_name="rm", trial_id=ids[n], trial_number=n, arch_hash=arch)
        reused = 2 if n in (5, 6) else None
        store.update_record(ids[n], status="complete", wall_s=1.5 + n, reused_from=reused,
                            scores={"mqar": 0.1 * (n % 5)}, costs={"state_bytes": 64 * n})
    store.start_run(study_name="rm", trial_id=ids[running.number], trial_number=running.number)
    store.update_run(ids[running.number], step=3, total_steps=10)
    return url, study


def test_reader_matches_optunas_api_field_by_field(db):
    url, study = db
    reader = Store(url, readonly=True)
    want = {r["number"]: r for r in reader.trials("rm")}           # Optuna's API path
    view = read_model.study_view(reader, "rm")
    assert [r["number"] for r in view.rows] == sorted(want)
    for r in view.rows:
        w = want[r["number"]]
        assert r["state"] == w["state"] and r["trial_id"] == w["trial_id"]
        assert {k: r[k] for k in w["values"]} == w["values"]
        assert {k[len("param:"):]: v for k, v in r.items() if k.startswith("param:")} == \
            w["params"]
        assert {k: r.get(k) for k in w["metrics"]} == w["metrics"]
        for key in ("pattern", "n_layers", "arch_hash", "reused_from", "status", "wall_s",
                    "datetime_start", "datetime_complete", "retried_from"):
            assert r[key] == w[key], (r["number"], key)
        assert r["feasible"] == w["feasible"]
        if w["duration_s"] is None:
            assert r["duration_s"] is None
        else:
            assert r["duration_s"] == pytest.approx(w["duration_s"])
        assert r["failure_reason"] == (w["failure_reason"] or None)
    assert view.metric_names == ["quality", "params_total"]
    assert view.directions == ["maximize", "minimize"]
    assert view.user_attrs["hybridlab_trials"] == 20
    kinds = {name: (p.kind, p.log) for name, p in view.params.items()}
    assert kinds == {"blocks.M.type": ("categorical", False), "layout.layers": ("int", False),
                     "blocks.M.d_state": ("int", True), "train.lr": ("float", True)}
    assert view.params["blocks.M.type"].choices == ("mamba1", "mamba2", "mamba3")


def test_front_progress_and_best_agree_with_references(db):
    url, study = db
    reader = Store(url, readonly=True)
    view = read_model.study_view(reader, "rm")
    trials = study.get_trials(deepcopy=False)
    # progress: retries counted once, as the search counts toward its target
    assert view.finished == counted_finished(trials) == 19
    assert view.counts == {"COMPLETE": 18, "PRUNED": 1, "FAIL": 1, "RUNNING": 1, "WAITING": 1}
    assert views.progress(reader, "rm")["done"] == view.finished
    assert view.running == [{"trial_number": 20, "step": 3, "total_steps": 10}]
    # the front: feasible finite complete trials, reuses stand for their original
    cands = [t for t in trials if t.state == TrialState.COMPLETE and t.number != 4
             and all(math.isfinite(v) for v in t.values) and t.number not in (5, 6)]
    losses = [(-t.values[0], t.values[1]) for t in cands]
    assert view.front == sorted(cands[i].number for i in brute_front(losses))
    assert 5 not in view.front and 6 not in view.front
    assert view.front_architectures == len(view.front)
    assert {r["number"] for r in reader.pareto("rm")} == set(view.front)
    # best per objective among feasible complete trials with finite values (trial 16's
    # infinite quality is no result)
    best_q = max(cands, key=lambda t: (t.values[0], -t.number))
    assert view.best["quality"] == {"value": best_q.values[0], "trial_number": best_q.number,
                                    "direction": "maximize"}
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and t.number != 4]
    assert view.best["params_total"]["value"] == min(t.values[1] for t in feasible)
    summary = reader.study_summary("rm")
    assert summary["finished"] == 19 and summary["front"] == view.front
    assert summary["compute_s"] == pytest.approx(sum(1.5 + n for n in range(16)
                                                     if n not in (5, 6)))


def test_hypervolume_history_and_a_shared_scale(db, tmp_path):
    url, study = db
    reader = Store(url, readonly=True)
    view = read_model.study_view(reader, "rm")
    hist = read_model.hypervolume_history(view)
    rows = view.candidates()
    assert [h["trial_number"] for h in hist] == [r["number"] for r in rows]
    norm = P.Normalization.fit(view.losses(rows))
    scaled = norm.apply(view.losses(rows))
    assert [h["hypervolume"] for h in hist] == pytest.approx(
        [P.hypervolume(scaled[:i + 1], norm.reference) for i in range(len(rows))])
    assert hist[3]["hypervolume"] == pytest.approx(
        brute_hypervolume([tuple(p) for p in scaled[:4]], norm.reference))
    # two studies on one scale: the wider study sets the range, both are measured on it
    other = optuna.create_study(storage=optuna_storage(url), study_name="rm2",
                                directions=["maximize", "minimize"])
    other.set_metric_names(["quality", "params_total"])
    other.add_trials([create_trial(values=[0.5, 1e5]), create_trial(values=[0.1, 2e3])])
    v2 = read_model.study_view(reader, "rm2")
    shared = read_model.normalization([view, v2])
    finite = [x for v in (view, v2) for x in v.losses(v.candidates())]
    assert shared == P.Normalization.fit(finite)
    own = read_model.hypervolume_history(v2)[-1]["hypervolume"]
    common = read_model.hypervolume_history(v2, shared)[-1]["hypervolume"]
    assert common == pytest.approx(P.hypervolume(shared.apply(v2.losses(v2.candidates())),
                                                 shared.reference))
    assert common != pytest.approx(own)
    mixed = optuna.create_study(storage=optuna_storage(url), study_name="single")
    mixed.add_trials([create_trial(value=1.0)])
    assert read_model.normalization([view, read_model.study_view(reader, "single")]) is None


def test_the_cli_and_the_ui_count_alike(db, capsys):
    """``search status``, ``studies`` and the UI's progress show one 'done' count."""
    from hybridlab.cli.main import main
    url, _ = db
    reader = Store(url, readonly=True)
    done = views.progress(reader, "rm")["done"]
    assert main(["search", "status", "rm", "--db", url]) == 0
    out = capsys.readouterr().out
    assert f"{done}/20 finished" in out
    assert main(["studies", "--db", url]) == 0
    assert f"{done}/20" in capsys.readouterr().out
