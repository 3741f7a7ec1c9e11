"""Pareto: one or several studies, any two metrics as axes, any metric or categorical
parameter (the block type) as colour and a categorical parameter as symbol; each study's front
highlighted and joined in its own colour; dominated trials on/off; a trial that reused another's
result is that trial's point, not a second one; hypervolume against trial number on one scale
for every study shown (stated on the plot). Clicking a point opens the trial: the page script (``page_js``) passes the
clicked point (its ``customdata``) to a hidden textbox and presses a hidden button; the table of
front points below the plot opens trials too."""
from __future__ import annotations

import json

import gradio as gr

from hybridlab.errors import UserError
from hybridlab.formatting import fmt_value, shown_name
from hybridlab.storage import read_model, views
from hybridlab.ui import figures, tables
from hybridlab.ui.common import match_study, study_choices
from hybridlab.ui.paths import quoted

DIRECTIONS = ["auto", "minimize", "maximize"]
FRONTS = [("x & y axes", "axes"), ("all study objectives", "objectives")]
HV_SCALES = [("one scale for the studies shown", "common"), ("each study its own", "own")]


class ParetoTab:
    def __init__(self, ctx):
        self.ctx = ctx
        with gr.Row():
            self.studies = gr.Dropdown(label="Studies (compare several)", choices=[], elem_id="pareto-studies",
                                       multiselect=True, allow_custom_value=True, scale=3)
            self.front = gr.Radio(FRONTS, value="axes", label="Pareto front over", scale=2)
            self.dominated = gr.Checkbox(value=True, label="show dominated trials", scale=1)
        with gr.Row():
            self.x = gr.Dropdown(label="x", choices=[], allow_custom_value=True, scale=3)
            self.xdir = gr.Dropdown(DIRECTIONS, value="auto", label="x is better", scale=1)
            self.logx = gr.Checkbox(value=False, label="log x", scale=1)
            self.y = gr.Dropdown(label="y", choices=[], allow_custom_value=True, scale=3)
            self.ydir = gr.Dropdown(DIRECTIONS, value="auto", label="y is better", scale=1)
            self.logy = gr.Checkbox(value=False, label="log y", scale=1)
            self.color = gr.Dropdown(label="colour", choices=["study"], value="study",
                                     allow_custom_value=True, scale=3, elem_id="pareto-color")
            self.symbol = gr.Dropdown(label="symbol", choices=["study"], value="study",
                                      allow_custom_value=True, scale=2, elem_id="pareto-symbol")
        self.caption = gr.Markdown(elem_id="pareto-caption")
        self.plot = gr.Plot(label="Pareto", elem_id="pareto-plot")
        self.click_box = gr.Textbox(visible="hidden", elem_id="pareto-click",
                                    label="clicked point")
        self.click_btn = gr.Button("open clicked point", visible="hidden",
                                   elem_id="pareto-click-btn")
        self.table = gr.Dataframe(label="Front points — select a row to open the trial",
                                  interactive=False, max_height=300, elem_id="pareto-table")
        self.hv_scale = gr.Radio(HV_SCALES, value="common", label="Hypervolume scale",
                                 elem_id="pareto-hv-scale")
        self.hv = gr.Plot(label="Hypervolume", elem_id="pareto-hv")
        self.token = gr.State("")

    @property
    def render_inputs(self) -> list:
        return [self.studies, self.x, self.y, self.color, self.xdir, self.ydir, self.front,
                self.dominated, self.logx, self.logy, self.symbol, self.hv_scale]

    @property
    def render_outputs(self) -> list:
        return [self.plot, self.hv, self.table, self.caption]

    @property
    def select_outputs(self) -> list:
        return [self.studies, self.x, self.y, self.color, self.symbol] + self.render_outputs

    def wire(self, app) -> None:
        self.studies.input(self.select_studies, self.render_inputs, self.select_outputs,
                           api_name="pareto_studies")
        gr.on([self.x.input, self.y.input, self.color.input, self.xdir.input, self.ydir.input,
               self.front.input, self.dominated.input, self.logx.input, self.logy.input,
               self.symbol.input, self.hv_scale.input],
              self.render, self.render_inputs, self.render_outputs, api_name="pareto_render",
              show_progress="hidden")
        app.timer.tick(self.tick, [self.token] + self.render_inputs,
                       [self.token] + self.render_outputs, api_name="pareto_tick",
                       show_progress="hidden")
        self.click_btn.click(lambda text: app.open_trial(*parse_click(text)), [self.click_box],
                             app.open_outputs, api_name="open_clicked_point")

        def open_row(evt: gr.SelectData):
            study, number = row_trial(evt)
            return app.open_trial(match_study(views.study_names(self.ctx.store()), study),
                                  number)

        self.table.select(open_row, None, app.open_outputs, api_name="pareto_table_open")

    # -- handlers --------------------------------------------------------------------------------
    def _data(self, studies):
        store = self.ctx.store()
        names = views.study_names(store)
        studies = [s for s in (studies if isinstance(studies, list) else [])
                   if isinstance(s, str) and s in names]
        token = views.change_token(store)
        study_views = {s: views.study_view(store, s, token) for s in studies}
        rows = {s: v.rows for s, v in study_views.items()}
        metas = {s: views.study_meta(store, s, token) for s in studies}
        return study_views, studies, rows, metas

    def metric_choices(self, study_views: dict, metas: dict
                       ) -> tuple[list[str], list[str], list[str]]:
        """(numeric columns, the objectives, categorical parameter columns)."""
        objectives: list[str] = []
        categorical: list[str] = []
        for m in metas.values():
            objectives += [n for n in m["metric_names"] if n not in objectives]
            categorical += [c for c in views.category_columns(m) if c not in categorical]
        return (views.study_metric_columns(list(study_views.values()), objectives), objectives,
                categorical)

    def select_studies(self, studies, x, y, color, *rest):
        study_views, studies, rows, metas = self._data(studies)
        metrics, objectives, categorical = self.metric_choices(study_views, metas)
        if x not in metrics:
            x = objectives[0] if objectives else (metrics[0] if metrics else None)
        if y not in metrics or y == x:
            others = [m for m in objectives + metrics if m != x]
            y = others[0] if others else None
        colours = ["study"] + categorical + [m for m in metrics if m not in categorical]
        if color not in colours:
            color = "study"
        rest = list(rest) + [None] * (8 - len(rest))
        symbol = rest[6] if rest[6] in ["study"] + categorical else "study"
        rest[6] = symbol
        out = self.render(studies, x, y, color, *rest)
        return (gr.Dropdown(choices=study_choices(views.study_names(self.ctx.store())),
                            value=studies),
                gr.Dropdown(choices=metrics, value=x), gr.Dropdown(choices=metrics, value=y),
                gr.Dropdown(choices=colours, value=color),
                gr.Dropdown(choices=["study"] + categorical, value=symbol)) + out

    def render(self, studies, x, y, color, xdir="auto", ydir="auto", front="axes",
               dominated=True, logx=False, logy=False, symbol="study", hv_scale="common"):
        study_views, studies, rows, metas = self._data(studies)
        if not studies:
            names = views.study_names(self.ctx.store())
            hint = ("pick one or more studies above" if names else
                    "no studies yet: run 'hybridlab search SPEC' or use the Launch tab")
            return figures._empty(hint), figures._empty(hint, "hv"), \
                tables.pareto_table({}, "x", "y", None), hint[0].upper() + hint[1:] + "."
        metrics, _, categorical = self.metric_choices(study_views, metas)
        if x not in metrics or y not in metrics:       # none yet, or not this study's metrics
            empty = figures._empty("these studies have no finished trials with metrics yet")
            return empty, empty, tables.pareto_table({}, "x", "y", None), \
                "No finished trials with metrics yet: they appear here as trials complete."
        if color not in metrics and color not in categorical:
            color = "study"
        symbol = symbol if symbol in categorical else "study"
        front = front if front in ("axes", "objectives") else "axes"
        meta = next(iter(metas.values()))
        dirs = (xdir if xdir in ("minimize", "maximize") else views.direction(x, meta),
                ydir if ydir in ("minimize", "maximize") else views.direction(y, meta))
        split = figures.pareto_points(rows, x, y, dirs, front=front or "axes")
        revision = json.dumps([sorted(studies), x, y, front, bool(logx), bool(logy)])
        fig = figures.pareto_figure(split, x, y, color or "study", dirs, bool(dominated),
                                    bool(logx), bool(logy), revision=revision, symbol=symbol,
                                    categorical=tuple(categorical))
        hv = self.hypervolume(study_views, hv_scale)
        n_front = sum(len(s["front"]) for s in split.values())
        n_all = n_front + sum(len(s["dominated"]) for s in split.values())
        n_reused = sum(len(v) for s in split.values() for v in s["reuses"].values())
        caption = (f"**{n_all}** finished feasible trials with both metrics, **{n_front}** on "
                   f"the front{'s' if len(studies) > 1 else ''} "
                   f"({'x & y' if front != 'objectives' else 'all objectives'}; x {dirs[0]}, "
                   f"y {dirs[1]})."
                   + (f" {n_reused} more reused an earlier trial's result: each is counted "
                      f"once, as its original (hover a point to see them)." if n_reused else "")
                   + " Click a point to open its trial.")
        return fig, hv, tables.pareto_table(split, x, y, color), caption

    def hypervolume(self, study_views: dict, scale="common"):
        """Hypervolume per study: on one scale for all (``common``: shared normalisation and
        reference point, stated on the plot), or each on its own."""
        norm = read_model.normalization(list(study_views.values())) \
            if scale == "common" else None
        first = next(iter(study_views.values()))
        if norm is not None:
            note = ("One scale for " + ", ".join(shown_name(s) for s in study_views) + ": "
                    + norm.describe(first.metric_names, first.directions, fmt_value) + ".")
        elif len(study_views) > 1 and scale == "common":
            note = ("These studies have different objectives: each is scaled to its own ranges, "
                    "so the curves are not comparable with one another.")
        else:
            note = ("Each study scaled to its own objective ranges (reference 1.1 on every "
                    "scaled axis): compare shapes, not heights, across studies.")
        hist = {s: read_model.hypervolume_history(v, norm) for s, v in study_views.items()}
        return figures.hypervolume_figure(hist, note,
                                          revision="hv:" + json.dumps(sorted(study_views)))

    def tick(self, token, *inputs):
        new = views.change_token(self.ctx.store())
        if new == token:
            return (token,) + tuple(gr.skip() for _ in self.render_outputs)
        return (new,) + tuple(self.render(*inputs))


def parse_click(text: str) -> tuple[str, int]:
    try:
        data = json.loads(text)
        return str(data["study"]), int(data["trial"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise UserError(f"not a plot point: {quoted(text)}") from None


def row_trial(evt: gr.SelectData) -> tuple[str, int]:
    row = evt.row_value or []
    if len(row) < 2:
        raise UserError("select a row of the table")
    try:
        return str(row[0]), int(float(row[1]))
    except (TypeError, ValueError, OverflowError):
        raise UserError("select a row of the table") from None
