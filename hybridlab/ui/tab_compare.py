"""Compare: 2-4 trials (of any studies) side by side: their pattern strips, one table of every
objective, parameter, score and cost (one column per trial), and one series overlaid (smoothed
like the detail tab, on step, tokens or wall time). Each trial keeps one colour: its strip's
title and its curve."""
from __future__ import annotations

import gradio as gr

from hybridlab.errors import UserError
from hybridlab.formatting import shown_name
from hybridlab.storage import views
from hybridlab.ui import figures, tables
from hybridlab.ui.common import as_int, compare_key, parse_compare_key, trial_label
from hybridlab.ui.curves import X_AXES, compare_curves_figure
from hybridlab.ui.paths import quoted
from hybridlab.ui.strip import layers_from_yaml, strip_html
from hybridlab.ui.tab_detail import smoothing_value, study_chance

MAX_TRIALS = 4
DEFAULT_CURVES = ("eval/quality", "train/loss")
#: the picker offers each study's Pareto front and its latest trials; any 'study#N' can be typed
RECENT = 50
EMPTY = ("<div class='hl-empty' style='color:#666'>Nothing to compare yet. Pick 2 to 4 trials "
         "above (type <code>study#number</code> for any trial), or press <b>Add to Compare</b> "
         "on a trial's detail tab.</div>")


class CompareTab:
    def __init__(self, ctx):
        self.ctx = ctx
        with gr.Row():
            self.trials = gr.Dropdown(label=f"Trials to compare (2-{MAX_TRIALS})", choices=[],
                                      multiselect=True, max_choices=MAX_TRIALS,
                                      allow_custom_value=True, scale=4)
            self.curve = gr.Dropdown(label="Curve", choices=list(DEFAULT_CURVES),
                                     value=DEFAULT_CURVES[0], allow_custom_value=True, scale=2)
        with gr.Row():
            self.smoothing = gr.Slider(0, 0.99, value=0.6, step=0.01, scale=3,
                                       label="Smoothing (EMA of training series)")
            self.x_axis = gr.Radio(list(X_AXES), value="step", label="x axis", scale=2)
        self.strips = gr.HTML(EMPTY, elem_id="compare-strips")
        self.table = gr.Dataframe(tables.compare_frame([]), label="Side by side",
                                  interactive=False, max_height=420, wrap=True,
                                  elem_id="compare-table")
        self.plot = gr.Plot(compare_curves_figure({}, ""), label="Curves overlaid",
                            elem_id="compare-plot")

    @property
    def outputs(self) -> list:
        return [self.trials, self.strips, self.table, self.curve, self.plot]

    @property
    def curve_inputs(self) -> list:
        return [self.trials, self.curve, self.smoothing, self.x_axis]

    def wire(self, app) -> None:
        self.trials.input(self.compare, self.curve_inputs, self.outputs, api_name="compare")
        gr.on([self.curve.input, self.smoothing.release, self.x_axis.input], self.curve_only,
              self.curve_inputs, [self.plot], api_name="compare_curve")

    def choices(self, keys=()) -> list[tuple[str, str]]:
        store = self.ctx.store()
        token = views.change_token(store)
        out, seen = [], set()
        for study in views.study_names(store):
            rows = views.flat_trials(store, study, token)
            picked = [r for r in rows if r.get("pareto")] + rows[-RECENT:]
            for r in sorted({id(r): r for r in picked}.values(), key=lambda r: r["number"]):
                key = compare_key(study, r["number"])
                seen.add(key)
                out.append((f"{shown_name(study)} {trial_label(r)}", key))
        out += [(shown_name(k), k) for k in keys if isinstance(k, str) and k not in seen]
        return out

    def _details(self, keys):
        store = self.ctx.store()
        out = []
        keys = keys if isinstance(keys, list) else []
        for key in keys[:MAX_TRIALS]:
            try:
                study, number = parse_compare_key(key)
                out.append((f"{shown_name(study)} #{number}", views.trial_detail(store, study, number),
                            study))
            except (ValueError, KeyError, OverflowError):
                raise UserError(f"no such trial: {quoted(key)}") from None
        return out

    def compare(self, keys, curve, smoothing=0.6, x_axis="step"):
        details = self._details(keys)
        keys = keys if isinstance(keys, list) else []
        trials_dd = gr.Dropdown(choices=self.choices(keys), value=keys[:MAX_TRIALS])
        if not details:
            return (trials_dd, EMPTY, tables.compare_frame([]), gr.Dropdown(),
                    compare_curves_figure({}, ""))
        strips = "".join(
            f"<div style='border-left:5px solid {figures.study_colour(i)};padding-left:6px'>"
            + strip_html(layers_from_yaml(d.get("spec_yaml") or ""), title=label) + "</div>"
            for i, (label, d, _) in enumerate(details))
        if len(details) == 1:
            strips += ("<div class='hl-empty' style='color:#666'>Add one more trial to compare."
                       "</div>")
        names = sorted({n for _, d, _ in details for n in (d.get("curves") or {})})
        if not isinstance(curve, str) or curve not in names:
            curve = next((c for c in DEFAULT_CURVES if c in names),
                         names[0] if names else _curve_name(curve))
        return (trials_dd, strips, tables.compare_frame([(lb, d) for lb, d, _ in details]),
                gr.Dropdown(choices=names, value=curve),
                self._figure(details, curve, smoothing, x_axis))

    def curve_only(self, keys, curve, smoothing=0.6, x_axis="step"):
        return self._figure(self._details(keys), _curve_name(curve), smoothing, x_axis)

    def _figure(self, details, curve, smoothing, x_axis):
        store = self.ctx.store()
        chance: dict = {}
        for study in dict.fromkeys(s for _, _, s in details):
            chance.update(study_chance(views.study_view(store, study)))
        return compare_curves_figure(
            {label: d.get("curves") or {} for label, d, _ in details}, curve,
            smoothing=smoothing_value(smoothing), x_axis=x_axis if x_axis in X_AXES else "step",
            metrics={label: d.get("metrics") or {} for label, d, _ in details}, chance=chance)

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
