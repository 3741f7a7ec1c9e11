"""The hybridlab web UI (Gradio Blocks + plotly): browse studies, compare Pareto fronts, inspect
and compare trials, compose specs, launch searches and export the winners.

    from hybridlab.ui import build_app, launch
    launch(build_app("sqlite:///hybridlab.db"))          # or: hybridlab ui

Modules: ``app`` assembles the tabs (``tab_*``, one module per tab); ``figures`` draws the
plotly figures, ``strip`` the layer strips, ``tables`` builds the tables; ``launcher`` runs
searches in background processes. All data comes through ``hybridlab.storage`` (read-only).
Every caller is treated as hostile: ``paths`` confines every path a caller names to the folder
the UI was started in and the shipped examples, ``errors`` turns every failure into a message
for the page; no spec's plugins are ever imported.
"""
from __future__ import annotations


def build_app(db=None, **kwargs):
    from hybridlab.ui.app import build_app as _build
    return _build(db, **kwargs)


def launch(demo, **kwargs):
    from hybridlab.ui.app import launch as _launch
    return _launch(demo, **kwargs)


__all__ = ["build_app", "launch"]
