"""Export: a trial, or the best trial by an objective, as a downloadable zip of the export
folder (native, Hugging Face, or the layout scaled to another size) -- the same code as
``hybridlab export``."""
from __future__ import annotations

import gradio as gr

from hybridlab.errors import SpecError
from hybridlab.storage import views
from hybridlab.ui.common import as_int, trial_choices

MODES = [("best trial by an objective", "best"), ("a trial I pick", "trial")]
FORMATS = [("native (spec + safetensors + model card)", "native"),
           ("Hugging Face transformers folder", "hf"),
           ("layout only, scaled (no weights)", "layout")]


class ExportTab:
    def __init__(self, ctx):
        self.ctx = ctx
        with gr.Row():
            self.study = gr.Dropdown(label="Study", choices=[], allow_custom_value=True, scale=2)
            self.mode = gr.Radio(MODES, value="best", label="Which trial", scale=2)
            self.objective = gr.Dropdown(label="Best by", choices=[], allow_custom_value=True,
                                         scale=2)
            self.trial = gr.Dropdown(label="Trial", choices=[], allow_custom_value=True, scale=2)
        with gr.Row():
            self.format = gr.Radio(FORMATS, value="native", label="Format", scale=3)
            self.d_model = gr.Number(value=1024, precision=0, label="d_model (layout only)",
                                     minimum=1, scale=1)
            self.layers = gr.Number(value=24, precision=0, label="mixer layers (layout only)",
                                    minimum=1, scale=1)
        with gr.Row():
            self.build_btn = gr.Button("Build export", variant="primary", scale=1)
            self.download = gr.DownloadButton("Download export (.zip)", value=None,
                                              elem_id="export-download", scale=1)
        self.summary = gr.Markdown(elem_id="export-summary")
        self.card = gr.Markdown(label="Model card", elem_id="export-card")

    def wire(self, app) -> None:
        self.study.input(self.select_study, [self.study, self.objective],
                         [self.objective, self.trial], api_name="export_study")
        self.build_btn.click(self.build, [self.study, self.mode, self.objective, self.trial,
                                          self.format, self.d_model, self.layers],
                             [self.download, self.summary, self.card], api_name="export_build",
                             concurrency_id="export")

    def _options(self, study, objective=None):
        """(metrics, objective, trial choices) of a study."""
        store = self.ctx.store()
        if not study or study not in views.study_names(store):
            return [], None, []
        meta = views.study_meta(store, study)
        rows = views.flat_trials(store, study)
        metrics = views.metric_columns(rows, meta["metric_names"])
        if objective not in metrics:
            objective = meta["metric_names"][0] if meta["metric_names"] else None
        done = [r for r in rows if r["state"] == "COMPLETE"]
        return metrics, objective, trial_choices(done or rows)

    def select_study(self, study, objective=None):
        metrics, objective, choices = self._options(study, objective)
        return (gr.Dropdown(choices=metrics, value=objective),
                gr.Dropdown(choices=choices, value=choices[0][1] if choices else None))

    def for_trial(self, study, trial):
        """Outputs that preset this tab for one trial (from the detail tab)."""
        metrics, objective, choices = self._options(study)
        store = self.ctx.store()
        return (gr.Dropdown(choices=views.study_names(store), value=study),
                gr.Radio(value="trial"), gr.Dropdown(choices=metrics, value=objective),
                gr.Dropdown(choices=trial_choices(views.flat_trials(store, study))
                            if study in views.study_names(store) else choices,
                            value=as_int(trial)))

    @property
    def preset_outputs(self) -> list:
        return [self.study, self.mode, self.objective, self.trial]

    def build(self, study, mode, objective, trial, fmt, d_model, layers):
        from hybridlab.export.bundle import build_bundle

        store = self.ctx.store()
        if not study:
            raise gr.Error("pick a study")
        number = as_int(trial)
        kwargs = {"best": objective} if mode == "best" else {"trial": number}
        if mode == "best" and not objective:
            raise gr.Error("pick the objective to choose the best trial by")
        if mode != "best" and number is None:
            raise gr.Error("pick a trial")
        if fmt == "hf":
            try:
                import transformers  # noqa: F401
            except ImportError:
                raise gr.Error("the Hugging Face format needs transformers installed") from None
        try:
            zip_path, result = build_bundle(store, study, self.ctx.scratch("exports"),
                                            fmt=fmt or "native", d_model=as_int(d_model),
                                            layers=as_int(layers), **kwargs)
        except SpecError as e:
            raise gr.Error("; ".join(p.message + (f" ({p.hint})" if p.hint else "")
                                     for p in e.problems)) from None
        files = "\n".join(f"- `{p.name}` ({p.stat().st_size:,} bytes)" for p in result.files)
        notes = "\n".join(f"- {n}" for n in result.notes)
        summary = (f"**{study} · trial {result.trial}** exported ({result.format}) → "
                   f"`{zip_path.name}`\n\n{files}" + (f"\n\nNotes:\n{notes}" if notes else ""))
        card_file = result.path / "README.md"
        card = card_file.read_text() if card_file.is_file() else \
            "```yaml\n" + (result.path / "spec.yaml").read_text() + "```"
        return str(zip_path), summary, card
