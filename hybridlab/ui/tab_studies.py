"""Studies: every study of the database with its status, trial counts per state, best value
per objective and compute time; selecting a row shows its Pareto front."""
from __future__ import annotations

import gradio as gr

from hybridlab.errors import UserError
from hybridlab.storage import views
from hybridlab.ui import figures, tables
from hybridlab.ui.common import match_study


class StudiesTab:
    def __init__(self, ctx):
        self.ctx = ctx
        with gr.Row():
            self.caption = gr.Markdown(elem_id="studies-caption")
            self.refresh_btn = gr.Button("Refresh", scale=0, min_width=100)
        self.table = gr.Dataframe(label="Studies — select a row to see its Pareto front",
                                  interactive=False, wrap=True, elem_id="studies-table",
                                  show_search="filter",
                                  column_widths=["11%", "6%", "7%", "6%", "6%", "5%", "6%",
                                                 "6%", "7%", "24%", "6%", "10%"])
        self.plot = gr.Plot(label="Trials per state", elem_id="studies-plot")
        self.token = gr.State("")

    @property
    def outputs(self) -> list:
        return [self.table, self.plot, self.caption]

    def wire(self, app) -> None:
        self.refresh_btn.click(self.refresh, None, self.outputs, api_name="refresh_studies")
        app.timer.tick(self.tick, [self.token], [self.token] + self.outputs,
                       api_name="studies_tick", show_progress="hidden")
        pareto = app.pareto

        def open_study(evt: gr.SelectData, *inputs):
            row = evt.row_value or []
            if not row:
                raise UserError("select a study row")
            study = match_study(views.study_names(self.ctx.store()), row[0])
            out = pareto.select_studies([study], *inputs[1:])
            return tuple(out) + (gr.Tabs(selected="pareto"),)

        self.table.select(open_study, pareto.render_inputs, pareto.select_outputs + [app.tabs],
                          api_name="studies_open")

    def refresh(self):
        store = self.ctx.store()
        token = views.change_token(store)
        study_views = [views.study_view(store, n, token) for n in views.study_names(store)]
        running = sum(v.counts.get("RUNNING", 0) for v in study_views)
        caption = (f"Database `{self.ctx.shown_url}` — **{len(study_views)}** "
                   f"stud{'y' if len(study_views) == 1 else 'ies'}"
                   + (f", **{running}** trial{'s' if running != 1 else ''} running" if running
                      else "") + ".")
        if not study_views:
            caption += (" Nothing here yet: start a search with `hybridlab search SPEC --db "
                        "...`" + (" or from the Launch tab" if self.ctx.enable_launch else "")
                        + "; its trials appear here as they finish.")
        else:
            caption += (" *done* counts finished trials toward the target, a retried trial "
                        "once; *front* counts trials on the Pareto front.")
        return (tables.studies_frame(study_views), figures.studies_figure(study_views),
                caption)

    def tick(self, token):
        new = views.change_token(self.ctx.store())
        if new == token:
            return (token,) + tuple(gr.skip() for _ in self.outputs)
        return (new,) + tuple(self.refresh())
