"""A database of 10,000 synthetic trials in four studies (and a small linked ``@scale`` study),
written through the storage API as a search writes them: Optuna's storage for the trials
(params of every kind, values, states), ``Store`` for each trial's record (architecture, run,
scores, costs, training figures, per-task curves), ``storage.linked`` for the scale study.

Optuna's storage takes tens of milliseconds a trial on the loaded 2-core machine (about ten
minutes for all), so the database is built once and kept in the temporary folder under a name
that hashes ``VERSION`` (bump it when the data changes) and the Optuna and schema versions; a
later test session reuses it.

    python tests/ui_scale_data.py          # build it now (prints its path)
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

#: bump when the generated data changes (the cached database is found by it)
VERSION = 2
STUDIES = ("big-a", "big-b", "big-c", "big-d")
PER_STUDY = 2500
SCALED = "big-a@scale-d256-l12"
TYPES = ("mamba1", "mamba2", "mamba3")
TASKS = ("mqar", "bytes_lm")
STEPS = 16


def database_path() -> Path:
    import optuna

    from hybridlab.storage import SCHEMA_VERSION
    key = hashlib.sha256(f"{VERSION}:{optuna.__version__}:{SCHEMA_VERSION}".encode()
                         ).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"hybridlab-ui-scale-{key}" / "scale.db"


def scale_database() -> str:
    """The URL of the 10,000-trial database, built on first use."""
    path = database_path()
    if not (path.parent / "done").exists():
        if path.parent.exists():
            shutil.rmtree(path.parent)            # an interrupted build
        path.parent.mkdir(parents=True)
        build(f"sqlite:///{path}")
        (path.parent / "done").write_text("ok\n")
    return f"sqlite:///{path}"


def _distributions():
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)
    return {"blocks.M.type": CategoricalDistribution(list(TYPES)),
            "layout.layers": IntDistribution(2, 24),
            "blocks.M.d_state": IntDistribution(8, 256, log=True),
            "train.lr": FloatDistribution(1e-4, 1e-2, log=True)}


def _trial(rng: random.Random):
    """(params, values or None for a pruned trial, architecture key)."""
    params = {"blocks.M.type": rng.choice(TYPES), "layout.layers": rng.randint(2, 24),
              "blocks.M.d_state": int(2 ** rng.uniform(3, 8)),
              "train.lr": rng.choice([1e-3, 2e-3, 3e-3])}
    layers, d_state = params["layout.layers"], params["blocks.M.d_state"]
    params_total = float(layers * 52_000 + d_state * 900 * layers)
    state = float(layers * d_state * 2048)
    skill = {"mamba1": 0.0, "mamba2": 0.03, "mamba3": 0.05}[params["blocks.M.type"]]
    quality = 1 - math.exp(-params_total / 7e5) * rng.uniform(0.55, 1.0) + skill
    values = None if rng.random() < 0.08 else [quality, state, params_total]
    # the same architecture and training again reuses the first result, as a search does
    return params, values, (params["blocks.M.type"], layers, d_state, params["train.lr"])


def build(url: str, studies=STUDIES, per_study: int = PER_STUDY, seed: int = 0) -> None:
    import optuna
    from optuna.trial import TrialState, create_trial

    from hybridlab.storage import Store

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store = Store(url)
    dists = _distributions()
    t0 = time.monotonic()
    for s, name in enumerate(studies):
        rng = random.Random(seed + s)
        study = optuna.create_study(storage=store.optuna_storage(), study_name=name,
                                    directions=["maximize", "minimize", "minimize"])
        study.set_metric_names(["quality", "state_bytes@4096", "params_total"])
        study.set_user_attr("hybridlab_trials", per_study)
        study.set_user_attr("hybridlab_spec", _spec_text(name))
        made = [_trial(rng) for _ in range(per_study)]
        study.add_trials([
            create_trial(state=TrialState.COMPLETE if v else TrialState.PRUNED, values=v,
                         params=p, distributions=dists) for p, v, _ in made])
        ids = [t._trial_id for t in study.get_trials(deepcopy=False)]
        first: dict = {}
        for number, (tid, (p, v, key)) in enumerate(zip(ids, made)):
            _record(store, name, tid, number, p, v, key, first, rng)
        print(f"{name}: {per_study} trials after {time.monotonic() - t0:.0f} s", flush=True)
    _scaled_study(store, studies[0], seed)


def _record(store, study, tid, number, params, values, key, first, rng) -> None:
    arch = hashlib.sha256(repr(key[:3]).encode()).hexdigest()[:32]
    kind, layers, d_state, _ = key
    pattern = ("M-" * layers)[:2 * layers]
    store.record_architecture(arch, pattern=pattern, n_layers=2 * layers,
                              spec_yaml=_model_spec(kind, layers, d_state),
                              params_total=int(params_total(layers, d_state)))
    store.start_run(study_name=study, trial_id=tid, trial_number=number, arch_hash=arch,
                    train_hash=f"lr={params['train.lr']}", device="cpu", versions={})
    reused = first.get(key) if values else None
    if values:
        first.setdefault(key, number)
    if values is None:
        store.update_record(tid, status="pruned", wall_s=rng.uniform(5, 20),
                            failure_reason="pruned: chance-level accuracy at 50% of budget",
                            costs={"params_total": params_total(layers, d_state)})
        return
    quality, state, total = values
    fields = dict(status="complete", wall_s=0.0 if reused is not None else rng.uniform(30, 90),
                  reused_from=reused if reused != number else None,
                  scores={t: min(1.0, max(0.0, quality + rng.uniform(-0.1, 0.1)))
                          for t in TASKS},
                  costs={"params_total": total, "state_bytes@4096": state},
                  train={"quality": quality, "train_steps": STEPS,
                         "train_tokens": STEPS * 8 * 64, "train_wall_s": rng.uniform(20, 60),
                         "train_tokens_per_s": rng.uniform(2e3, 2e4)})
    if number % 10 == 0 or reused is None:          # curves for most trials (not all reuses)
        fields["curves"] = _curves(quality, rng)
    store.update_record(tid, **fields)


def params_total(layers: int, d_state: int) -> float:
    return float(layers * 52_000 + d_state * 900 * layers)


def _curves(quality: float, rng) -> dict:
    curves: dict = {}
    for step in range(STEPS):
        task = TASKS[step % len(TASKS)]
        loss = 4.0 * math.exp(-step / 6) + (1 - quality) + rng.uniform(0, 0.2)
        curves.setdefault(f"train/{task}/loss", []).append((step, loss + (1.5 if task ==
                                                                          "bytes_lm" else 0)))
        curves.setdefault("train/loss", []).append((step, loss))
        curves.setdefault("lr", []).append((step, 3e-3 * min(1, (step + 1) / 4)))
        curves.setdefault("train/grad_norm", []).append((step, rng.uniform(0.5, 2.0)))
    for step in (STEPS // 2, STEPS):
        for task in TASKS:
            curves.setdefault(f"eval/{task}/score", []).append((step, quality * step / STEPS))
        curves.setdefault("eval/quality", []).append((step, quality * step / STEPS))
    return curves


def _scaled_study(store, proxy: str, seed: int) -> None:
    """A small linked study as ``hybridlab scale`` records one: 8 of the proxy's layouts,
    re-measured (quality = proxy quality plus noise), each naming its proxy trial."""
    from optuna.trial import create_trial

    from hybridlab.storage import open_linked_study, read_model

    rng = random.Random(seed + 99)
    view = read_model.study_view(store, proxy)
    best = sorted((r for r in view.rows if r["pareto"]), key=lambda r: -r["quality"])[:8]
    linked = open_linked_study(store, SCALED, proxy=proxy, kind="scale",
                               directions=["maximize", "minimize", "minimize"],
                               metric_names=["quality", "params_total", "state_bytes@4096"],
                               settings={"d_model": 256, "layers": 12, "steps": 3000},
                               attrs={"hybridlab_trials": len(best)})
    for r in best:
        q = r["quality"] * 0.8 + rng.uniform(-0.05, 0.05)
        linked.add_trial(create_trial(
            values=[q, r["params_total"] * 9, r["state_bytes@4096"] * 2],
            user_attrs={"proxy_study": proxy, "proxy_trial": r["number"],
                        "proxy_quality": r["quality"], "quality_std": 0.01,
                        "pattern": r["pattern"]}))


def _spec_text(name: str) -> str:
    return (f"name: {name}\nbase: base.yaml\ntasks:\n  - {{name: mqar, vocab_size: 64, "
            f"seq_len: 32, kv_pairs: 4}}\n  - {{name: bytes_lm, seq_len: 32}}\n")


def _model_spec(kind: str, layers: int, d_state: int) -> str:
    return ("name: synthetic\nmodel: {d_model: 32, vocab_size: 256}\nblocks:\n"
            f"  M: {{type: {kind}, d_state: {d_state}}}\n  \"-\": {{type: mlp}}\n"
            f"pattern: \"(M-) x {layers}\"\n")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    t = time.monotonic()
    print(scale_database(), f"({time.monotonic() - t:.0f} s)")
