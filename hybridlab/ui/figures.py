"""Plotly figures of the web UI. Pure functions: data in, ``go.Figure`` out. Curves are in
``curves``, Optuna's analysis plots in ``analysis``.

Every figure that refreshes while a search runs sets ``uirevision`` to a key of what it shows
(studies, axes), so a refresh keeps the user's zoom, pan and hidden traces, and a change of axes
resets them. Numbers on hover are in the one number style of ``hybridlab.formatting``, with the
exact value beside them; axes of sizes in bytes get binary ticks (KiB, MiB), counts SI ones.
Plots of more than ``WEBGL_FROM`` points draw with WebGL (``Scattergl``).
"""
from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go

from hybridlab.formatting import fmt_exact, fmt_value, shown_name, unit_of
from hybridlab.storage import views
from hybridlab.storage.views import finite_number

STUDY_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")
#: from this many points a scatter plot draws with WebGL
WEBGL_FROM = 1000


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


def axis(metric: str, values: list[float], log: bool = False) -> dict:
    """Axis settings in the one number style: binary ticks for bytes, SI ones for counts."""
    out: dict = {"type": "log" if log else "linear"}
    unit = unit_of(metric)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if unit == "bytes" and finite:
        ticks = _byte_ticks(min(finite), max(finite), log)
        if ticks:
            out.update(tickvals=ticks, ticktext=[fmt_value(metric, t) for t in ticks])
    elif unit in ("count", "rate"):
        out["tickformat"] = "~s"
    return out


def _byte_ticks(lo: float, hi: float, log: bool) -> list[float]:
    if hi <= 0:
        return []
    if log:
        a = math.floor(math.log2(max(lo, 1.0)))
        b = math.ceil(math.log2(hi))
        step = max(1, math.ceil((b - a) / 8))
        return [2.0 ** k for k in range(a, b + 1, step)]
    unit = 1024 ** max(0, int(math.log(max(hi, 1.0), 1024)))
    span = (hi - min(lo, 0.0)) / unit
    step = next(s for s in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
                if span / s <= 8)
    start = math.floor(min(lo, hi) / (step * unit))
    return [k * step * unit for k in range(start, start + 10) if k * step * unit <= hi * 1.05]


def _scatter(n_points: int):
    return go.Scattergl if n_points >= WEBGL_FROM else go.Scatter


def value_text(metric: str, value) -> str:
    """Readable value and, when they differ, the exact one: '4.2M (4196192)'."""
    if value is None:
        return "-"
    shown, exact = fmt_value(metric.removeprefix("param:"), value), fmt_exact(value)
    return shown if shown == exact else f"{shown} ({exact})"


# -- Pareto --------------------------------------------------------------------------------------
def pareto_points(rows_by_study: dict[str, list[dict]], x: str, y: str,
                  directions: tuple[str, str], front: str = "axes") -> dict[str, dict]:
    """Per study: the plottable points split into front and dominated ones, and which trials
    reuse each point's result (``reuses``: number -> [numbers]).

    A trial that reused another's result (same architecture and training) is not a point of
    its own: the original stands for it. ``front="axes"``: non-dominated in (x, y) with
    ``directions``; ``front="objectives"``: the study's own Pareto set over all its
    objectives (the read model's). Only COMPLETE, feasible trials with both values count.
    """
    out = {}
    for study, rows in rows_by_study.items():
        pts = [r for r in rows if r["state"] == "COMPLETE" and r.get("feasible", True)
               and r.get("reused_from") is None and not r.get("retried")
               and finite_number(r.get(x)) is not None and finite_number(r.get(y)) is not None]
        reuses: dict[int, list[int]] = {}
        for r in rows:
            if r.get("reused_from") is not None:
                reuses.setdefault(int(r["reused_from"]), []).append(r["number"])
        if front == "objectives":
            on = {id(r) for r in pts if r.get("pareto")}
        else:
            idx = views.front_indices([(float(r[x]), float(r[y])) for r in pts], directions)
            on = {id(pts[i]) for i in idx}
        front_rows = [r for r in pts if id(r) in on]
        front_rows.sort(key=lambda r: (float(r[x]), float(r[y])))
        out[study] = {"front": front_rows, "dominated": [r for r in pts if id(r) not in on],
                      "reuses": reuses}
    return out


