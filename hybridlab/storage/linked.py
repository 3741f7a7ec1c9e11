"""Linked studies: a study that re-measures the trials of another study (its *proxy*), as
``hybridlab scale`` does when it re-trains a search's best layouts larger and longer.

A linked study is an ordinary Optuna study in the same database (``hybridlab studies``, the UI
and ``optuna-dashboard`` read it like any other); what links it are study user attributes:

* ``hybridlab_proxy_study``: the name of the study it re-measures;
* ``hybridlab_link``: what kind of link (``"scale"``);
* ``hybridlab_link_settings``: the settings every trial of it was measured with (a JSON-able
  dict); a later run with other settings must use another study name, so no study mixes
  measurements of different kinds;

and, per trial, user attributes naming the proxy trial (``proxy_trial``) it re-measures.

    with StudyLock(store.url, name):
        study = open_linked_study(store, name, proxy="my-search", kind="scale", ...)
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from hybridlab.errors import StoreError

from .health import printable, translated
from .repository import Store

PROXY_ATTR = "hybridlab_proxy_study"
KIND_ATTR = "hybridlab_link"
SETTINGS_ATTR = "hybridlab_link_settings"


def _summaries(store: Store) -> dict:
    import optuna
    return {s.study_name: s for s in optuna.get_all_study_summaries(
        store.optuna_storage(), include_best_trial=False)}


def open_linked_study(store: Store, name: str, *, proxy: str, kind: str,
                      directions: Sequence[str], metric_names: Sequence[str],
                      settings: Mapping, attrs: Mapping | None = None):
    """Create the linked study ``name`` of study ``proxy``, or load it when it exists with the
    same proxy, kind, objectives and settings (a ``StoreError`` says what differs otherwise).
    ``attrs``: further study user attributes to set. Call it under ``StudyLock(url, name)``."""
    import optuna

    if store.readonly:
        raise PermissionError("open_linked_study needs a writable Store")
    with translated(store.url):
        known = _summaries(store)
        if proxy not in known:
            raise store.unknown_study(proxy)
        existing = known.get(name)
        if existing is not None:
            _check_same(existing, name, proxy, kind, list(directions), dict(settings))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(storage=store.optuna_storage(), study_name=name,
                                        directions=list(directions), load_if_exists=True)
            if list(study.metric_names or []) != list(metric_names):
                study.set_metric_names(list(metric_names))
        wanted = {PROXY_ATTR: proxy, KIND_ATTR: kind, SETTINGS_ATTR: dict(settings),
                  **dict(attrs or {})}
        current = study.user_attrs
        for key, value in wanted.items():
            if current.get(key) != value:
                study.set_user_attr(key, value)
        return study


def _check_same(summary, name: str, proxy: str, kind: str, directions: list[str],
                settings: dict) -> None:
    attrs = summary.user_attrs
    shown = printable(name)
    if attrs.get(PROXY_ATTR) != proxy or attrs.get(KIND_ATTR) != kind:
        what = (f"a {attrs.get(KIND_ATTR)} of study {printable(attrs.get(PROXY_ATTR))!r}"
                if attrs.get(PROXY_ATTR) else "not a linked study")
        raise StoreError(f"study {shown!r} already exists and is {what}; choose another name "
                         f"for the {kind} of {printable(proxy)!r} (--name)")
    old = attrs.get(SETTINGS_ATTR) or {}
    differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if differ or [d.name.lower() for d in summary.directions] != directions:
        before = ", ".join(f"{k}={old.get(k)!r}" for k in differ) or "other objectives"
        now = ", ".join(f"{k}={settings.get(k)!r}" for k in differ) or "these objectives"
        raise StoreError(f"study {shown!r} was measured with {before}; this run asks {now}. "
                         f"Resuming needs the same settings: repeat them, or give this run "
                         f"another study name (--name)")


def linked_studies(store: Store, proxy: str) -> list[dict]:
    """The studies linked to ``proxy``: ``[{"name", "kind", "settings"}]`` (read-only)."""
    if not store._has_optuna_tables():
        return []
    with translated(store.url):
        out = []
        for name, s in _summaries(store).items():
            if s.user_attrs.get(PROXY_ATTR) == proxy:
                out.append({"name": name, "kind": s.user_attrs.get(KIND_ATTR),
                            "settings": s.user_attrs.get(SETTINGS_ATTR) or {}})
        return sorted(out, key=lambda r: r["name"])


def proxy_of(store: Store, name: str) -> str | None:
    """The proxy study of linked study ``name`` (None for an ordinary study)."""
    return store.load_study(name).user_attrs.get(PROXY_ATTR)
