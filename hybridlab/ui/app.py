"""The web UI: ``build_app(db)`` assembles the tabs into one ``gr.Blocks``; ``launch`` serves it.

    from hybridlab.ui import build_app, launch
    demo = build_app("sqlite:///hybridlab.db")
    launch(demo, host="127.0.0.1", port=7860)          # or: hybridlab ui --db ...

The page only reads the database (``Store(url, readonly=True)``, short transactions) and
refreshes on a ``gr.Timer`` while a search writes; each refresh is skipped when the database
has not changed, and plots keep the user's zoom and hidden traces across refreshes (per
``uirevision``, restored by the page script in ``page_js``). Every event has an API name,
so ``gradio_client`` can drive everything the page does -- and so can anyone who reaches the
page: every path a caller names is confined to ``ctx.roots`` (``paths``), no spec's plugins are
imported, spec text is size-limited, and every failure reaches the caller as its message
(``errors``). ``enable_launch=False`` builds no Launch tab and no Launch endpoints.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import gradio as gr

from hybridlab.storage import views
from hybridlab.ui.common import study_choices
from hybridlab.ui.context import UIContext
from hybridlab.ui.errors import guard_app
from hybridlab.ui.tab_analysis import AnalysisTab
from hybridlab.ui.tab_compare import CompareTab
from hybridlab.ui.tab_compose import ComposeTab
from hybridlab.ui.tab_detail import DetailTab
from hybridlab.ui.tab_export import ExportTab
from hybridlab.ui.tab_launch import LaunchTab
from hybridlab.ui.page_js import PAGE_JS
from hybridlab.ui.tab_pareto import ParetoTab
from hybridlab.ui.tab_studies import StudiesTab
from hybridlab.ui.tab_trials import TrialsTab

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def build_app(db: str | None = None, *, refresh_s: float = 5.0, live: bool = True,
              work_dir=None, enable_launch: bool = True, base_dir=None) -> gr.Blocks:
    ctx = UIContext(db, work_dir=work_dir, enable_launch=enable_launch, base_dir=base_dir)
    with gr.Blocks(title="hybridlab", analytics_enabled=False) as demo:
        with gr.Row():
            gr.Markdown(f"## hybridlab · `{ctx.shown_url}`")
            live_box = gr.Checkbox(value=live, label=f"live update (every {refresh_s:g} s)",
                                   scale=0, min_width=220, elem_id="live-update")
        timer = gr.Timer(refresh_s, active=live)
        with gr.Tabs(selected="studies") as tabs:
            with gr.Tab("Studies", id="studies"):
                studies = StudiesTab(ctx)
            with gr.Tab("Pareto", id="pareto"):
                pareto = ParetoTab(ctx)
            with gr.Tab("Trials", id="trials"):
                trials = TrialsTab(ctx)
            with gr.Tab("Trial detail", id="detail"):
                detail = DetailTab(ctx)
            with gr.Tab("Compare", id="compare"):
                compare = CompareTab(ctx)
            with gr.Tab("Analysis", id="analysis") as analysis_tab:
                analysis = AnalysisTab(ctx)
            with gr.Tab("Compose", id="compose"):
                compose = ComposeTab(ctx)
            launch_tab = None
            if enable_launch:           # --no-launch: no tab and no endpoints, not a hidden tab
                with gr.Tab("Launch", id="launch"):
                    launch_tab = LaunchTab(ctx)
            with gr.Tab("Export", id="export"):
                export = ExportTab(ctx)

        def open_trial(study, number):
            return tuple(detail.show(study, number)) + (gr.Tabs(selected="detail"),)

        app = SimpleNamespace(ctx=ctx, tabs=tabs, timer=timer, studies=studies, pareto=pareto,
                              trials=trials, detail=detail, compare=compare, analysis=analysis,
                              compose=compose, launch=launch_tab, export=export,
                              open_trial=open_trial, open_outputs=detail.outputs + [tabs])
        for tab in (studies, pareto, trials, detail, compare, analysis, compose, launch_tab,
                    export):
            if tab is not None:
                tab.wire(app)

        live_box.input(lambda on: gr.Timer(active=bool(on)), [live_box], [timer],
                       api_name="set_live")
        detail.compare_btn.click(
            lambda keys, study, trial: tuple(compare.add(keys, study, trial))
            + (gr.Tabs(selected="compare"),),
            [compare.trials, detail.study, detail.trial], compare.outputs + [tabs],
            api_name="add_to_compare")
        detail.export_btn.click(
            lambda study, trial: tuple(export.for_trial(study, trial))
            + (gr.Tabs(selected="export"),),
            [detail.study, detail.trial], export.preset_outputs + [tabs],
            api_name="export_this_trial")

        load_outputs = (studies.outputs + pareto.select_outputs + trials.filter_inputs[:1]
                        + [trials.top_metric, trials.columns, trials.sort] + trials.table_outputs
                        + [detail.study, compare.trials, export.study, export.objective,
                           export.trial] + compose.outputs)

        def on_load():
            store = ctx.store()
            names = views.study_names(store)
            first = names[:1]
            studies_out = studies.refresh()
            pareto_out = pareto.select_studies(first, None, None, "study", "auto", "auto",
                                               "axes", True, False, False, "study", "common")
            trial_study = first[0] if first else None
            trials_out = trials.select_study(trial_study, None, False, 100, None, [])
            export_out = export.select_study(trial_study)
            return (tuple(studies_out) + tuple(pareto_out)
                    + (gr.Dropdown(choices=study_choices(names), value=trial_study),)
                    + tuple(trials_out)
                    + (gr.Dropdown(choices=study_choices(names), value=trial_study),
                       gr.Dropdown(choices=compare.choices()),
                       gr.Dropdown(choices=study_choices(names), value=trial_study))
                    + tuple(export_out)
                    + tuple(compose.initial))

        demo.load(on_load, None, load_outputs, api_name="load_page")
        # Optuna's plots cost a second or two: drawn when the tab is opened, not on page load
        analysis_tab.select(analysis.show, analysis.inputs, analysis.outputs,
                            api_name="analysis_open")
        demo.load(None, None, None, js=PAGE_JS, api_visibility="private")
    guard_app(demo)             # every failure reaches the page as its message
    demo.queue(default_concurrency_limit=4)
    demo.hybridlab = app        # for tests and embedding
    return demo


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860,
           auth: tuple[str, str] | None = None, prevent_thread_lock: bool = False,
           quiet: bool = False, **kwargs):
    """Serve the app (never shared publicly; localhost unless ``host`` says otherwise)."""
    return demo.launch(server_name=host, server_port=port, auth=auth, share=False,
                       prevent_thread_lock=prevent_thread_lock, quiet=quiet,
                       allowed_paths=[str(demo.hybridlab.ctx.work_dir)],
                       auth_message="hybridlab" if auth else None, **kwargs)