def pareto_figure(split: dict[str, dict], x: str, y: str, color: str = "study",
                  directions: tuple[str, str] = ("minimize", "minimize"),
                  show_dominated: bool = True, log_x: bool = False, log_y: bool = False,
                  revision: str = "pareto", symbol: str = "study",
                  categorical: tuple[str, ...] = ()) -> go.Figure:
    """Each study in its own colour: front points large and joined, dominated points small and
    faint (or hidden). ``color`` other than "study" colours points by that column: a
    continuous scale for numbers, one colour per value for a categorical column (such as
    ``param:blocks.M.type``); studies then differ by marker symbol, unless ``symbol`` names a
    categorical column to take the symbols (fronts keep their study colour)."""
    if not any(s["front"] or s["dominated"] for s in split.values()):
        return _empty("no finished feasible trials with both metrics yet: they appear here as "
                      "trials complete", revision)
    every = [r for s in split.values() for r in s["front"] + s["dominated"]]
    by_metric = color not in ("", "study", None)
    by_category = by_metric and (color in categorical
                                 or any(isinstance(r.get(color), str) for r in every))
    categories = sorted({str(r.get(color)) for r in every}) if by_category else []
    symbols_by = symbol if symbol not in ("", "study", None) else None
    symbol_values = sorted({str(r.get(symbols_by)) for r in every}) if symbols_by else []
    cvals = [float(r[color]) for r in every
             if by_metric and not by_category and finite_number(r.get(color)) is not None]
    cmin, cmax = (min(cvals), max(cvals)) if cvals else (0.0, 1.0)
    trace = _scatter(len(every))
    big = len(every) >= WEBGL_FROM
    fig = go.Figure()
    colorbar_done = False
    for i, (study, s) in enumerate(split.items()):
        col, label = study_colour(i), shown_name(study)
        groups = [("front", s["front"])] + ([("dominated", s["dominated"])] if show_dominated
                                             else [])
        for kind, rows in groups:
            for part, part_rows in _parts(rows, color if by_category else None, categories,
                                          symbols_by, symbol_values):
                if not part_rows:
                    continue
                cat, sym = part
                marker: dict = dict(size=13 if kind == "front" else 8,
                                    opacity=1.0 if kind == "front" else 0.45,
                                    line=dict(width=1.5 if kind == "front" else 0,
                                              color="#222"))
                if symbols_by:
                    marker["symbol"] = SYMBOLS[symbol_values.index(sym) % len(SYMBOLS)]
                else:
                    marker["symbol"] = SYMBOLS[i % len(SYMBOLS)] if by_metric else "circle"
                if by_category:
                    marker["color"] = study_colour(categories.index(cat))
                elif by_metric:
                    marker.update(color=_array(_floats(finite_number(r.get(color))
                                                       for r in part_rows), big),
                                  colorscale="Viridis", cmin=cmin, cmax=cmax,
                                  showscale=not colorbar_done,
                                  colorbar=dict(title=dict(text=color)))
                    colorbar_done = True
                else:
                    marker["color"] = col
                name = " · ".join([label] + [f"{shown_name(c)}={v}" for c, v in
                                             ((color if by_category else None, cat),
                                              (symbols_by, sym)) if c] + [kind])
                fig.add_trace(trace(
                    x=_array(_floats(r[x] for r in part_rows), big),
                    y=_array(_floats(r[y] for r in part_rows), big),
                    mode="markers", name=name, legendgroup=f"{study}|{cat}", marker=marker,
                    customdata=_array(_objects(_custom(study, label, r, x, y,
                                                       color if by_metric else None,
                                                       s["reuses"]) for r in part_rows), big),
                    hovertemplate=_hover(x, y, color if by_metric else None, kind),
                    meta="points"))
        if len(s["front"]) > 1:
            fig.add_trace(go.Scatter(
                x=[float(r[x]) for r in s["front"]], y=[float(r[y]) for r in s["front"]],
                mode="lines", line=dict(color=col, width=2, shape="linear"),
                name=f"{label} · front line", legendgroup=study, hoverinfo="skip",
                showlegend=False, meta="front-line"))
    xs = [float(r[x]) for r in every]
    ys = [float(r[y]) for r in every]
    fig.update_layout(
        xaxis=dict(title=dict(text=_label(x, directions[0])), **axis(x, xs, log_x)),
        yaxis=dict(title=dict(text=_label(y, directions[1])), **axis(y, ys, log_y)),
        legend=dict(orientation="h", y=-0.18), height=520, hovermode="closest",
        clickmode="event", uirevision=revision, margin=dict(l=70, r=20, t=40, b=60),
        title=dict(text="Pareto fronts (large, joined) and dominated trials", font=dict(size=14)))
    return fig


def _floats(values) -> np.ndarray:
    """Numbers for plotly as an array (plotly checks a list element by element: seconds for
    10,000 points; None becomes NaN, a gap)."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _array(values: np.ndarray, big: bool):
    """Arrays for large plots (sent to the browser as binary arrays); plain lists for small
    ones, which any reader of the figure's JSON can use as they are."""
    return values if big else values.tolist()


def _objects(rows) -> np.ndarray:
    """Per-point lists (customdata) as one object array, for the same reason."""
    rows = list(rows)
    out = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
    for i, r in enumerate(rows):
        out[i, :] = r
    return out


