"""Trials: one study's trials as a table, filtered, sorted and paged on the server (a study of
10,000 trials sends one page): states, Pareto front only, the top k% by any metric, free text;
sort by any column; every sampled parameter (categorical ones such as the block type
included) and any metric as a column; the whole filtered table as CSV with exact values.
Selecting a row opens the trial."""
from __future__ import annotations

import gradio as gr

from hybridlab.errors import UserError
from hybridlab.export.safe import safe_component
from hybridlab.formatting import shown_name
from hybridlab.storage import views
from hybridlab.ui import tables
from hybridlab.ui.common import as_int

SORT_DEFAULT = "number"


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
            self.columns = gr.Dropdown(label="Columns (every parameter and metric)",
                                       choices=[], multiselect=True, allow_custom_value=True,
                                       scale=4)
        with gr.Row():
            self.text = gr.Textbox(label="Filter (words in any shown column)", scale=3,
                                   placeholder="e.g. mamba3 complete", elem_id="trials-text")
            self.sort = gr.Dropdown(label="Sort by", choices=[SORT_DEFAULT],
                                    value=SORT_DEFAULT, allow_custom_value=True, scale=2,
                                    elem_id="trials-sort")
            self.descending = gr.Checkbox(False, label="descending", scale=1)
            self.page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1,
                                  elem_id="trials-page")
            self.size = gr.Dropdown(list(tables.PAGE_SIZES), value=100, label="Rows per page",
                                    scale=1)
        with gr.Row():
            self.caption = gr.Markdown(elem_id="trials-caption")
            self.csv = gr.DownloadButton("Download CSV (all filtered rows, exact values)",
                                         value=None, scale=0, min_width=220,
                                         elem_id="trials-csv")
        self.table = gr.Dataframe(label="Trials — select a row to open it (sort with 'Sort by':"
                                        " it sorts every page)",
                                  interactive=False, wrap=False, max_height=560,
                                  pinned_columns=1, elem_id="trials-table")
        self.token = gr.State("")

    @property
    def filter_inputs(self) -> list:
        return [self.study, self.states, self.pareto_only, self.top_pct, self.top_metric,
                self.columns, self.text, self.sort, self.descending, self.page, self.size]

    @property
    def table_outputs(self) -> list:
        return [self.table, self.csv, self.caption, self.page]

    def wire(self, app) -> None:
        self.study.input(self.select_study, self.filter_inputs,
                         [self.top_metric, self.columns, self.sort] + self.table_outputs,
                         api_name="trials_study")
        gr.on([self.states.input, self.pareto_only.input, self.top_pct.release,
               self.top_metric.input, self.columns.input, self.text.submit, self.sort.input,
               self.descending.input, self.page.submit, self.size.input],
              self.render, self.filter_inputs, self.table_outputs, api_name="trials_filter")
        app.timer.tick(self.tick, [self.token] + self.filter_inputs,
                       [self.token] + self.table_outputs, api_name="trials_tick",
                       show_progress="hidden")

        def open_row(study, evt: gr.SelectData):
            row = evt.row_value or []
            number = as_int(row[0]) if row else None
            if number is None:
                raise UserError("select a trial row")
            return app.open_trial(study, number)

        self.table.select(open_row, [self.study], app.open_outputs, api_name="trials_open")

    # -- handlers --------------------------------------------------------------------------------
    def _columns(self, store, study):
        """(every column a caller may pick, the numeric ones, the study's meta, rows)."""
        meta = views.study_meta(store, study)
        view = views.study_view(store, study)
        rows = view.rows
        numeric = views.study_metric_columns([view], meta["metric_names"])
        params = [p.column for p in meta["params"].values()]
        every = list(dict.fromkeys(tables.default_columns(meta["metric_names"], params)
                                   + numeric))
        return every, numeric, meta, rows

    def select_study(self, study, states, pareto_only, top_pct, top_metric, columns,
                     text="", sort=SORT_DEFAULT, descending=False, page=1, size=100):
        store = self.ctx.store()
        if not isinstance(study, str) or study not in views.study_names(store):
            return (gr.Dropdown(choices=[], value=None), gr.Dropdown(choices=[], value=[]),
                    gr.Dropdown(choices=[SORT_DEFAULT], value=SORT_DEFAULT)) + \
                self.render(None, states, pareto_only, top_pct, None, [])
        every, numeric, meta, _ = self._columns(store, study)
        if top_metric not in numeric:
            top_metric = meta["metric_names"][0] if meta["metric_names"] else None
        params = [p.column for p in meta["params"].values()]
        wanted = [c for c in (columns or []) if c in every] if isinstance(columns, list) \
            else []
        columns = wanted or tables.default_columns(meta["metric_names"], params)
        sort = sort if sort in every else SORT_DEFAULT
        return (gr.Dropdown(choices=numeric, value=top_metric),
                gr.Dropdown(choices=every, value=columns),
                gr.Dropdown(choices=every, value=sort)) + \
            self.render(study, states, pareto_only, top_pct, top_metric, columns, text, sort,
                        descending, 1, size)

    def render(self, study, states, pareto_only, top_pct, top_metric, columns, text="",
               sort=SORT_DEFAULT, descending=False, page=1, size=100):
        store = self.ctx.store()
        if not isinstance(study, str) or study not in views.study_names(store):
            return (tables.trials_frame([], ["number"]), None,
                    "Pick a study above. No studies yet? Start one with `hybridlab search "
                    "SPEC` or the Launch tab.", 1)
        every, numeric, meta, rows = self._columns(store, study)
        # what a caller sends is only ever a choice among this study's own states and columns
        states = [s for s in states if s in tables.STATES] if isinstance(states, list) else None
        top_metric = top_metric if isinstance(top_metric, str) and top_metric in numeric \
            else None
        top_pct = _percent(top_pct)
        columns = [c for c in columns if isinstance(c, str) and c in every] \
            if isinstance(columns, list) else []
        params = [p.column for p in meta["params"].values()]
        cols = columns or tables.default_columns(meta["metric_names"], params)
        sort = sort if isinstance(sort, str) and sort in every else SORT_DEFAULT
        text = text[:200] if isinstance(text, str) else ""
        shown = tables.filter_trials(rows, states=states or None, pareto_only=bool(pareto_only),
                                     top_pct=top_pct, top_metric=top_metric, meta=meta,
                                     text=text, columns=cols)
        shown = tables.sort_trials(shown, sort, bool(descending))
        size = as_int(size) if as_int(size) in tables.PAGE_SIZES else 100
        visible, page, pages = tables.page_of(shown, page, size)
        frame = tables.trials_frame(visible, cols, meta)
        path = self.ctx.scratch("csv") / f"{safe_component(study, 'study')}-trials.csv"
        tables.csv_frame(shown, cols).to_csv(path, index=False)
        filters = []
        if states and set(states) != set(tables.STATES):
            filters.append("states " + ", ".join(s.lower() for s in states))
        if pareto_only:
            filters.append("Pareto front only")
        if top_metric and top_pct < 100:
            filters.append(f"top {top_pct:g}% by {shown_name(top_metric)} "
                           f"({views.direction(top_metric, meta)})")
        if text.strip():
            filters.append(f"matching '{shown_name(text.strip())}'")
        caption = (f"**{len(shown)}** of {len(rows)} trials"
                   + (f" — {'; '.join(filters)}" if filters else "")
                   + f" · sorted by {shown_name(sort)}{' (descending)' if descending else ''}"
                   + f" · page {page} of {pages}")
        if not rows:
            caption = "This study has no trials yet: they appear here as the search runs."
        elif not shown:
            caption += ". No trial matches: clear the filter or tick more states."
        return frame, str(path), caption, page

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
