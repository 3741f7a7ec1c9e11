"""Training and evaluation curves, drawn the way Weights & Biases draws them.

* Each task's training loss is its own series (``train/<task>/loss``): the combined
  ``train/loss`` alternates between tasks step by step (round-robin batches), so it is only
  in the legend, hidden, for the record.
* An EMA smoothing slider: the smoothed line over the raw one drawn faint, debiased as W&B
  does (the first points are not pulled toward zero).
* The x axis is the step, the tokens seen, or wall time. Curves are recorded per step; tokens
  and seconds are the step times the trial's mean tokens (seconds) per training step, and the
  axis title says so.
* Every kind of scalar gets an axis of its own: per-task losses, evaluation scores (with each
  task's chance level as a dashed line), other evaluation metrics (accuracy), bits per byte,
  the learning rate, the gradient norm, the auxiliary loss.
* Each task has one colour in every panel; in Compare each trial has one colour.

``chance_levels(search_spec_text)`` reads the tasks of a study's search spec (stored on the
study) and asks each task its ``chance`` score.
"""
from __future__ import annotations

import html
import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hybridlab.errors import UserError
from hybridlab.formatting import shown_name
from hybridlab.search.tasks import get_task
from hybridlab.specs.source import parse_yaml
from hybridlab.ui.figures import _empty, study_colour

X_AXES = ("step", "tokens", "wall time")


# -- series -> panels -------------------------------------------------------------------------
def task_of(name: str) -> str | None:
    """The task a series belongs to: ``train/mqar/loss`` and ``eval/mqar/score`` -> mqar."""
    parts = name.split("/")
    return parts[1] if len(parts) == 3 and parts[0] in ("train", "eval") else None


def panel_of(name: str) -> str:
    if name.startswith("train/") and name.endswith("/loss") and task_of(name):
        return "training loss per task"
    if name == "train/loss":
        return "training loss per task"
    if name == "eval/quality" or (name.startswith("eval/") and name.endswith("/score")):
        return "evaluation score (dashed: chance)"
    if name.startswith("eval/") and name.endswith("/bpb"):
        return "bits per byte (evaluation)"
    if name.startswith("eval/"):
        return "evaluation metrics"
    if name == "lr":
        return "learning rate"
    if name == "train/grad_norm":
        return "gradient norm (before clipping)"
    return name


PANEL_ORDER = ("training loss per task", "evaluation score (dashed: chance)",
               "evaluation metrics", "bits per byte (evaluation)", "learning rate",
               "gradient norm (before clipping)")


def ema(values: list, smoothing: float) -> list:
    """W&B's debiased exponential moving average (``smoothing`` in [0, 1): 0 = raw)."""
    a = min(max(float(smoothing or 0.0), 0.0), 0.999)
    if a == 0.0:
        return list(values)
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(None)
            continue
        acc = a * acc + (1 - a) * v
        weight = a * weight + (1 - a)
        out.append(acc / weight)
    return out


def _smooths(name: str, smoothing) -> bool:
    """Smoothing applies to per-step training series (evaluations are few and exact)."""
    try:
        return float(smoothing or 0) > 0 and name.startswith("train/")
    except (TypeError, ValueError):
        return False


def x_scale(trial_metrics: dict, x_axis: str) -> tuple[float, str]:
    """(multiplier from step to the x axis, axis title) from a trial's recorded totals."""
    steps = trial_metrics.get("train/train_steps") or 0
    if x_axis == "tokens" and steps and trial_metrics.get("train/train_tokens"):
        return (float(trial_metrics["train/train_tokens"]) / steps,
                "tokens (step × mean tokens per step)")
    if x_axis == "wall time" and steps and trial_metrics.get("train/train_wall_s"):
        return (float(trial_metrics["train/train_wall_s"]) / steps,
                "wall time, s (step × mean seconds per step)")
    return 1.0, "step"


def chance_levels(spec_text) -> dict[str, float]:
    """{task label: chance score} for the tasks of a search spec's text ({} when unreadable;
    a task that cannot be built is left out)."""
    if not isinstance(spec_text, str) or not spec_text.strip():
        return {}
    try:
        data, _ = parse_yaml(spec_text, "<stored search spec>")
    except UserError:
        return {}
    out = {}
    for item in (data.get("tasks") if isinstance(data, dict) else None) or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        settings = {k: v for k, v in item.items() if k not in ("name", "label", "weight")}
        label = str(item.get("label") or item["name"])
        try:
            out[label] = float(get_task(item["name"], label=label, **settings).chance)
        except (UserError, TypeError, ValueError):
            continue
    return out