def _parts(rows, color, categories, symbols_by, symbol_values):
    """Rows split by (category value, symbol value); one part when neither is used."""
    cats = categories if color else [None]
    syms = symbol_values if symbols_by else [None]
    for cat in cats:
        for sym in syms:
            yield (cat, sym), [r for r in rows
                               if (cat is None or str(r.get(color)) == cat)
                               and (sym is None or str(r.get(symbols_by)) == sym)]


def _custom(study, label, r, x, y, color, reuses) -> list:
    """customdata: [0] the study itself (a click opens it), [1] trial, [2] pattern, [3] study
    for people, [4] x, [5] y, [6] colour value as text, [7] reuse note."""
    again = reuses.get(r["number"])
    note = (f"<br>reused by trial{'s' if len(again) > 1 else ''} "
            f"{', '.join(map(str, again[:12]))}{' …' if len(again) > 12 else ''}"
            if again else "")
    return [study, r["number"], html.escape(shown_name(r.get("pattern") or "?")),
            html.escape(label), value_text(x, r.get(x)), value_text(y, r.get(y)),
            "" if color is None else html.escape(value_text(color, r.get(color))), note]


def _hover(x, y, color, kind) -> str:
    text = ("<b>%{customdata[3]} · trial %{customdata[1]}</b><br>"
            "pattern <b>%{customdata[2]}</b><br>"
            f"{html.escape(x)}: %{{customdata[4]}}<br>{html.escape(y)}: %{{customdata[5]}}")
    if color:
        text += f"<br>{html.escape(color)}: %{{customdata[6]}}"
    return text + "%{customdata[7]}<br>" + \
        ("on the front" if kind == "front" else "dominated") + \
        "<br><i>click to open</i><extra></extra>"


def hypervolume_figure(histories: dict[str, list[dict]], note: str = "",
                       revision: str = "hv") -> go.Figure:
    """Hypervolume against trial number per study; ``note`` says how the objectives were
    scaled (one scale for all the studies drawn, or why there is none)."""
    if not any(histories.values()):
        return _empty("no finished feasible trials yet: the hypervolume grows as trials "
                      "complete", revision)
    fig = go.Figure()
    n = sum(len(h) for h in histories.values())
    for i, (study, hist) in enumerate(histories.items()):
        if not hist:
            continue
        fig.add_trace(_scatter(n)(
            x=[h["trial_number"] for h in hist], y=[h["hypervolume"] for h in hist],
            mode="lines+markers" if len(hist) < 300 else "lines",
            line=dict(color=study_colour(i), shape="hv"), name=shown_name(study),
            hovertemplate=f"{html.escape(shown_name(study))}<br>after trial %{{x}}: "
                          f"%{{y:.4g}}<extra></extra>"))
    fig.update_layout(xaxis_title="trial number", yaxis_title="hypervolume (scaled objectives)",
                      height=380, uirevision=revision, margin=dict(l=60, r=20, t=40, b=120),
                      title=dict(text="Hypervolume of each study's front over its objectives",
                                 font=dict(size=14)))
    if note:
        fig.add_annotation(text="<br>".join(html.escape(line) for line in _wrap(note, 150)),
                           xref="paper", yref="paper", x=0, y=-0.3, yanchor="top",
                           showarrow=False, align="left", font=dict(size=11, color="#555"),
                           xanchor="left")
    return fig


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


# -- studies -------------------------------------------------------------------------------------
STATE_COLOURS = {"COMPLETE": "#2ca02c", "PRUNED": "#ff7f0e", "FAIL": "#d62728",
                 "RUNNING": "#1f77b4", "WAITING": "#aaaaaa"}


def studies_figure(study_views: list) -> go.Figure:
    if not study_views:
        return _empty("no studies in this database yet", "studies")
    names = [shown_name(v.name) for v in study_views]
    fig = go.Figure()
    for state, colour in STATE_COLOURS.items():
        fig.add_trace(go.Bar(y=names, x=[v.counts.get(state, 0) for v in study_views],
                             name=state.lower(), orientation="h", marker_color=colour))
    fig.update_layout(barmode="stack", height=160 + 40 * len(names), uirevision="studies",
                      xaxis_title="trials", margin=dict(l=20, r=20, t=30, b=40),
                      legend=dict(orientation="h", y=-0.35), yaxis=dict(automargin=True))
    return fig


