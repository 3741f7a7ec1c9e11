"""Analysis: Optuna's own plots for one study and one objective (``analysis``: parameter
importance, parallel coordinates, slice, contour, history), and, for a study re-trained larger
by ``hybridlab scale`` (a linked ``<study>@scale-...`` study), proxy quality against scaled
quality per layout with the rank agreement (Spearman, Kendall, bootstrap intervals)."""
from __future__ import annotations

import math

import gradio as gr

from hybridlab.formatting import shown_name
from hybridlab.search.agreement import agreement
from hybridlab.storage import views
from hybridlab.ui import analysis, figures
from hybridlab.ui.common import study_choices

PICK = "pick a study above"


class AnalysisTab:
    def __init__(self, ctx):
        self.ctx = ctx
        gr.Markdown("Optuna's analysis plots (`optuna.visualization`) for one objective of one "
                    f"study, over its latest {analysis.LIMIT} finished feasible trials.")
        with gr.Row():
            self.study = gr.Dropdown(label="Study", choices=[], allow_custom_value=True, scale=2,
                                     elem_id="analysis-study")
            self.objective = gr.Dropdown(label="Objective", choices=[], allow_custom_value=True,
                                         scale=2, elem_id="analysis-objective")
            self.cx = gr.Dropdown(label="Contour x", choices=[], allow_custom_value=True,
                                  scale=2)
            self.cy = gr.Dropdown(label="Contour y", choices=[], allow_custom_value=True,
                                  scale=2)
        self.plots = {}
        with gr.Row():
            self.plots["importance"] = gr.Plot(figures._empty(PICK), elem_id="analysis-importance",
                                               label="Parameter importance")
            self.plots["history"] = gr.Plot(figures._empty(PICK), elem_id="analysis-history",
                                            label="History")
        self.plots["parallel"] = gr.Plot(figures._empty(PICK), elem_id="analysis-parallel",
                                         label="Parallel coordinates")
        with gr.Row():
            self.plots["slice"] = gr.Plot(figures._empty(PICK), elem_id="analysis-slice",
                                          label="Slice")
            self.plots["contour"] = gr.Plot(figures._empty(PICK), elem_id="analysis-contour",
                                            label="Contour")
        gr.Markdown("### Proxy vs scaled\nA study made by `hybridlab scale` re-trains a search's "
                    "best layouts larger and longer. Does the short search rank them as the "
                    "long runs do?")
        self.scaled = gr.Dropdown(label="Scaled study", choices=[], allow_custom_value=True,
                                  elem_id="analysis-scaled")
        self.scale_plot = gr.Plot(figures._empty(
            "no scaled study yet: run 'hybridlab scale --study NAME ...'", "scale"),
            elem_id="analysis-scale", label="Proxy vs scaled quality")

    @property
    def outputs(self) -> list:
        return [self.study, self.objective, self.cx, self.cy] + \
            [self.plots[k] for k in analysis.KINDS] + [self.scaled, self.scale_plot]

    @property
    def inputs(self) -> list:
        return [self.study, self.objective, self.cx, self.cy, self.scaled]

    def wire(self, app) -> None:
        gr.on([self.study.input, self.objective.input, self.cx.input, self.cy.input],
              self.show, self.inputs, self.outputs, api_name="analysis")
        self.scaled.input(self.scale, [self.scaled], [self.scale_plot], api_name="analysis_scale")

    def show(self, study=None, objective=None, cx=None, cy=None, scaled=None):
        """The plots of ``study`` (none picked yet: the first study)."""
        store = self.ctx.store()
        names = views.study_names(store)
        if study is None and names:
            study = names[0]
        token = views.change_token(store)
        linked = [n for n in names
                  if views.study_view(store, n, token).proxy_study is not None]
        scaled = scaled if scaled in linked else (linked[0] if linked else None)
        scaled_out = (gr.Dropdown(choices=study_choices(linked), value=scaled),
                      self.scale(scaled))
        if not isinstance(study, str) or study not in names:
            hint = PICK if names else "no studies yet: run 'hybridlab search SPEC'"
            empty = figures._empty(hint, "analysis")
            return (gr.Dropdown(choices=study_choices(names), value=None), gr.Dropdown(),
                    gr.Dropdown(), gr.Dropdown()) + (empty,) * len(analysis.KINDS) + scaled_out
        view = views.study_view(store, study, token)
        objective = objective if objective in view.metric_names else \
            (view.metric_names[0] if view.metric_names else None)
        params = sorted(view.distributions)
        cx = cx if cx in params else (params[0] if params else None)
        cy = cy if cy in params and cy != cx else next((p for p in params if p != cx), None)
        figs = analysis.plots(view, objective, (cx, cy) if cx and cy else None)
        return (gr.Dropdown(choices=study_choices(names), value=study),
                gr.Dropdown(choices=view.metric_names, value=objective),
                gr.Dropdown(choices=params, value=cx), gr.Dropdown(choices=params, value=cy)) \
            + tuple(figs[k] for k in analysis.KINDS) + scaled_out

    def scale(self, scaled):
        store = self.ctx.store()
        if not isinstance(scaled, str) or scaled not in views.study_names(store):
            return figures._empty("no scaled study yet: run 'hybridlab scale --study NAME ...'",
                                  "scale")
        view = views.study_view(store, scaled)
        pairs = scale_pairs(view)
        return figures.scale_figure(pairs, agreement_text(pairs), view.proxy_study or "?",
                                    scaled)


def scale_pairs(view) -> list[dict]:
    """Completed trials of a linked study with their proxy trial's quality."""
    out = []
    for r in view.rows:
        q, pq = r.get("quality"), r.get("proxy_quality")
        if r["state"] != "COMPLETE" or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                               for v in (q, pq)):
            continue
        out.append({"trial": r["number"], "proxy_trial": r.get("proxy_trial"),
                    "pattern": r.get("pattern"), "proxy_quality": float(pq),
                    "quality": float(q), "quality_std": r.get("quality_std")})
    return out


def agreement_text(pairs: list[dict]) -> str:
    if len(pairs) < 3:
        return (f"{len(pairs)} layout(s) scaled so far: rank agreement needs at least 3")
    a = agreement([p["proxy_quality"] for p in pairs], [p["quality"] for p in pairs])
    return shown_name(a.describe())
