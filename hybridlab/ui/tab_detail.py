"""Trial detail: the layer strip, spec YAML, training & eval curves, per-task scores, cost
metrics and the failure reason of one trial. Other tabs open trials here (``show``)."""
from __future__ import annotations

import html

import gradio as gr

from hybridlab.errors import UserError
from hybridlab.formatting import fmt_value, shown_name
from hybridlab.storage import views
from hybridlab.ui import figures, tables
from hybridlab.ui.common import as_int, match_study, study_choices, trial_choices
from hybridlab.ui.paths import quoted
from hybridlab.ui.strip import layers_from_yaml, strip_html

STATUS_COLOURS = {"COMPLETE": "#1a7f37", "PRUNED": "#b35900", "FAIL": "#b42318",
                  "RUNNING": "#0b5cad", "WAITING": "#666"}


class DetailTab:
    def __init__(self, ctx):
        self.ctx = ctx
        with gr.Row():
            self.study = gr.Dropdown(label="Study", choices=[], allow_custom_value=True,
                                     interactive=True, scale=2)
            self.trial = gr.Dropdown(label="Trial", choices=[], allow_custom_value=True,
                                     interactive=True, scale=3)
            self.open_btn = gr.Button("Open trial", variant="primary", scale=1)
            self.compare_btn = gr.Button("Add to Compare", scale=1)
            self.export_btn = gr.Button("Export this trial", scale=1)
        self.header = gr.HTML(elem_id="trial-header")
        self.failure = gr.HTML(elem_id="trial-failure")
        self.strip = gr.HTML(elem_id="trial-strip")
        self.curves = gr.Plot(label="Training & evaluation curves", elem_id="trial-curves")
        with gr.Row():
            self.scores = gr.Plot(label="Per-task scores", elem_id="trial-scores")
            self.metrics = gr.Dataframe(label="Scores, costs, training figures, parameters",
                                        interactive=False, max_height=320, wrap=True)
        self.spec = gr.Code(language="yaml", label="Model spec (loads back to this model)",
                            interactive=False, elem_id="trial-spec")

    @property
    def outputs(self) -> list:
        return [self.study, self.trial, self.header, self.failure, self.strip, self.curves,
                self.scores, self.metrics, self.spec]

    def wire(self, app) -> None:
        self.study.input(self.trial_list, [self.study], [self.trial], api_name="detail_trials")
        self.open_btn.click(self.show, [self.study, self.trial], self.outputs,
                            api_name="open_trial")

    # -- handlers --------------------------------------------------------------------------------
    def trial_list(self, study):
        store = self.ctx.store()
        if not isinstance(study, str) or study not in views.study_names(store):
            return gr.Dropdown(choices=[], value=None)
        rows = views.flat_trials(store, study)
        choices = trial_choices(rows)
        return gr.Dropdown(choices=choices, value=choices[-1][1] if choices else None)

    def show(self, study, trial):
        """All outputs for trial ``trial`` of ``study`` (gr.Error when there is none)."""
        store = self.ctx.store()
        number = as_int(trial)
        if not isinstance(study, str) or not study or number is None:
            raise UserError("pick a study and a trial")
        names = views.study_names(store)
        study = match_study(names, study)
        if study not in names:
            raise UserError(f"no study {quoted(study)} in {self.ctx.shown_url}")
        try:
            d = store.trial_detail(study, number)
        except KeyError as e:
            raise UserError(shown_name(e.args[0])) from None
        rows = views.flat_trials(store, study)
        row = next((r for r in rows if r["number"] == number), {})
        title = f"{shown_name(study)} · trial {number}"
        return (
            gr.Dropdown(choices=study_choices(names), value=study),
            gr.Dropdown(choices=trial_choices(rows), value=number),
            header_html(d, row, study),
            gr.HTML(failure_html(d), visible=bool(d.get("failure_reason"))),
            strip_html(layers_from_yaml(d.get("spec_yaml") or ""), title=d.get("pattern") or ""),
            figures.curves_figure(d.get("curves") or {}, title=title,
                                  revision=f"curves:{study}:{number}"),
            figures.scores_figure(d.get("scores") or {}),
            tables.metrics_frame(d),
            d.get("spec_yaml") or "# no spec recorded for this trial",
        )


def header_html(d: dict, row: dict, study: str) -> str:
    state = d.get("state", "?")
    colour = STATUS_COLOURS.get(state, "#333")
    values = " · ".join(f"{html.escape(shown_name(k))} <b>{html.escape(fmt_value(k, v))}</b>"
                        for k, v in (d.get("values") or {}).items()) or "no objective values"
    extra = []
    if row.get("pareto"):
        extra.append("<span style='background:#fde68a;padding:1px 6px;border-radius:8px'>"
                     "on the Pareto front</span>")
    if d.get("reused_from") is not None:
        extra.append(f"reuses the result of trial {int(d['reused_from'])}")
    if not d.get("feasible", True):
        extra.append("<span style='color:#b42318'>infeasible (violates a constraint)</span>")
    if d.get("duration_s"):
        extra.append(f"{d['duration_s']:.1f} s")
    if (d.get("run") or {}).get("device"):
        extra.append(f"on {html.escape(str(d['run']['device']))}")
    return (f"<div class='hl-trial-header'><span style='font-size:1.2em;font-weight:600'>"
            f"{html.escape(shown_name(study))} · trial {d['number']}</span> "
            f"<span style='color:#fff;background:{colour};padding:1px 8px;border-radius:8px'>"
            f"{html.escape(state.lower())}</span> "
            f"<code>{html.escape(shown_name(d.get('pattern') or ''))}</code><br>{values}<br>"
            f"<span style='color:#555'>{' · '.join(extra)}</span></div>")


def failure_html(d: dict) -> str:
    reason = d.get("failure_reason")
    if not reason:
        return ""
    return ("<div class='hl-failure' style='border-left:4px solid #b42318;padding:4px 10px;"
            "background:#fff5f5'><b>Why it did not complete</b><pre style='white-space:"
            f"pre-wrap;margin:4px 0'>{html.escape(str(reason))}</pre></div>")
