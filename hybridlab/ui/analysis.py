"""Optuna's analysis plots (``optuna.visualization``, plotly) for one study and one objective:
parameter importance, parallel coordinates, slice, contour and optimisation history.

The plots are drawn from an in-memory Optuna study built from the read model's rows (Optuna's
own storage needs about 2 ms a trial to load on a loaded machine): the feasible completed
trials with finite values, a trial reusing another's result left out (it would count that
result twice), at most ``LIMIT`` of them (the latest), so a study of 10,000 trials draws in a
second or two.
"""
from __future__ import annotations

import html
import math
import warnings

import optuna
import plotly.graph_objects as go

from hybridlab.formatting import shown_name
from hybridlab.ui.figures import _empty

LIMIT = 300
KINDS = ("importance", "parallel", "slice", "contour", "history")


def usable_rows(view) -> list[dict]:
    """Feasible completed trials with finite values, reuses left out, in trial order."""
    out = []
    for r in view.rows:
        if r["state"] != "COMPLETE" or not r["feasible"] or r.get("reused_from") is not None:
            continue
        values = [r.get(n) for n in view.metric_names]
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            out.append(r)
    return out


def frozen_trial(view, r: dict):
    """One row as an Optuna ``FrozenTrial`` with its parameters in their latest distributions
    (a trial sampled from an older, different space keeps its values only)."""
    values = [float(r[n]) for n in view.metric_names]
    params = {n: r[f"param:{n}"] for n in view.distributions if r.get(f"param:{n}") is not None}
    try:
        return optuna.trial.create_trial(values=values, params=params, distributions={
            n: view.distributions[n] for n in params})
    except ValueError:
        return optuna.trial.create_trial(values=values)


def analysis_study(view, limit: int = LIMIT) -> tuple[optuna.Study, int]:
    """(an in-memory study of the latest ``limit`` usable trials, how many were usable)."""
    rows = usable_rows(view)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=view.directions)
        study.add_trials([frozen_trial(view, r) for r in rows[-limit:]])
    return study, len(rows)


def plots(view, objective: str, contour: tuple[str, str] | None = None,
          limit: int = LIMIT) -> dict[str, go.Figure]:
    """Every analysis plot for ``objective`` (one of the study's), by kind."""
    if objective not in view.metric_names:
        empty = _empty("pick one of the study's objectives", "analysis")
        return {k: empty for k in KINDS}
    study, usable = analysis_study(view, limit)
    n = len(study.trials)
    if n < 2:
        empty = _empty("needs at least 2 finished feasible trials; they appear as the search "
                       "runs", "analysis")
        return {k: empty for k in KINDS}
    index = view.metric_names.index(objective)

    def target(t):
        return t.values[index]

    note = (f" (latest {n} of {usable} trials)" if usable > n else f" ({n} trials)")
    label = shown_name(objective)
    vis = optuna.visualization
    params = sorted(view.distributions)
    out: dict[str, go.Figure] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["importance"] = _safe(lambda: vis.plot_param_importances(
            study, target=target, target_name=label), "importance",
            "parameter importance (PED-ANOVA)" + note, params)
        out["parallel"] = _safe(lambda: vis.plot_parallel_coordinate(
            study, target=target, target_name=label), "parallel", "parallel coordinates" + note,
            params)
        out["slice"] = _safe(lambda: vis.plot_slice(study, target=target, target_name=label),
                             "slice", "slice" + note, params)
        pair = contour if contour and all(p in params for p in contour) and \
            contour[0] != contour[1] else tuple(params[:2])
        out["contour"] = _safe(lambda: vis.plot_contour(
            study, params=list(pair), target=target, target_name=label), "contour",
            f"contour of {' × '.join(pair)}" + note, params, need=2)
        out["history"] = _safe(lambda: vis.plot_optimization_history(
            study, target=target, target_name=label), "history",
            f"history of {label} ({view.directions[index]})" + note, params, need=0)
    return out


def _safe(make, kind: str, title: str, params: list, need: int = 1) -> go.Figure:
    """Optuna's figure with our title and uirevision, or a message when it cannot draw."""
    if len(params) < need:
        return _empty(f"the study samples {len(params)} parameter(s); this plot needs {need}",
                      f"analysis:{kind}")
    try:
        fig = make()
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return _empty(f"Optuna cannot draw this plot: {e}", f"analysis:{kind}")
    fig.update_layout(title=dict(text=html.escape(title), font=dict(size=14)),
                      uirevision=f"analysis:{kind}", height=420,
                      margin=dict(l=70, r=30, t=60, b=60))
    return fig
