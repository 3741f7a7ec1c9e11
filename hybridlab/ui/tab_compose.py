"""Compose: a YAML editor with live validation and a live summary.

Validation is the spec loader itself (``load_spec``, what ``hybridlab validate`` runs): every
problem with its line and column. The summary is ``composer.summary.summarize`` printed by the
same ``format_summary`` as ``hybridlab summary``, plus the pattern strip and per-layer bars."""
from __future__ import annotations

import gradio as gr

from hybridlab.errors import Problem, SpecError
from hybridlab.formatting import format_summary
from hybridlab.ui import figures
from hybridlab.ui.common import DEFAULT_MODEL_SPEC, find_examples, problems_html
from hybridlab.ui.strip import spec_layers, strip_html

DTYPES = ["bf16", "fp16", "fp32"]


def check_spec_text(text: str, contexts: str = "4096", dtype: str = "bf16"):
    """(problems, summary dict or None) for spec YAML text -- the CLI's code path."""
    import hybridlab
    from hybridlab.composer.summary import summarize

    text = text or ""
    if not text.strip():
        return [Problem("the spec is empty", file="<editor>", line=1, col=1)], None, None
    try:
        spec = hybridlab.load_spec(text if text.endswith("\n") else text + "\n",
                                   source="<editor>")
    except SpecError as e:
        return list(e.problems), None, None
    try:
        ctxs = [int(c) for c in str(contexts or "4096").replace(",", " ").split()]
        if not ctxs or min(ctxs) < 1:
            raise ValueError
    except ValueError:
        return [Problem(f"context lengths must be whole numbers >= 1, got {contexts!r}",
                        file="<contexts>")], spec, None
    return [], spec, summarize(spec, contexts=ctxs, dtype=dtype or "bf16")


class ComposeTab:
    def __init__(self, ctx):
        self.ctx = ctx
        self.examples = find_examples(ctx.base_dir, "model")
        with gr.Row():
            self.example = gr.Dropdown(label="Start from an example", scale=2,
                                       choices=list(self.examples), value=None,
                                       allow_custom_value=True)
            self.contexts = gr.Textbox(value="4096, 32768", label="Context lengths (KV, FLOPs)",
                                       scale=2)
            self.dtype = gr.Dropdown(DTYPES, value="bf16", label="State / KV dtype", scale=1)
        with gr.Row():
            with gr.Column(scale=5):
                self.editor = gr.Code(value=DEFAULT_MODEL_SPEC, language="yaml",
                                      label="Model spec (YAML)", interactive=True, lines=22,
                                      elem_id="compose-editor")
            with gr.Column(scale=5):
                self.status = gr.HTML(elem_id="compose-status")
                self.strip = gr.HTML(elem_id="compose-strip")
                self.summary = gr.Code(language=None, label="Summary (hybridlab summary)",
                                       interactive=False, elem_id="compose-summary")
        self.bars = gr.Plot(label="Per layer", elem_id="compose-bars")

    @property
    def outputs(self) -> list:
        return [self.status, self.strip, self.summary, self.bars]

    def wire(self, app) -> None:
        gr.on([self.editor.change, self.contexts.submit, self.dtype.input], self.check,
              [self.editor, self.contexts, self.dtype], self.outputs, api_name="compose_check",
              trigger_mode="always_last", show_progress="hidden")
        self.example.input(self.load_example, [self.example], [self.editor],
                           api_name="compose_example")

    def load_example(self, name):
        path = self.examples.get(name)
        if path is None:
            raise gr.Error(f"no example {name!r}")
        return path.read_text()

    def check(self, text, contexts="4096", dtype="bf16"):
        problems, spec, summary = check_spec_text(text, contexts, dtype)
        if problems:
            strip = strip_html(spec_layers(spec), title=spec.pattern) if spec else ""
            return problems_html(problems), strip, "", figures._empty("fix the spec first",
                                                                       "layers")
        from hybridlab.composer.summary import human_bytes, human_count
        ok = (f"valid: {len(spec.layers)} layers, {human_count(summary['params_total'])} "
              f"parameters, decode state {human_bytes(summary['state_bytes'])}")
        return (problems_html([], ok), strip_html(spec_layers(spec), title=spec.pattern),
                format_summary(summary), figures.layer_bars_figure(summary))
