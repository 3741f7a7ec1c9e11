"""Export: a trial, or the best trial by an objective, as a downloadable zip of the export
folder (native, Hugging Face, or the layout scaled to another size) -- the same code as
``hybridlab export``. One button builds the zip and has the browser save it."""
from __future__ import annotations

import gradio as gr

from hybridlab.composer.pattern import MAX_LAYERS
from hybridlab.errors import UserError
from hybridlab.formatting import shown_name
from hybridlab.storage import views
from hybridlab.ui.common import as_int, study_choices, trial_choices
from hybridlab.ui.paths import quoted

MODES = [("best trial by an objective", "best"), ("a trial I pick", "trial")]
FORMATS = [("native (spec + safetensors + model card)", "native"),
           ("Hugging Face transformers folder", "hf"),
           ("layout only, scaled (no weights)", "layout")]
FORMAT_NAMES = tuple(value for _, value in FORMATS)
#: after a build: press the download button the build just filled (one click builds and saves)
DOWNLOAD_JS = """() => {
  const root = document.querySelector('#export-download');
  const el = root && (root.tagName === 'A' || root.tagName === 'BUTTON' ? root
                      : root.querySelector('a, button'));
  if (el) el.click();
}"""
#: The widest scaled layout the page exports (the layout's own checks apply below this).
MAX_D_MODEL = 1 << 16


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
            self.build_btn = gr.Button("Build and download (.zip)", variant="primary", scale=1,
                                       elem_id="export-build")
            # the zip of the latest build: the button above downloads it at once; this one
            # (shown once there is something to download) fetches it again
            self.download = gr.DownloadButton("Download again", value=None, visible=False,
                                              elem_id="export-download", scale=1)
        self.summary = gr.Markdown("Pick a study and which trial, then press **Build and "
                                   "download**: the export is built with the same code as "
                                   "`hybridlab export` and your browser saves the zip.",
                                   elem_id="export-summary")
        self.card = gr.Markdown(label="Model card", elem_id="export-card")

    def wire(self, app) -> None:
        self.study.input(self.select_study, [self.study, self.objective],
                         [self.objective, self.trial], api_name="export_study")
        self.build_btn.click(self.build, [self.study, self.mode, self.objective, self.trial,
                                          self.format, self.d_model, self.layers],
                             [self.download, self.summary, self.card], api_name="export_build",
                             concurrency_id="export").success(
            None, None, None, js=DOWNLOAD_JS, api_visibility="private")

    def _options(self, study, objective=None):
        """(metrics, objective, trial choices) of a study."""
        store = self.ctx.store()
        if not isinstance(study, str) or study not in views.study_names(store):
            return [], None, []
        meta = views.study_meta(store, study)
        rows = views.flat_trials(store, study)
        metrics = views.study_metric_columns([views.study_view(store, study)],
                                             meta["metric_names"])
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
        names = views.study_names(store)
        return (gr.Dropdown(choices=study_choices(names), value=study),
                gr.Radio(value="trial"), gr.Dropdown(choices=metrics, value=objective),
                gr.Dropdown(choices=trial_choices(views.flat_trials(store, study))
                            if isinstance(study, str) and study in names else choices,
                            value=as_int(trial)))

    @property
    def preset_outputs(self) -> list:
        return [self.study, self.mode, self.objective, self.trial]

    def build(self, study, mode, objective, trial, fmt, d_model, layers):
        from hybridlab.export.bundle import build_bundle

        store = self.ctx.store()
        if not isinstance(study, str) or not study:
            raise UserError("pick a study")
        if study not in views.study_names(store):
            raise UserError(f"no study {quoted(study)} in {self.ctx.shown_url}")
        mode, fmt = mode or "best", fmt or "native"
        if mode not in ("best", "trial") or fmt not in FORMAT_NAMES:
            raise UserError("pick which trial and a format from the lists")
        if objective is not None and not isinstance(objective, str):
            raise UserError("pick the objective from the list")
        number = as_int(trial)
        kwargs = {"best": objective} if mode == "best" else {"trial": number}
        if mode == "best" and not objective:
            raise UserError("pick the objective to choose the best trial by")
        if mode != "best" and number is None:
            raise UserError("pick a trial")
        if fmt == "hf":
            try:
                import transformers  # noqa: F401
            except ImportError:
                raise UserError("the Hugging Face format needs transformers installed") \
                    from None
        if fmt == "layout":
            d_model, layers = as_int(d_model), as_int(layers)
            if d_model is None or not 1 <= d_model <= MAX_D_MODEL:
                raise UserError(f"d_model must be a whole number from 1 to {MAX_D_MODEL:,}")
            if layers is None or not 1 <= layers <= MAX_LAYERS:
                raise UserError(f"mixer layers must be a whole number from 1 to {MAX_LAYERS:,}")
        # a SpecError, StoreError or ExportError reaches the page as its message (ui.errors)
        zip_path, result = build_bundle(store, study, self.ctx.scratch("exports"),
                                        fmt=fmt, d_model=as_int(d_model),
                                        layers=as_int(layers), **kwargs)
        files = "\n".join(f"- `{p.name}` ({p.stat().st_size:,} bytes)" for p in result.files)
        notes = "\n".join(f"- {n}" for n in result.notes)
        summary = (f"**{shown_name(study)} · trial {result.trial}** exported ({result.format}) → "
                   f"`{zip_path.name}`\n\n{files}" + (f"\n\nNotes:\n{notes}" if notes else ""))
        card_file = result.path / "README.md"
        card = card_file.read_text() if card_file.is_file() else \
            "```yaml\n" + (result.path / "spec.yaml").read_text() + "```"
        return gr.DownloadButton(value=str(zip_path), visible=True), summary, card
