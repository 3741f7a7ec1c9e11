"""The web UI on 10,000 trials (four studies of 2,500 and a linked ``@scale`` study, from
``ui_scale_data``): every tab's handler, called through the running server as the page calls
it, answers in under 3 s on the 2-core machine. The times are written to
``test-output/ui-scale/load_times.json``.

Two clocks: the CPU time of this process (the server runs in it, in threads) must stay under
the budget always; the wall time must too while the machine is not oversubscribed (1-minute
load average at most its number of cores). Other test runs on a loaded 2-core machine stretch
wall time two- or threefold without the page doing more work; the load is recorded beside the
times.

The first build of the database takes about ten minutes (Optuna's storage); it is kept in the
temporary folder for later sessions. Marked ``slow``."""
from __future__ import annotations

import functools
import json
import os
import time

import pytest

from ui_fixtures import REPO, output_dir
from ui_scale_data import SCALED, STUDIES, scale_database

pytestmark = pytest.mark.slow
gradio_client = pytest.importorskip("gradio_client")

BUDGET_S = 3.0
TIMES: dict[str, float] = {}
CPU: dict[str, float] = {}
LOAD: dict[str, float] = {}


@functools.lru_cache(maxsize=None)
def big_server() -> dict:
    import atexit

    from hybridlab.ui.app import build_app, launch
    url = scale_database()
    demo = build_app(url, live=False, base_dir=REPO)
    _, server_url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    atexit.register(demo.close)
    return {"url": url, "server_url": server_url, "demo": demo}


@pytest.fixture(scope="module")
def big():
    return big_server()


@pytest.fixture(scope="module")
def client(big):
    return gradio_client.Client(big["server_url"], verbose=False)