# -- one trial --------------------------------------------------------------------------------
def curves_figure(curves: dict[str, list], title: str = "", revision: str = "curves",
                  smoothing: float = 0.0, x_axis: str = "step",
                  trial_metrics: dict | None = None,
                  chance: dict[str, float] | None = None) -> go.Figure:
    """Every recorded series of one trial, in panels by kind (see the module docstring)."""
    curves = {k: v for k, v in (curves or {}).items() if v}
    if not curves:
        return _empty("no curves recorded for this trial (it did not start training)",
                      revision)
    mult, xtitle = x_scale(trial_metrics or {}, x_axis)
    panels = [p for p in PANEL_ORDER if any(panel_of(k) == p for k in curves)]
    panels += sorted({panel_of(k) for k in curves} - set(panels))
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[html.escape(p) for p in panels],
                        vertical_spacing=0.16 if rows > 1 else 0.1, horizontal_spacing=0.08)
    tasks = sorted({t for t in map(task_of, curves) if t})
    colour = {t: study_colour(i) for i, t in enumerate(tasks)}
    per_task = any(panel_of(k) == PANEL_ORDER[0] and task_of(k) for k in curves)
    for name, points in sorted(curves.items()):
        panel = panels.index(panel_of(name))
        r, c = panel // cols + 1, panel % cols + 1
        task = task_of(name)
        col = colour.get(task, "#444")
        xs = [p[0] * mult for p in points]
        ys = [p[1] for p in points]
        hidden = name == "train/loss" and per_task       # the round-robin mix of the tasks
        smoothed = _smooths(name, smoothing)
        smooth = ema(ys, smoothing) if smoothed else ys
        show_raw = smoothed and not hidden
        if show_raw:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{name} (raw)",
                                     line=dict(color=col, width=1), opacity=0.25,
                                     legendgroup=name, showlegend=False, hoverinfo="skip"),
                          row=r, col=c)
        fig.add_trace(go.Scatter(
            x=xs, y=smooth, mode="lines+markers" if len(points) < 30 else "lines",
            name=name, line=dict(color=col, width=2), legendgroup=name,
            visible="legendonly" if hidden else True,
            hovertemplate=f"{html.escape(name)}<br>%{{x:.4g}}: %{{y:.4g}}<extra></extra>"),
            row=r, col=c)
        fig.update_xaxes(title_text=xtitle, row=r, col=c)
        if panel_of(name) == "learning rate":
            fig.update_yaxes(exponentformat="e", row=r, col=c)
    _chance_lines(fig, panels, cols, chance or {}, colour)
    fig.update_layout(height=max(360, 300 * rows), uirevision=revision,
                      margin=dict(l=60, r=20, t=70, b=40),
                      title=dict(text=html.escape(title), font=dict(size=14)),
                      legend=dict(orientation="h", y=-0.08 if rows > 1 else -0.25))
    return fig


def _chance_lines(fig, panels, cols, chance, colour) -> None:
    name = "evaluation score (dashed: chance)"
    if name not in panels or not chance:
        return
    panel = panels.index(name)
    r, c = panel // cols + 1, panel % cols + 1
    for task, level in sorted(chance.items()):
        fig.add_hline(y=level, line=dict(color=colour.get(task, "#b42318"), dash="dash",
                                         width=1.5),
                      annotation_text=f"chance {shown_name(task)} {level:.3g}",
                      annotation_font_size=10, row=r, col=c)


# -- several trials ---------------------------------------------------------------------------
def compare_curves_figure(per_trial: dict[str, dict], name: str, smoothing: float = 0.0,
                          x_axis: str = "step", metrics: dict[str, dict] | None = None,
                          chance: dict[str, float] | None = None) -> go.Figure:
    """One series (``name``) of several trials overlaid; each trial keeps the colour of its
    position in the comparison (the same in every chart and strip of the tab)."""
    if not per_trial:
        return _empty("pick 2 to 4 trials above (or 'Add to Compare' on a trial)", "compare")
    series = {label: c.get(name) for label, c in per_trial.items() if c.get(name)}
    if not series:
        return _empty(f"no {name!r} curve in these trials; pick another curve", "compare")
    fig = go.Figure()
    xtitle = "step"
    labels = list(per_trial)
    for label, points in series.items():
        mult, xtitle = x_scale((metrics or {}).get(label) or {}, x_axis)
        col = study_colour(labels.index(label))
        xs = [p[0] * mult for p in points]
        ys = [p[1] for p in points]
        smoothed = _smooths(name, smoothing)
        smooth = ema(ys, smoothing) if smoothed else ys
        if smoothed:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=col, width=1),
                                     opacity=0.25, showlegend=False, hoverinfo="skip",
                                     name=f"{label} (raw)"))
        fig.add_trace(go.Scatter(x=xs, y=smooth,
                                 mode="lines+markers" if len(points) < 30 else "lines",
                                 name=label, line=dict(color=col, width=2)))
    task = task_of(name)
    if chance and task in chance and name.endswith("/score"):
        fig.add_hline(y=chance[task], line=dict(color="#b42318", dash="dash"),
                      annotation_text=f"chance {chance[task]:.3g}")
    fig.update_layout(xaxis_title=xtitle, yaxis_title=name, height=380,
                      uirevision=f"compare:{name}:{x_axis}", margin=dict(l=60, r=20, t=30, b=40))
    return fig
