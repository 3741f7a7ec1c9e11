"""Trial detail: the layer strip (legend: the block type behind each symbol), spec YAML,
training & evaluation curves (per-task series, EMA smoothing, step / tokens / wall time, chance
levels; see ``curves``), per-task scores against chance, every objective, parameter and cost
(readable and exact) and the failure reason of one trial. Other tabs open trials here
(``show``). Before a trial is open every part says how to open one."""
from __future__ import annotations

import functools
import html

import gradio as gr
import pandas as pd

from hybridlab.errors import UserError
from hybridlab.formatting import fmt_exact, fmt_value, shown_name
from hybridlab.storage import views
from hybridlab.ui import figures, tables
from hybridlab.ui.common import as_int, match_study, study_choices, trial_choices
from hybridlab.ui.curves import X_AXES, chance_levels, curves_figure
from hybridlab.ui.paths import quoted
from hybridlab.ui.strip import layers_from_yaml, strip_html

STATUS_COLOURS = {"COMPLETE": "#1a7f37", "PRUNED": "#b35900", "FAIL": "#b42318",
                  "RUNNING": "#0b5cad", "WAITING": "#666"}


EMPTY_HEADER = ("<div class='hl-empty' style='color:#666'>No trial open. Pick a study and a "
                "trial above and press <b>Open trial</b>, or click a point on the Pareto tab "
                "or a row of the Trials tab.</div>")


class DetailTab:
    def __init__(self, ctx):
        self.ctx = ctx
        with gr.Row():
            self.study = gr.Dropdown(label="Study", choices=[], allow_custom_value=True,
                                     interactive=True, scale=2, elem_id="detail-study")
            self.trial = gr.Dropdown(label="Trial (pick, or type its number)", choices=[],
                                     allow_custom_value=True, interactive=True, scale=3)
            self.open_btn = gr.Button("Open trial", variant="primary", scale=1)
            self.compare_btn = gr.Button("Add to Compare", scale=1)
            self.export_btn = gr.Button("Export this trial", scale=1)
        self.header = gr.HTML(EMPTY_HEADER, elem_id="trial-header")
        self.failure = gr.HTML(elem_id="trial-failure")
        self.strip = gr.HTML(elem_id="trial-strip")
        with gr.Row():
            self.smoothing = gr.Slider(0, 0.99, value=0.6, step=0.01,
                                       label="Smoothing (EMA of training series)", scale=3,
                                       elem_id="trial-smoothing")
            self.x_axis = gr.Radio(list(X_AXES), value="step", label="x axis", scale=2,
                                   elem_id="trial-xaxis")
        self.curves = gr.Plot(figures._empty("open a trial to see its curves", "curves"),
                              label="Training & evaluation curves", elem_id="trial-curves")
        with gr.Row():
            self.scores = gr.Plot(figures._empty("open a trial to see its task scores",
                                                 "scores"),
                                  label="Per-task scores", elem_id="trial-scores")
            self.metrics = gr.Dataframe(
                pd.DataFrame(columns=["group", "name", "value", "exact"]),
                label="Objectives, parameters, scores, costs, training figures",
                interactive=False, max_height=320, wrap=True, elem_id="trial-metrics")
        self.spec = gr.Code("# open a trial to see the model spec it trained", language="yaml",
                            label="Model spec (loads back to this model)", interactive=False,
                            elem_id="trial-spec")

    @property
    def outputs(self) -> list:
        return [self.study, self.trial, self.header, self.failure, self.strip, self.curves,
                self.scores, self.metrics, self.spec]

    def wire(self, app) -> None:
        self.study.input(self.trial_list, [self.study], [self.trial], api_name="detail_trials")
        self.open_btn.click(self.show, [self.study, self.trial, self.smoothing, self.x_axis],
                            self.outputs, api_name="open_trial")
        gr.on([self.smoothing.release, self.x_axis.input], self.curves_only,
              [self.study, self.trial, self.smoothing, self.x_axis], [self.curves],
              api_name="detail_curves", show_progress="hidden")

    # -- handlers --------------------------------------------------------------------------------
    def trial_list(self, study):
        store = self.ctx.store()
        if not isinstance(study, str) or study not in views.study_names(store):
            return gr.Dropdown(choices=[], value=None)
        rows = views.flat_trials(store, study)
        choices = trial_choices(rows)
        return gr.Dropdown(choices=choices, value=choices[-1][1] if choices else None)

    def _detail(self, study, trial):
        store = self.ctx.store()
        number = as_int(trial)
        if not isinstance(study, str) or not study or number is None:
            raise UserError("pick a study and a trial")
        names = views.study_names(store)
        study = match_study(names, study)
        if study not in names:
            raise UserError(f"no study {quoted(study)} in {self.ctx.shown_url}")
        try:
            d = views.trial_detail(store, study, number)
        except KeyError as e:
            raise UserError(shown_name(e.args[0])) from None
        return store, names, study, number, d

    def show(self, study, trial, smoothing=0.6, x_axis="step"):
        """All outputs for trial ``trial`` of ``study`` (gr.Error when there is none)."""
        store, names, study, number, d = self._detail(study, trial)
        view = views.study_view(store, study)
        row = view.by_number.get(number, {})
        chance = study_chance(view)
        return (
            gr.Dropdown(choices=study_choices(names), value=study),
            gr.Dropdown(choices=trial_choices(view.rows, number), value=number),
            header_html(d, row, study),
            gr.HTML(failure_html(d), visible=bool(d.get("failure_reason"))),
            strip_html(layers_from_yaml(d.get("spec_yaml") or ""), title=d.get("pattern") or ""),
            self._curves(study, number, d, smoothing, x_axis, chance),
            figures.scores_figure(d.get("scores") or {}, chance),
            tables.metrics_frame(d),
            d.get("spec_yaml") or "# no spec recorded for this trial",
        )

    def curves_only(self, study, trial, smoothing=0.6, x_axis="step"):
        if as_int(trial) is None or not study:
            return figures._empty("open a trial to see its curves", "curves")
        store, _, study, number, d = self._detail(study, trial)
        return self._curves(study, number, d, smoothing, x_axis,
                            study_chance(views.study_view(store, study)))

    def _curves(self, study, number, d, smoothing, x_axis, chance):
        x_axis = x_axis if x_axis in X_AXES else "step"
        return curves_figure(d.get("curves") or {}, title=f"{shown_name(study)} · trial "
                                                          f"{number}",
                             revision=f"curves:{study}:{number}:{x_axis}",
                             smoothing=smoothing_value(smoothing), x_axis=x_axis,
                             trial_metrics=d.get("metrics") or {}, chance=chance)


