"""Launch: start a search from a search spec (editor or file), watch it, stop it. The search
runs in a background process (``hybridlab search``), never in the web server. While it runs a
one-second timer streams its log tail and its progress (finished trials, a retry counted once,
and each running trial's step, read from the database like everything else)."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from hybridlab.errors import SpecError, UserError
from hybridlab.formatting import shown_name
from hybridlab.storage import views
from hybridlab.ui import figures
from hybridlab.ui.common import as_int, error_html, find_examples, problems_html
from hybridlab.ui.launcher import validate_search_text
from hybridlab.ui.paths import check_text_size, quoted


NOTHING_LAUNCHED = ("<div class='hl-empty' style='color:#666'>No search launched from this page "
                    "yet: load a search spec file or pick an example above (search-quick.yaml "
                    "takes minutes on a CPU), then press <b>Start search</b>. Its log and "
                    "progress appear here as it runs.</div>")


class LaunchTab:
    def __init__(self, ctx):
        self.ctx = ctx
        self.examples = find_examples(ctx, "search")
        gr.Markdown("Searches started here run as separate `hybridlab search` processes "
                    "writing to this page's database. Anyone who can open this page can start "
                    "them: keep the server on localhost or use `--auth`.")
        with gr.Row():
            self.path = gr.Textbox(label="Search spec file", scale=4,
                                   placeholder="examples/search-quick.yaml")
            self.load_btn = gr.Button("Load file", scale=1)
            self.example = gr.Dropdown(label="…or an example", choices=list(self.examples),
                                       value=None, allow_custom_value=True, scale=2)
        self.editor = gr.Code(language="yaml", label="Search spec (YAML)", interactive=True,
                              lines=18, elem_id="launch-editor")
        self.check_out = gr.HTML(elem_id="launch-check")
        with gr.Row():
            self.trials = gr.Number(value=None, label="Trials (blank or 0: the spec's own)",
                                    precision=0, minimum=0, elem_id="launch-trials")
            self.workers = gr.Number(value=1, label="Worker processes", precision=0, minimum=1)
            self.device = gr.Dropdown(["auto", "cpu", "cuda"], value="auto", label="Device")
            self.start_btn = gr.Button("Start search", variant="primary")
            self.stop_btn = gr.Button("Stop", variant="stop")
        self.job = gr.Dropdown(label="Launched searches", choices=[], allow_custom_value=True)
        self.status = gr.HTML(NOTHING_LAUNCHED, elem_id="launch-status")
        self.progress = gr.Plot(figures.progress_figure([]), label="Progress",
                                elem_id="launch-progress")
        self.log = gr.Code(language=None, label="Log (tail)", interactive=False,
                           elem_id="launch-log")
        self.loaded = gr.State({"path": None, "text": None})
        # while a search started here runs, its log and progress refresh every second
        self.follow = gr.Timer(1.0, active=False)

    @property
    def status_outputs(self) -> list:
        return [self.job, self.status, self.progress, self.log]

    def wire(self, app) -> None:
        self.load_btn.click(self.load_file, [self.path], [self.editor, self.check_out,
                                                          self.loaded], api_name="launch_load")
        self.example.input(self.load_example, [self.example],
                           [self.path, self.editor, self.check_out, self.loaded],
                           api_name="launch_example")
        self.editor.change(self.check, [self.editor, self.loaded], [self.check_out],
                           api_name="launch_check", trigger_mode="always_last",
                           show_progress="hidden")
        self.start_btn.click(self.start, [self.editor, self.loaded, self.trials, self.workers,
                                          self.device], self.status_outputs + [self.follow],
                             api_name="launch_start", concurrency_id="launch")
        self.follow.tick(self.follow_job, [self.job], self.status_outputs + [self.follow],
                         api_name="launch_follow", show_progress="hidden")
        self.stop_btn.click(self.stop, [self.job], self.status_outputs, api_name="launch_stop",
                            concurrency_id="launch")
        self.job.input(self.show, [self.job], self.status_outputs, api_name="launch_status")
        app.timer.tick(self.show, [self.job], self.status_outputs, api_name="launch_tick",
                       show_progress="hidden")

    # -- handlers --------------------------------------------------------------------------------
    def _base_dir(self, loaded) -> Path:
        """Where a relative ``base:`` of the editor's text is read from: the loaded file's
        folder (it was confined when loaded), else the folder the UI was started in."""
        path = (loaded or {}).get("path")
        return Path(path).parent if path else self.ctx.base_dir

    def load_file(self, path):
        """A search spec file inside the roots into the editor (``PathRefused`` otherwise)."""
        p, text = self.ctx.roots.read_spec(path, relative_to=self.ctx.base_dir)
        loaded = {"path": str(p), "text": text}
        return text, self.check(text, loaded), loaded

    def load_example(self, name):
        p = self.examples.get(name) if isinstance(name, str) else None
        if p is None:
            raise UserError(f"no example {quoted(name)}; pick one of the list")
        text, check, loaded = self.load_file(str(p))
        return str(p), text, check, loaded

    def check(self, text, loaded=None):
        if not isinstance(text, str) or not text.strip():
            return "<div style='color:#888'>load a search spec or type one</div>"
        try:
            check_text_size(text, "the search spec")
            spec = validate_search_text(text, self._base_dir(loaded), self.ctx.roots)
        except SpecError as e:
            return problems_html(list(e.problems))
        except UserError as e:
            return error_html(str(e))
        return problems_html([], f"valid search spec: study {shown_name(spec.name)!r}, "
                                 f"{spec.trials} trials, {len(spec.space)} parameters, "
                                 "objectives " + ", ".join(f"{shown_name(o.metric)} "
                                                           f"({o.direction})"
                                                           for o in spec.objectives))

    def start(self, text, loaded, trials, workers, device):
        if not self.ctx.enable_launch:       # never wired then; kept as a second lock
            raise UserError("launching is switched off for this server (--no-launch)")
        loaded = loaded or {}
        text = text if isinstance(text, str) else ""
        same_file = bool(loaded.get("path")) and \
            (loaded.get("text") or "").rstrip() == text.rstrip()
        try:
            job = self.ctx.launcher.start(
                text, base_dir=self._base_dir(loaded),
                spec_path=loaded["path"] if same_file else None,
                trials=trials, workers=workers, device=device)
        except SpecError as e:
            return (gr.skip(), problems_html(list(e.problems)), gr.skip(), gr.skip(),
                    gr.skip())
        except UserError as e:          # too large, a bad setting, too many running
            return (gr.skip(), error_html(str(e)), gr.skip(), gr.skip(), gr.skip())
        return tuple(self.show(job.id)) + (gr.Timer(active=True),)

    def follow_job(self, job_id=None):
        """The live view of a launched search; the timer stops once no search runs."""
        out = self.show(job_id)
        return tuple(out) + (gr.Timer(active=bool(self.ctx.launcher.running())),)

    def stop(self, job_id):
        number = as_int(job_id)
        if number is None or number not in self.ctx.launcher.jobs:
            raise UserError("no such launched search")
        self.ctx.launcher.stop(number)
        return self.show(number)

    def show(self, job_id=None):
        launcher = self.ctx.launcher
        jobs = launcher.jobs
        choices = [(f"#{j.id} {shown_name(j.study)} ({j.state})", j.id) for j in jobs.values()]
        number = as_int(job_id)
        job = jobs.get(number) if number is not None else launcher.latest()
        if job is None:
            return (gr.Dropdown(choices=choices, value=None), NOTHING_LAUNCHED,
                    figures.progress_figure([]), "")
        store = self.ctx.store()
        prog = []
        for study in dict.fromkeys(j.study for j in jobs.values()):
            if study in views.study_names(store):
                prog.append(views.progress(store, study))
        rc = job.returncode
        colour = "#0b5cad" if rc is None else ("#1a7f37" if rc == 0 and not job.stop_requested
                                               else "#b42318")
        status = (f"<div class='hl-job' data-state='{html.escape(job.state)}'>"
                  f"<b>#{job.id}</b> study <code>{html.escape(shown_name(job.study))}</code> — "
                  f"<span style='color:{colour};font-weight:600'>{html.escape(job.state)}</span>"
                  f" · pid {job.proc.pid} · started {job.started}<br><span style='color:#555'>"
                  f"spec {html.escape(str(job.spec_file))}</span></div>")
        return (gr.Dropdown(choices=choices, value=job.id), status,
                figures.progress_figure(prog), job.log_tail())
