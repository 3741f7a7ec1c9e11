"""Trials: a table of one study's trials that sorts (click a header) and filters (state,
Pareto-only, top k% by an objective, free text), takes any metric as a column, and downloads
as CSV. Selecting a row opens the trial."""
from __future__ import annotations

import gradio as gr

from hybridlab.errors import UserError
from hybridlab.export.safe import safe_component
from hybridlab.formatting import shown_name
from hybridlab.storage import views
from hybridlab.ui import tables


class TrialsTab:
    def __init__(self, ctx):
        self.ctx = ctx
        with gr.Row():
            self.study = gr.Dropdown(label="Study", choices=[], allow_custom_value=True, scale=2)
            self.states = gr.CheckboxGroup(list(tables.STATES), value=list(tables.STATES),
                                           label="States", scale=3)
            self.pareto_only = gr.Checkbox(False, label="Pareto front only", scale=1)
        with gr.Row():
            self.top_pct = gr.Slider(1, 100, value=100, step=1, label="Top k % by", scale=2)
            self.top_metric = gr.Dropdown(label="… this metric", choices=[],
                                          allow_custom_value=True, scale=2)
            self.columns = gr.Dropdown(label="Extra columns (any metric)", choices=[],
                                       multiselect=True, allow_custom_value=True, scale=4)
        with gr.Row():
            self.caption = gr.Markdown(elem_id="trials-caption")
            self.csv = gr.DownloadButton("Download CSV", value=None, scale=0, min_width=160,
                                         elem_id="trials-csv")
        self.table = gr.Dataframe(label="Trials — click a header to sort; select a row to open",
                                  interactive=False, wrap=False, show_search="filter",
                                  max_height=560, pinned_columns=1, elem_id="trials-table")
        self.token = gr.State("")

    @property
    def filter_inputs(self) -> list:
        return [self.study, self.states, self.pareto_only, self.top_pct, self.top_metric,
                self.columns]

    @property
    def table_outputs(self) -> list:
        return [self.table, self.csv, self.caption]

    def wire(self, app) -> None:
        self.study.input(self.select_study, self.filter_inputs,
                         [self.top_metric, self.columns] + self.table_outputs,
                         api_name="trials_study")
        gr.on([self.states.input, self.pareto_only.input, self.top_pct.release,
               self.top_metric.input, self.columns.input], self.render, self.filter_inputs,
              self.table_outputs, api_name="trials_filter")
        app.timer.tick(self.tick, [self.token] + self.filter_inputs,
                       [self.token] + self.table_outputs, api_name="trials_tick",
                       show_progress="hidden")

        def open_row(study, evt: gr.SelectData):
            row = evt.row_value or []
            if not row:
                raise UserError("select a trial row")
            return app.open_trial(study, int(float(row[0])))

        self.table.select(open_row, [self.study], app.open_outputs, api_name="trials_open")

    # -- handlers --------------------------------------------------------------------------------
    def select_study(self, study, states, pareto_only, top_pct, top_metric, columns):
        store = self.ctx.store()
        if not study or study not in views.study_names(store):
            return (gr.Dropdown(choices=[], value=None), gr.Dropdown(choices=[], value=[])) + \
                self.render(None, states, pareto_only, top_pct, None, [])
        meta = views.study_meta(store, study)
        metrics = views.metric_columns(views.flat_trials(store, study), meta["metric_names"])
        if top_metric not in metrics:
            top_metric = meta["metric_names"][0] if meta["metric_names"] else None
        columns = [c for c in (columns or []) if c in metrics]
        return (gr.Dropdown(choices=metrics, value=top_metric),
                gr.Dropdown(choices=metrics, value=columns)) + \
            self.render(study, states, pareto_only, top_pct, top_metric, columns)

    def render(self, study, states, pareto_only, top_pct, top_metric, columns):
        store = self.ctx.store()
        if not isinstance(study, str) or study not in views.study_names(store):
            return tables.trials_frame([], ["number"]), None, "Pick a study."
        meta = views.study_meta(store, study)
        rows = views.flat_trials(store, study)
        # what a caller sends is only ever a choice among this study's own states and metrics
        metrics = views.metric_columns(rows, meta["metric_names"])
        states = [s for s in states if s in tables.STATES] if isinstance(states, list) else None
        top_metric = top_metric if isinstance(top_metric, str) and top_metric in metrics \
            else None
        top_pct = _percent(top_pct)
        columns = [c for c in columns if isinstance(c, str) and c in metrics] \
            if isinstance(columns, list) else []
        shown = tables.filter_trials(rows, states=states or None, pareto_only=bool(pareto_only),
                                     top_pct=top_pct, top_metric=top_metric, meta=meta)
        cols = tables.default_columns(meta["metric_names"])
        cols += [c for c in columns if c not in cols]
        frame = tables.trials_frame(shown, cols)
        path = self.ctx.scratch("csv") / f"{safe_component(study, 'study')}-trials.csv"
        frame.to_csv(path, index=False)
        filters = []
        if states and set(states) != set(tables.STATES):
            filters.append("states " + ", ".join(s.lower() for s in states))
        if pareto_only:
            filters.append("Pareto front only")
        if top_metric and top_pct < 100:
            filters.append(f"top {top_pct:g}% by {shown_name(top_metric)} "
                           f"({views.direction(top_metric, meta)})")
        caption = f"**{len(shown)}** of {len(rows)} trials" + \
            (f" — {'; '.join(filters)}" if filters else "")
        return frame, str(path), caption

    def tick(self, token, *inputs):
        new = views.change_token(self.ctx.store())
        if new == token:
            return (token,) + tuple(gr.skip() for _ in self.table_outputs)
        return (new,) + tuple(self.render(*inputs))


def _percent(value) -> float:
    """The top-k% slider's value, 1 to 100 (100 when it is not a number)."""
    try:
        pct = float(value)
    except (TypeError, ValueError):
        return 100.0
    return min(100.0, max(1.0, pct)) if pct == pct else 100.0