def timed(name: str, fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    TIMES[name] = round(time.perf_counter() - t0, 3)
    CPU[name] = round(time.process_time() - c0, 3)
    LOAD[name] = round(os.getloadavg()[0], 2)
    _write()
    return out


def _write() -> None:
    path = output_dir("ui-scale") / "load_times.json"
    path.write_text(json.dumps({"budget_s": BUDGET_S, "trials": 10_000, "cores": os.cpu_count(),
                                "seconds": TIMES, "cpu_seconds": CPU, "load_average": LOAD},
                               indent=2) + "\n")


def over_budget() -> dict:
    """Tabs over the budget: CPU time always; wall time where the machine was not
    oversubscribed while it was measured."""
    cores = os.cpu_count() or 1
    return {k: (TIMES[k], CPU.get(k), LOAD.get(k)) for k in TIMES
            if (CPU.get(k) or 0) >= BUDGET_S
            or (TIMES[k] >= BUDGET_S and LOAD.get(k, 0) <= cores)}


def plot(out) -> dict:
    return json.loads(out["plot"])


def test_database_holds_10000_trials(big):
    from hybridlab.storage import Store, views
    store = Store(big["url"], readonly=True)
    assert views.study_names(store) == list(STUDIES) + [SCALED]
    assert sum(len(views.flat_trials(store, s)) for s in STUDIES) == 10_000


def test_page_load_then_every_tab_under_budget(client):
    """The page's first load reads every study (cold); then each tab as a user opens it."""
    from hybridlab.storage import read_model
    read_model._cache.clear()                       # cold: nothing read yet in this process
    out = timed("page load (cold: every study read)", lambda: client.predict(
        api_name="/load_page"))
    assert len(out[0]["data"]) == len(STUDIES) + 1
    studies = timed("Studies", lambda: client.predict(api_name="/refresh_studies"))
    assert {r[0] for r in studies[0]["data"]} >= set(STUDIES)
    pareto = timed("Pareto: 4 studies, 10,000 trials", lambda: client.predict(
        list(STUDIES), "quality", "params_total", "param:blocks.M.type", "auto", "auto",
        "axes", True, False, False, "study", "common", api_name="/pareto_studies"))
    fig = plot(pareto[5])
    drawn = [t for t in fig["data"] if t.get("meta") == "points"]
    assert drawn and all(t["type"] == "scattergl" for t in drawn)       # WebGL at this size
    trials = timed("Trials: 2,500-trial study, one page", lambda: client.predict(
        "big-a", ["COMPLETE", "PRUNED"], False, 100, None, [], "", "number", False, 1, 100,
        api_name="/trials_study"))
    assert len(trials[3]["data"]) == 100 and "page 1 of" in trials[5]
    timed("Trials: filter mamba3, sort by quality", lambda: client.predict(
        "big-a", ["COMPLETE"], False, 100, "quality", [], "mamba3", "quality", True, 3, 100,
        api_name="/trials_filter"))
    detail = timed("Trial detail", lambda: client.predict("big-a", 2, 0.6, "step",
                                                          api_name="/open_trial"))
    assert "big-a · trial 2" in detail[2]
    timed("Compare: 4 trials", lambda: client.predict(
        ["big-a#1", "big-b#2", "big-c#3", "big-d#4"], "eval/quality", 0.6, "step",
        api_name="/compare"))
    analysis = timed("Analysis: Optuna's plots, 2,500-trial study", lambda: client.predict(
        "big-b", "quality", None, None, None, api_name="/analysis"))
    title = plot(analysis[4])["layout"]["title"]["text"]
    assert "parameter importance" in title and "trials)" in title
    timed("Compose", lambda: client.predict(
        "name: c\nmodel: {d_model: 64, vocab_size: 256}\nblocks:\n  M: {type: mamba2}\n"
        "pattern: MMMM\n", "4096", "bf16", api_name="/compose_check"))
    timed("Launch", lambda: client.predict(None, api_name="/launch_status"))
    timed("Export", lambda: client.predict("big-a", None, api_name="/export_study"))
    slow = over_budget()
    assert not slow, f"over {BUDGET_S} s (wall, cpu, load): {slow} (all: {TIMES}, {CPU})"


def test_proxy_vs_scaled_scatter_and_its_correlation(client, big):
    """The linked study's layouts: proxy quality against scaled quality, with the rank
    agreement search.agreement computes (the numbers hybridlab scale reports)."""
    from hybridlab.search.agreement import agreement
    from hybridlab.storage import Store, views

    out = client.predict(SCALED, api_name="/analysis_scale")
    fig = plot(out)
    rows = [r for r in views.flat_trials(Store(big["url"], readonly=True), SCALED)
            if r["state"] == "COMPLETE"]
    points = fig["data"][0]
    assert sorted(points["x"]) == pytest.approx(sorted(r["proxy_quality"] for r in rows))
    assert sorted(points["y"]) == pytest.approx(sorted(r["quality"] for r in rows))
    want = agreement([r["proxy_quality"] for r in rows], [r["quality"] for r in rows])
    title = fig["layout"]["title"]["text"]
    assert f"Spearman rho = {want.spearman:.3f}" in title
    assert f"Kendall tau = {want.kendall:.3f}" in title and f"over {len(rows)}" in title


@pytest.mark.browser
def test_pareto_of_10000_trials_in_chromium(big):
    """In a real browser: the Pareto tab with all four studies (about 9,000 points, WebGL)
    is drawn within the budget after the last study is picked."""
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from hybridlab.storage import Store, views
    from test_ui_browser import ARGS, CHROMIUM

    store = Store(big["url"], readonly=True)
    expected = sum(1 for s in STUDIES for r in views.flat_trials(store, s)
                   if r["state"] == "COMPLETE" and r["feasible"] and r["reused_from"] is None)
    assert Path(CHROMIUM).exists(), "browser tests need Debian's chromium"
    count = ("() => { const gd = document.querySelector('#pareto-plot .js-plotly-plot');"
             " return gd && gd._fullData ? gd._fullData.filter(t => t.meta === 'points')"
             ".reduce((n, t) => n + t._length, 0) : 0; }")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        page.goto(big["server_url"])
        page.locator("#studies-caption").get_by_text("studies").wait_for(timeout=60_000)
        TIMES["browser: page load"] = round(time.perf_counter() - t0, 3)
        LOAD["browser: page load"] = round(os.getloadavg()[0], 2)
        page.get_by_role("tab", name="Pareto", exact=True).click()
        page.wait_for_function(f"() => ({count})() > 0", timeout=60_000)
        box = page.locator("#pareto-studies input").first
        for name in STUDIES[1:]:
            box.click()
            page.get_by_role("option", name=name, exact=True).click()
            t0 = time.perf_counter()            # the last pick is the one timed
        page.wait_for_function(f"() => ({count})() === {expected}", timeout=60_000)
        TIMES["browser: Pareto of 4 studies drawn"] = round(time.perf_counter() - t0, 3)
        LOAD["browser: Pareto of 4 studies drawn"] = round(os.getloadavg()[0], 2)
        _write()
        assert page.locator("#pareto-plot canvas").count() > 0            # WebGL
        page.screenshot(path=str(output_dir("ui-scale") / "pareto-10000.png"), full_page=True)
        browser.close()
    assert not errors, errors
    slow = {k: v for k, v in over_budget().items() if k.startswith("browser")}
    assert not slow, f"over {BUDGET_S} s (wall, cpu, load): {slow}"