def scores_figure(scores: dict[str, float], chance: dict[str, float] | None = None,
                  title: str = "per-task scores") -> go.Figure:
    scores = {k: v for k, v in (scores or {}).items() if finite_number(v) is not None}
    if not scores:
        return _empty("no task scores (the trial did not finish training)", "scores")
    names = sorted(scores)
    fig = go.Figure(go.Bar(x=names, y=[scores[n] for n in names], marker_color="#4e79a7",
                           text=[f"{scores[n]:.3f}" for n in names], textposition="outside",
                           name="score"))
    levels = [(chance or {}).get(n) for n in names]
    if any(v is not None for v in levels):
        fig.add_trace(go.Scatter(x=names, y=levels, mode="markers", name="chance",
                                 marker=dict(symbol="line-ew-open", size=40, color="#b42318",
                                             line=dict(width=2)),
                                 hovertemplate="chance %{y:.3f}<extra></extra>"))
    fig.update_layout(yaxis=dict(range=[0, max(1.0, max(scores.values()) * 1.15)],
                                 title="score"),
                      height=300, margin=dict(l=50, r=20, t=40, b=40), uirevision="scores",
                      title=dict(text=title, font=dict(size=14)), showlegend=False)
    return fig


# -- compose -------------------------------------------------------------------------------------
def layer_bars_figure(summary: dict) -> go.Figure:
    """Per-layer parameters and decode state (and KV at the first context) as bars."""
    from plotly.subplots import make_subplots

    from hybridlab.ui.strip import type_colour

    layers = summary.get("layers") or []
    if not layers:
        return _empty("no layers", "layers")
    ctx = str(summary["contexts"][0]) if summary.get("contexts") else None
    labels = [f"{e['index']}:{e['symbol']}" for e in layers]
    colours = [type_colour(e["type"]) for e in layers]
    rows = 3 if ctx else 2
    titles = ["parameters", "decode state"] + ([f"KV cache @ {ctx}"] if ctx else [])
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=titles,
                        vertical_spacing=0.08)
    fig.add_trace(go.Bar(x=labels, y=[e["params"] for e in layers], marker_color=colours,
                         name="params", customdata=[[e["type"], value_text("params", e["params"])]
                                                    for e in layers],
                         hovertemplate="%{x} (%{customdata[0]}): %{customdata[1]}"
                                       "<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=[e["state_bytes"] for e in layers], marker_color=colours,
                         name="state", customdata=[value_text("state_bytes", e["state_bytes"])
                                                   for e in layers],
                         hovertemplate="%{x}: %{customdata}<extra></extra>"), 2, 1)
    fig.update_yaxes(axis("params", [e["params"] for e in layers]), row=1, col=1)
    fig.update_yaxes(axis("state_bytes", [e["state_bytes"] for e in layers]), row=2, col=1)
    if ctx:
        kv = [e["kv_bytes"][ctx] for e in layers]
        fig.add_trace(go.Bar(x=labels, y=kv, marker_color=colours, name="kv",
                             customdata=[value_text("kv_bytes", v) for v in kv],
                             hovertemplate="%{x}: %{customdata}<extra></extra>"), 3, 1)
        fig.update_yaxes(axis("kv_bytes", kv), row=3, col=1)
    fig.update_layout(showlegend=False, height=150 + 130 * rows, uirevision="layers",
                      margin=dict(l=70, r=20, t=40, b=40))
    return fig


# -- launch --------------------------------------------------------------------------------------
def progress_figure(progress: list[dict]) -> go.Figure:
    """Finished (retry-aware) / target trials per launched study, with the running trials'
    steps."""
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


# -- scale ---------------------------------------------------------------------------------------
def scale_figure(pairs: list[dict], agreement_text: str, proxy: str, scaled: str
                 ) -> go.Figure:
    """Proxy quality against scaled quality, one point per layout (``pairs``: proxy_trial,
    trial, pattern, proxy_quality, quality, quality_std), with the rank agreement."""
    if not pairs:
        return _empty("no scaled trial has completed yet", "scale")
    fig = go.Figure(go.Scatter(
        x=[p["proxy_quality"] for p in pairs], y=[p["quality"] for p in pairs],
        mode="markers+text", text=[f"#{p['proxy_trial']}" for p in pairs],
        textposition="top center", marker=dict(size=12, color="#1f77b4"),
        error_y=dict(type="data", array=[p.get("quality_std") or 0 for p in pairs],
                     visible=any(p.get("quality_std") for p in pairs)),
        customdata=[[scaled, p["trial"], html.escape(shown_name(p["pattern"] or "?")),
                     p["proxy_trial"]] for p in pairs],
        hovertemplate="proxy trial %{customdata[3]} → scaled trial %{customdata[1]}<br>"
                      "%{customdata[2]}<br>proxy quality %{x:.4g}<br>scaled quality "
                      "%{y:.4g}<extra></extra>", meta="points", name="layouts"))
    fig.update_layout(
        xaxis_title=f"quality in {shown_name(proxy)} (proxy)",
        yaxis_title=f"quality in {shown_name(scaled)} (scaled)", height=460,
        uirevision=f"scale:{scaled}", margin=dict(l=70, r=20, t=60, b=60),
        title=dict(text=html.escape(agreement_text), font=dict(size=13)))
    return fig
