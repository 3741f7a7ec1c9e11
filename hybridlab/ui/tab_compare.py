"""Compare: 2-4 trials (of any studies) side by side: their pattern strips, a metrics table and
one training/eval curve overlaid."""
from __future__ import annotations

import gradio as gr

from hybridlab.storage import views
from hybridlab.ui import figures, tables
from hybridlab.errors import UserError
from hybridlab.formatting import shown_name
from hybridlab.ui.common import as_int, compare_key, parse_compare_key, trial_label
from hybridlab.ui.paths import quoted
from hybridlab.ui.strip import layers_from_yaml, strip_html

MAX_TRIALS = 4
DEFAULT_CURVES = ("eval/quality", "train/loss")


class CompareTab:
    def __init__(self, ctx):
        self.ctx = ctx
        with gr.Row():
            self.trials = gr.Dropdown(label=f"Trials to compare (2-{MAX_TRIALS})", choices=[],
                                      multiselect=True, max_choices=MAX_TRIALS,
                                      allow_custom_value=True, scale=4)
            self.curve = gr.Dropdown(label="Curve", choices=list(DEFAULT_CURVES),
                                     value=DEFAULT_CURVES[0], allow_custom_value=True, scale=2)
        self.strips = gr.HTML(elem_id="compare-strips")
        self.table = gr.Dataframe(label="Metrics side by side", interactive=False,
                                  max_height=420, wrap=True, elem_id="compare-table")
        self.plot = gr.Plot(label="Curves overlaid", elem_id="compare-plot")

    @property
    def outputs(self) -> list:
        return [self.trials, self.strips, self.table, self.curve, self.plot]

    def wire(self, app) -> None:
        self.trials.input(self.compare, [self.trials, self.curve], self.outputs,
                          api_name="compare")
        self.curve.input(self.curve_only, [self.trials, self.curve], [self.plot],
                         api_name="compare_curve")

    def choices(self) -> list[tuple[str, str]]:
        store = self.ctx.store()
        out = []
        for study in views.study_names(store):
            for r in views.flat_trials(store, study):
                out.append((f"{shown_name(study)} {trial_label(r)}",
                            compare_key(study, r["number"])))
        return out

    def _details(self, keys):
        store = self.ctx.store()
        out = []
        keys = keys if isinstance(keys, list) else []
        for key in keys[:MAX_TRIALS]:
            try:
                study, number = parse_compare_key(key)
                out.append((f"{shown_name(study)} #{number}", store.trial_detail(study, number)))
            except (ValueError, KeyError, OverflowError):
                raise UserError(f"no such trial: {quoted(key)}") from None
        return out

    def compare(self, keys, curve):
        details = self._details(keys)
        keys = keys if isinstance(keys, list) else []
        trials_dd = gr.Dropdown(choices=self.choices(), value=keys[:MAX_TRIALS])
        if not details:
            return (trials_dd, "<div style='color:#888'>pick 2 to 4 trials</div>",
                    tables.compare_frame([]), gr.Dropdown(), figures._empty("no trials"))
        strips = "".join(strip_html(layers_from_yaml(d.get("spec_yaml") or ""), title=label)
                         for label, d in details)
        names = sorted({n for _, d in details for n in (d.get("curves") or {})})
        if not isinstance(curve, str) or curve not in names:
            curve = next((c for c in DEFAULT_CURVES if c in names),
                         names[0] if names else _curve_name(curve))
        fig = figures.compare_curves_figure({label: d.get("curves") or {} for label, d in details},
                                            curve)
        return (trials_dd, strips, tables.compare_frame(details),
                gr.Dropdown(choices=names, value=curve), fig)

    def curve_only(self, keys, curve):
        details = self._details(keys)
        return figures.compare_curves_figure(
            {label: d.get("curves") or {} for label, d in details}, _curve_name(curve))

    def add(self, keys, study, trial):
        """Add one trial (from the detail tab) and show the comparison."""
        number = as_int(trial)
        if not isinstance(study, str) or not study or number is None:
            raise UserError("open a trial first")
        keys = [k for k in (keys if isinstance(keys, list) else [])
                if k != compare_key(study, number)]
        keys = (keys + [compare_key(study, number)])[-MAX_TRIALS:]
        return self.compare(keys, None)


def _curve_name(curve) -> str:
    """A curve name a caller sent (any string it typed, within reason)."""
    return shown_name(curve)[:200] if isinstance(curve, str) else ""
