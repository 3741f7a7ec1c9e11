"""Compose: a YAML editor with live validation and a live summary.

Validation is the spec loader itself (``load_spec``, what ``hybridlab validate`` runs): every
problem with its line and column. The summary is ``composer.summary.summarize`` printed by the
same ``format_summary`` as ``hybridlab summary``, plus the pattern strip and per-layer bars."""
from __future__ import annotations

import gradio as gr

from hybridlab.composer.loader import load_spec
from hybridlab.composer.summary import summarize
from hybridlab.errors import Problem, SpecError, UserError
from hybridlab.formatting import fmt_value, format_summary
from hybridlab.ui import figures
from hybridlab.ui.common import DEFAULT_MODEL_SPEC, error_html, find_examples, problems_html
from hybridlab.ui.paths import check_text_size, quoted
from hybridlab.ui.strip import spec_layers, strip_html

DTYPES = ["bf16", "fp16", "fp32"]


#: Context lengths the summary takes at once, and the longest one.
MAX_CONTEXTS = 8
MAX_CONTEXT = 1 << 40


def check_spec_text(text: str, contexts: str = "4096", dtype: str = "bf16"):
    """(problems, spec or None, summary dict or None) for spec YAML text -- the CLI's code path,
    except that plugins are never imported (the web server runs no code from a spec)."""
    text = text if isinstance(text, str) else ""
    if not text.strip():
        return [Problem("the spec is empty", file="<editor>", line=1, col=1)], None, None
    check_text_size(text)
    try:
        spec = load_spec(text if text.endswith("\n") else text + "\n", source="<editor>",
                         allow_plugins=False)
    except SpecError as e:
        return list(e.problems), None, None
    ctxs, dtype = parse_contexts(contexts), dtype or "bf16"
    if ctxs is None:
        return [Problem(f"context lengths must be up to {MAX_CONTEXTS} whole numbers from 1 to "
                        f"{MAX_CONTEXT:,}, got {quoted(contexts)}", file="<contexts>")], \
            spec, None
    if dtype not in DTYPES:
        return [Problem(f"the state / KV dtype must be one of {', '.join(DTYPES)}, got "
                        f"{quoted(dtype)}", file="<dtype>")], spec, None
    return [], spec, summarize(spec, contexts=ctxs, dtype=dtype)


def parse_contexts(contexts) -> list[int] | None:
    """"4096, 32768" -> [4096, 32768]; None when it is not a short list of lengths."""
    text = str(contexts if contexts not in (None, "") else "4096")
    if len(text) > 200:
        return None
    try:
        ctxs = [int(c) for c in text.replace(",", " ").split()]
    except ValueError:
        return None
    if not ctxs or len(ctxs) > MAX_CONTEXTS or not all(1 <= c <= MAX_CONTEXT for c in ctxs):
        return None
    return ctxs


class ComposeTab:
    def __init__(self, ctx):
        self.ctx = ctx
        self.examples = find_examples(ctx, "model")
        # the default spec checked once when the server starts: the first check also warms up
        # the block classes (a second or two), which the first page load then does not pay
        self.initial = self.check(DEFAULT_MODEL_SPEC, "4096, 32768", "bf16")
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
                self.status = gr.HTML(self.initial[0], elem_id="compose-status")
                self.strip = gr.HTML(self.initial[1], elem_id="compose-strip")
        # full width: the table has a column per context length and must not be cut off
        self.summary = gr.Code(self.initial[2], language=None,
                               label="Summary (hybridlab summary)",
                               interactive=False, wrap_lines=False, elem_id="compose-summary")
        self.bars = gr.Plot(self.initial[3], label="Per layer", elem_id="compose-bars")

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
        path = self.examples.get(name) if isinstance(name, str) else None
        if path is None:
            raise UserError(f"no example {quoted(name)}; pick one of the list")
        return self.ctx.roots.read_spec(path)[1]

    def check(self, text, contexts="4096", dtype="bf16"):
        try:
            problems, spec, summary = check_spec_text(text, contexts, dtype)
        except UserError as e:          # too large: said in the status box, nothing drawn
            return error_html(str(e)), "", "", figures._empty("fix the spec first", "layers")
        if problems:
            strip = strip_html(spec_layers(spec), title=spec.pattern) if spec else ""
            return problems_html(problems), strip, "", figures._empty("fix the spec first",
                                                                       "layers")
        ok = (f"valid: {len(spec.layers)} layers, {fmt_value('params', summary['params_total'])} "
              f"parameters, decode state {fmt_value('state_bytes', summary['state_bytes'])}")
        return (problems_html([], ok), strip_html(spec_layers(spec), title=spec.pattern),
                format_summary(summary), figures.layer_bars_figure(summary))
