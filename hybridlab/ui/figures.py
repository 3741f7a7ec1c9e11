"""Plotly figures of the web UI. Pure functions: data in, ``go.Figure`` out.

Every figure that refreshes while a search runs sets ``uirevision`` to a key of what it shows
(studies, axes), so a refresh keeps the user's zoom, pan and hidden traces, and a change of axes
resets them.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hybridlab.formatting import shown_name
from hybridlab.storage import views
from hybridlab.storage.views import finite_number

STUDY_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")


def study_colour(i: int) -> str:
    return STUDY_COLOURS[i % len(STUDY_COLOURS)]


def _empty(message: str, key: str = "empty") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=html.escape(message), showarrow=False, x=0.5, y=0.5,
                       xref="paper", yref="paper", font=dict(size=14, color="#777"))
    fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False), height=320,
                      uirevision=key, margin=dict(l=20, r=20, t=30, b=20))
    return fig


def _label(metric: str, direction: str | None = None) -> str:
    arrow = {"maximize": " ↑", "minimize": " ↓"}.get(direction or "", "")
    return metric + arrow


# -- Pareto --------------------------------------------------------------------------------------
def pareto_points(rows_by_study: dict[str, list[dict]], x: str, y: str,
                  directions: tuple[str, str], front: str = "axes") -> dict[str, dict]:
    """Per study: the plottable points split into front and dominated ones.

    ``front="axes"``: non-dominated in (x, y) with ``directions``; ``front="objectives"``: the
    study's own Pareto set over all its objectives (Optuna's ``best_trials``). Only COMPLETE,
    feasible trials with both values count.
    """
    out = {}
    for study, rows in rows_by_study.items():
        pts = [r for r in rows if r["state"] == "COMPLETE" and r.get("feasible", True)
               and finite_number(r.get(x)) is not None and finite_number(r.get(y)) is not None]
        if front == "objectives":
            on = {id(r) for r in pts if r.get("pareto")}
        else:
            idx = views.front_indices([(float(r[x]), float(r[y])) for r in pts], directions)
            on = {id(pts[i]) for i in idx}
        front_rows = [r for r in pts if id(r) in on]
        front_rows.sort(key=lambda r: (float(r[x]), float(r[y])))
        out[study] = {"front": front_rows, "dominated": [r for r in pts if id(r) not in on]}
    return out


def pareto_figure(split: dict[str, dict], x: str, y: str, color: str = "study",
                  directions: tuple[str, str] = ("minimize", "minimize"),
                  show_dominated: bool = True, log_x: bool = False, log_y: bool = False,
                  revision: str = "pareto") -> go.Figure:
    """Each study in its own colour: front points large and joined, dominated points small and
    faint (or hidden). ``color`` other than "study" colours points by that metric (studies then
    differ by marker symbol; fronts keep their study colour)."""
    if not any(s["front"] or s["dominated"] for s in split.values()):
        return _empty("no finished trials with both metrics yet", revision)
    by_metric = color not in ("", "study", None)
    cvals = [float(r[color]) for s in split.values() for r in s["front"] + s["dominated"]
             if by_metric and finite_number(r.get(color)) is not None]
    cmin, cmax = (min(cvals), max(cvals)) if cvals else (0.0, 1.0)
    fig = go.Figure()
    colorbar_done = False
    for i, (study, s) in enumerate(split.items()):
        col, label = study_colour(i), shown_name(study)
        symbol = SYMBOLS[i % len(SYMBOLS)] if by_metric else "circle"
        groups = [("front", s["front"])]
        if show_dominated:
            groups.append(("dominated", s["dominated"]))
        for kind, rows in groups:
            if not rows:
                continue
            marker: dict = dict(symbol=symbol, size=13 if kind == "front" else 8,
                                opacity=1.0 if kind == "front" else 0.45,
                                line=dict(width=1.5 if kind == "front" else 0, color="#222"))
            if by_metric:
                marker.update(color=[finite_number(r.get(color)) for r in rows], colorscale="Viridis",
                              cmin=cmin, cmax=cmax, showscale=not colorbar_done,
                              colorbar=dict(title=dict(text=color)))
                colorbar_done = True
            else:
                marker["color"] = col
            # customdata[0] is the study itself (a click opens it), [4] its name for people
            custom = [[study, r["number"], r.get("pattern") or "?",
                       "" if not by_metric else _fmt(r.get(color)), html.escape(label)]
                      for r in rows]
            hover = ("<b>%{customdata[4]} · trial %{customdata[1]}</b><br>"
                     "pattern <b>%{customdata[2]}</b><br>"
                     f"{html.escape(x)}: %{{x:.4g}}<br>{html.escape(y)}: %{{y:.4g}}")
            if by_metric:
                hover += f"<br>{html.escape(color)}: %{{customdata[3]}}"
            hover += "<br>" + ("on the front" if kind == "front" else "dominated") + \
                     "<br><i>click to open</i><extra></extra>"
            fig.add_trace(go.Scatter(
                x=[float(r[x]) for r in rows], y=[float(r[y]) for r in rows],
                mode="markers", name=f"{label} · {'front' if kind == 'front' else 'dominated'}",
                legendgroup=study, marker=marker, customdata=custom, hovertemplate=hover,
                meta="points"))
        if len(s["front"]) > 1:
            fig.add_trace(go.Scatter(
                x=[float(r[x]) for r in s["front"]], y=[float(r[y]) for r in s["front"]],
                mode="lines", line=dict(color=col, width=2, shape="linear"),
                name=f"{label} · front line", legendgroup=study, hoverinfo="skip",
                showlegend=False, meta="front-line"))
    fig.update_layout(
        xaxis=dict(title=dict(text=_label(x, directions[0])), type="log" if log_x else "linear"),
        yaxis=dict(title=dict(text=_label(y, directions[1])), type="log" if log_y else "linear"),
        legend=dict(orientation="h", y=-0.18), height=520, hovermode="closest",
        clickmode="event", uirevision=revision, margin=dict(l=60, r=20, t=40, b=60),
        title=dict(text="Pareto fronts (large, joined) and dominated trials", font=dict(size=14)))
    return fig


def hypervolume_figure(histories: dict[str, list[dict]], revision: str = "hv") -> go.Figure:
    if not any(histories.values()):
        return _empty("no finished trials yet", revision)
    fig = go.Figure()
    for i, (study, hist) in enumerate(histories.items()):
        if not hist:
            continue
        fig.add_trace(go.Scatter(
            x=[h["trial_number"] for h in hist], y=[h["hypervolume"] for h in hist],
            mode="lines+markers", line=dict(color=study_colour(i), shape="hv"),
            name=shown_name(study),
            hovertemplate=f"{html.escape(shown_name(study))}<br>after trial %{{x}}: "
                          f"%{{y:.4g}}<extra></extra>"))
    fig.update_layout(xaxis_title="trial number", yaxis_title="hypervolume (normalised)",
                      height=300, uirevision=revision, margin=dict(l=60, r=20, t=40, b=40),
                      title=dict(text="Hypervolume of each study's front over its objectives",
                                 font=dict(size=14)))
    return fig


# -- studies -------------------------------------------------------------------------------------
STATE_COLOURS = {"COMPLETE": "#2ca02c", "PRUNED": "#ff7f0e", "FAIL": "#d62728",
                 "RUNNING": "#1f77b4", "WAITING": "#aaaaaa"}


def studies_figure(summaries: list[dict]) -> go.Figure:
    if not summaries:
        return _empty("no studies in this database yet", "studies")
    names = [shown_name(s["name"]) for s in summaries]
    fig = go.Figure()
    for state, colour in STATE_COLOURS.items():
        fig.add_trace(go.Bar(y=names, x=[s["counts"].get(state, 0) for s in summaries],
                             name=state.lower(), orientation="h", marker_color=colour))
    fig.update_layout(barmode="stack", height=160 + 40 * len(names), uirevision="studies",
                      xaxis_title="trials", margin=dict(l=20, r=20, t=30, b=40),
                      legend=dict(orientation="h", y=-0.35), yaxis=dict(automargin=True))
    return fig


# -- curves --------------------------------------------------------------------------------------
def _panel(name: str) -> str:
    if ("loss" in name or "bpb" in name) and name.startswith(("train/", "eval/")):
        return "loss (train) / bits per byte (eval)"
    if name.startswith("eval/"):
        return "evaluation scores"
    return "other (learning rate, gradient norm ...)"


PANELS = ("loss (train) / bits per byte (eval)", "evaluation scores",
          "other (learning rate, gradient norm ...)")


def curves_figure(curves: dict[str, list], title: str = "", revision: str = "curves") -> go.Figure:
    """Training loss, evaluation curves and the rest (lr, grad norm) in side-by-side panels."""
    curves = {k: v for k, v in (curves or {}).items() if v}
    if not curves:
        return _empty("no curves recorded for this trial", revision)
    panels = [p for p in PANELS if any(_panel(k) == p for k in curves)]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels)
    for name, points in sorted(curves.items()):
        col = panels.index(_panel(name)) + 1
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points],
                                 mode="lines+markers" if len(points) < 30 else "lines",
                                 name=name), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_layout(height=360, uirevision=revision, margin=dict(l=50, r=20, t=60, b=40),
                      title=dict(text=html.escape(title), font=dict(size=14)),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def compare_curves_figure(per_trial: dict[str, dict], name: str) -> go.Figure:
    """One curve (``name``) of several trials overlaid."""
    series = {label: c.get(name) for label, c in per_trial.items() if c.get(name)}
    if not series:
        return _empty(f"no {name!r} curve in these trials", "compare")
    fig = go.Figure()
    for i, (label, points) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points],
                                 mode="lines+markers" if len(points) < 30 else "lines",
                                 name=label, line=dict(color=study_colour(i))))
    fig.update_layout(xaxis_title="step", yaxis_title=name, height=360,
                      uirevision=f"compare:{name}", margin=dict(l=60, r=20, t=30, b=40))
    return fig


def scores_figure(scores: dict[str, float], title: str = "per-task scores") -> go.Figure:
    scores = {k: v for k, v in (scores or {}).items() if finite_number(v) is not None}
    if not scores:
        return _empty("no task scores (the trial did not finish training)", "scores")
    names = sorted(scores)
    fig = go.Figure(go.Bar(x=names, y=[scores[n] for n in names], marker_color="#4e79a7",
                           text=[f"{scores[n]:.3f}" for n in names], textposition="outside"))
    fig.update_layout(yaxis=dict(range=[0, max(1.0, max(scores.values()) * 1.15)],
                                 title="score"),
                      height=300, margin=dict(l=50, r=20, t=40, b=40), uirevision="scores",
                      title=dict(text=title, font=dict(size=14)))
    return fig


# -- compose -------------------------------------------------------------------------------------
def layer_bars_figure(summary: dict) -> go.Figure:
    """Per-layer parameters and decode state (and KV at the first context) as bars."""
    from hybridlab.ui.strip import type_colour

    layers = summary.get("layers") or []
    if not layers:
        return _empty("no layers", "layers")
    ctx = str(summary["contexts"][0]) if summary.get("contexts") else None
    labels = [f"{e['index']}:{e['symbol']}" for e in layers]
    colours = [type_colour(e["type"]) for e in layers]
    rows = 3 if ctx else 2
    titles = ["parameters", "decode state (bytes)"] + ([f"KV cache @ {ctx} (bytes)"] if ctx else [])
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=titles,
                        vertical_spacing=0.08)
    fig.add_trace(go.Bar(x=labels, y=[e["params"] for e in layers], marker_color=colours,
                         name="params", customdata=[e["type"] for e in layers],
                         hovertemplate="%{x} (%{customdata}): %{y:,}<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=[e["state_bytes"] for e in layers], marker_color=colours,
                         name="state", hovertemplate="%{x}: %{y:,} B<extra></extra>"), 2, 1)
    if ctx:
        fig.add_trace(go.Bar(x=labels, y=[e["kv_bytes"][ctx] for e in layers],
                             marker_color=colours, name="kv",
                             hovertemplate="%{x}: %{y:,} B<extra></extra>"), 3, 1)
    fig.update_layout(showlegend=False, height=150 + 130 * rows, uirevision="layers",
                      margin=dict(l=60, r=20, t=40, b=40))
    return fig


# -- launch --------------------------------------------------------------------------------------
def progress_figure(progress: list[dict]) -> go.Figure:
    """Finished / target trials per launched study, with the running trials' steps."""
    progress = [p for p in progress if p]
    if not progress:
        return _empty("no search launched from this page yet", "progress")
    fig = go.Figure()
    names = [shown_name(p["study"]) for p in progress]
    done = [p["done"] for p in progress]
    left = [max(0, (p.get("target") or p["done"]) - p["done"]) for p in progress]
    fig.add_trace(go.Bar(y=names, x=done, orientation="h", name="finished",
                         marker_color="#2ca02c"))
    fig.add_trace(go.Bar(y=names, x=left, orientation="h", name="to do", marker_color="#dddddd"))
    for p in progress:
        for r in p.get("running", []):
            if r.get("total_steps"):
                fig.add_annotation(y=shown_name(p["study"]), x=p["done"], xanchor="left",
                                   showarrow=False,
                                   text=f"trial {r['trial_number']}: step {r.get('step') or 0}"
                                        f"/{r['total_steps']}", font=dict(size=11))
    fig.update_layout(barmode="stack", height=140 + 40 * len(names), xaxis_title="trials",
                      uirevision="progress", margin=dict(l=20, r=20, t=30, b=40),
                      yaxis=dict(automargin=True))
    return fig


def _fmt(v) -> str:
    f = finite_number(v)
    return "-" if f is None else f"{f:.4g}"