def study_chance(view) -> dict[str, float]:
    """Chance score per task of a study (from the search spec stored on it)."""
    return _chance(view.user_attrs.get("hybridlab_spec") or "")


@functools.lru_cache(maxsize=32)
def _chance(spec_text: str) -> dict[str, float]:
    return chance_levels(spec_text)


def smoothing_value(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(max(v, 0.0), 0.99) if v == v else 0.0


def header_html(d: dict, row: dict, study: str) -> str:
    state = d.get("state", "?")
    colour = STATUS_COLOURS.get(state, "#333")
    values = " · ".join(f"{html.escape(shown_name(k))} <b title='{html.escape(fmt_exact(v))}'>"
                        f"{html.escape(fmt_value(k, v))}</b>"
                        for k, v in (d.get("values") or {}).items()) or "no objective values"
    extra = []
    if row.get("pareto"):
        extra.append("<span style='background:#fde68a;padding:1px 6px;border-radius:8px'>"
                     "on the Pareto front</span>")
    if d.get("reused_from") is not None:
        extra.append(f"reuses the result of trial {int(d['reused_from'])} (same architecture "
                     f"and training: that trial's point stands for both)")
    if not d.get("feasible", True):
        extra.append("<span style='color:#b42318'>infeasible (violates a constraint)</span>")
    if d.get("duration_s"):
        extra.append(fmt_value("duration_s", d["duration_s"]))
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
