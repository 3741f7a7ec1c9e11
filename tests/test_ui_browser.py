"""The web UI in a real browser: Debian's Chromium driven by Playwright (headless), against the
same running app and database as the gradio_client tests. Screenshots go to test-output/ui/.

Needs /usr/bin/chromium (``apt-get install -y chromium``); Playwright's own browser download is
not used."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from ui_fixtures import output_dir, server  # noqa: F401

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = "ui"

#: JS: the first cell of every data row of the studies table.
FIRST_CELLS = """() => [...document.querySelectorAll('#studies-table [role=grid] [role=row]')]
  .map(r => r.querySelector('[role=gridcell]')).filter(c => c)
  .map(c => c.innerText.trim()).filter(t => t)"""
#: JS: the number of trial points drawn on the Pareto plot (traces marked meta="points").
COUNT_POINTS = """() => {
  const gd = document.querySelector('#pareto-plot .js-plotly-plot');
  if (!gd || !gd.data) return -1;
  return gd.data.filter(t => t.meta === 'points').reduce((n, t) => n + t.x.length, 0);
}"""
#: JS: page coordinates of one front point, and which trial it is.
POINT_POSITION = """() => {
  const gd = document.querySelector('#pareto-plot .js-plotly-plot');
  const fl = gd._fullLayout, box = gd.getBoundingClientRect();
  const t = gd.data.find(t => t.meta === 'points' && t.name.endsWith('front'));
  const i = t.x.length - 1;
  return {x: box.left + fl._size.l + fl.xaxis.l2p(t.x[i]),
          y: box.top + fl._size.t + fl.yaxis.l2p(t.y[i]),
          study: t.customdata[i][0], trial: t.customdata[i][1]};
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    assert Path(CHROMIUM).exists(), \
        "browser tests need Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server["server_url"])
    pg.wait_for_selector("#studies-table", timeout=60_000)
    # the page-load event has filled every tab once the caption names the studies
    pg.locator("#studies-caption").get_by_text("studies").wait_for(timeout=60_000)
    pg.wait_for_timeout(500)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(pg, name: str) -> Path:
    path = output_dir(SHOTS) / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def open_tab(pg, name: str) -> None:
    pg.get_by_role("tab", name=name, exact=True).click()


def test_open_page_and_see_the_studies(page):
    page.wait_for_function(f"() => ({FIRST_CELLS})().length === 3", timeout=30_000)
    assert page.evaluate(FIRST_CELLS) == ["ui-a", "ui-b", "../../x"]
    assert "3" in page.locator("#studies-caption").inner_text()
    page.wait_for_selector("#studies-plot .js-plotly-plot", timeout=30_000)
    assert shot(page, "1-studies").stat().st_size > 10_000


def test_pareto_plot_has_one_point_per_finished_trial(page, server):  # noqa: F811
    from hybridlab.storage import Store
    open_tab(page, "Pareto")
    page.wait_for_function(f"() => ({COUNT_POINTS})() > 0",
                           timeout=30_000)
    expected = sum(1 for r in Store(server["url"], readonly=True).trials("ui-a")
                   if r["state"] == "COMPLETE" and r["feasible"] and r["reused_from"] is None)
    assert page.evaluate(COUNT_POINTS) == expected
    # drawn in the DOM as well: plotly's scatter points of the visible traces
    assert page.locator("#pareto-plot .scatterlayer .trace .points path").count() == expected
    shot(page, "2-pareto")


def test_zoom_survives_a_refresh(page):
    """``uirevision``: re-rendering the plot (here: hiding dominated trials) keeps the zoom."""
    open_tab(page, "Pareto")
    page.wait_for_function(f"() => ({COUNT_POINTS})() > 0", timeout=30_000)
    full = page.evaluate("() => document.querySelector('#pareto-plot .js-plotly-plot')"
                         "._fullLayout.xaxis.range")
    box = page.locator("#pareto-plot .nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + 5)      # drag-zoom with the mouse
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.98, box["y"] + box["height"] - 5, steps=10)
    page.mouse.up()
    page.wait_for_timeout(500)
    zoom = page.evaluate("() => document.querySelector('#pareto-plot .js-plotly-plot')"
                         "._fullLayout.xaxis.range")
    assert zoom != pytest.approx(full)
    before = page.evaluate(COUNT_POINTS)
    page.get_by_label("show dominated trials").uncheck()
    page.wait_for_function(f"() => ({COUNT_POINTS})() !== {before}", timeout=30_000)
    after = page.evaluate("() => document.querySelector('#pareto-plot .js-plotly-plot')"
                          "._fullLayout.xaxis.range")
    assert after == pytest.approx(zoom)
    shot(page, "2b-pareto-zoom-kept")


def test_click_a_point_opens_its_trial(page):
    open_tab(page, "Pareto")
    page.wait_for_function(f"() => ({COUNT_POINTS})() > 0",
                           timeout=30_000)
    page.wait_for_function("() => !!(document.querySelector('#pareto-plot .js-plotly-plot')"
                           " || {}).__hlBound", timeout=10_000)
    pos = page.evaluate(POINT_POSITION)
    page.mouse.move(pos["x"], pos["y"])
    page.wait_for_timeout(300)
    page.mouse.click(pos["x"], pos["y"])
    header = page.locator("#trial-header")
    header.get_by_text(f"{pos['study']} · trial {pos['trial']}").wait_for(timeout=30_000)
    assert page.get_by_role("tab", name="Trial detail", exact=True) \
        .get_attribute("aria-selected") == "true"
    page.wait_for_selector("#trial-strip .hl-cell", timeout=10_000)
    page.wait_for_selector("#trial-curves .js-plotly-plot", timeout=30_000)
    shot(page, "3-trial-detail")


def test_broken_spec_shows_the_error_with_its_line(page):
    open_tab(page, "Compose")
    page.locator("#compose-status .hl-ok").wait_for(timeout=30_000)
    editor = page.locator("#compose-editor .cm-content")
    editor.click()
    page.keyboard.press("Control+a")               # typing replaces the whole spec
    page.keyboard.insert_text("name: broken\n"
                              "model: {d_model: 64, vocab_size: 256}\n"
                              "blocks:\n"
                              "  M: {type: mamba2, d_state: -3}\n"
                              "pattern: \"(M M) x 2\"\n")
    problem = page.locator("#compose-status .hl-problem[data-line='4']")
    problem.wait_for(timeout=30_000)
    text = page.locator("#compose-status").inner_text()
    assert "line 4, col 30" in text and "blocks.M.d_state" in text and "must be > 0" in text
    assert page.locator("#compose-status .hl-problem").count() == 1
    shot(page, "4-compose-error")


def test_download_an_export_and_load_it(page, server, tmp_path):  # noqa: F811
    from hybridlab.export.native import load_model, load_trial_model
    from hybridlab.export.source import find_trial
    from hybridlab.storage import Store

    open_tab(page, "Export")
    assert "Build and download" in page.locator("#export-summary").inner_text()
    assert not page.locator("#export-download").is_visible()     # nothing to fetch yet
    with page.expect_download(timeout=120_000) as info:          # one button builds and saves
        page.get_by_role("button", name="Build and download (.zip)").click()
    download = info.value
    page.locator("#export-summary").get_by_text("exported").wait_for(timeout=60_000)
    zip_path = tmp_path / download.suggested_filename
    download.save_as(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "x")
    folder = next((tmp_path / "x").iterdir())
    model = load_model(folder)
    src = find_trial(Store(server["url"], readonly=True), "ui-a", best="quality")
    ids = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        assert torch.equal(model(ids), load_trial_model(src)(ids))
    assert folder.name == f"ui-a-trial-{src.number}"
    shot(page, "5-export")


def test_pareto_compares_two_studies(page, server):  # noqa: F811
    """Pick a second study: each study gets its own front (own colour), all points drawn."""
    from hybridlab.storage import Store
    store = Store(server["url"], readonly=True)
    open_tab(page, "Pareto")
    page.wait_for_function(f"() => ({COUNT_POINTS})() > 0", timeout=30_000)
    box = page.locator("#pareto-studies input").first
    box.click()
    page.get_by_role("option", name="ui-b", exact=True).click()
    page.locator("#pareto-caption").click()        # close the dropdown
    expected = sum(1 for study in ("ui-a", "ui-b") for r in store.trials(study)
                   if r["state"] == "COMPLETE" and r["feasible"] and r["reused_from"] is None)
    page.wait_for_function(f"() => ({COUNT_POINTS})() === {expected}", timeout=30_000)
    fronts = page.evaluate("() => document.querySelector('#pareto-plot .js-plotly-plot').data"
                           ".filter(t => t.meta === 'points' && t.name.endsWith('front'))"
                           ".map(t => [t.name, t.marker.color])")
    assert {name.split(" ")[0] for name, _ in fronts} == {"ui-a", "ui-b"}
    assert len({str(color) for _, color in fronts}) == 2          # one colour per study
    # cross-study hypervolume: one normalisation and reference, said on the plot
    page.wait_for_function("() => { const gd = document.querySelector('#pareto-hv "
                           ".js-plotly-plot'); return gd && gd.data.length === 2; }",
                           timeout=30_000)
    note = page.evaluate("() => document.querySelector('#pareto-hv .js-plotly-plot')"
                         ".layout.annotations.map(a => a.text).join(' ')").replace("<br>", " ")
    assert "One scale for ui-a, ui-b" in note and "reference point 1.1" in note
    assert "One scale for ui-a, ui-b" in page.locator("#pareto-hv").inner_text() \
        .replace("\n", " ")
    shot(page, "2c-pareto-two-studies")


def test_a_refused_path_shows_its_message_as_text(page, server):  # noqa: F811
    """A UserError reaches the browser as Gradio's error toast with the message exactly as
    written: markup in what the caller typed is shown, not rendered."""
    open_tab(page, "Launch")
    typed = "<b>bold</b>/../../etc/shadow.yaml"
    page.get_by_label("Search spec file").fill(typed)
    page.get_by_role("button", name="Load file").click()
    toast = page.locator("[data-testid='toast-body']").first
    toast.wait_for(timeout=30_000)
    text = toast.inner_text()
    assert f"cannot open {typed!r}" in text, text
    assert "this page opens only .yaml spec files inside" in text
    assert toast.locator("b").count() == 0                    # the caller's markup is text
    assert page.locator("#launch-editor .cm-content").inner_text().strip() == ""
    page.wait_for_timeout(600)                                 # its fade-in
    page.screenshot(path=str(output_dir(SHOTS) / "6-refused-path.png"))   # the toast is fixed


# -- issue 30: what a researcher expects ---------------------------------------------------------
def choose(pg, elem_id: str, option: str) -> None:
    """Pick ``option`` in the dropdown ``#elem_id``."""
    pg.locator(f"#{elem_id} input").first.click()
    pg.get_by_role("option", name=option, exact=True).click()


def test_block_type_as_colour_symbol_and_column(page, server):  # noqa: F811
    """The searched mixer type colours the Pareto points (one colour and legend entry per
    type) and is a column of the Trials table; the strip legend names it."""
    from hybridlab.storage import Store
    open_tab(page, "Pareto")
    page.wait_for_function(f"() => ({COUNT_POINTS})() > 0", timeout=30_000)
    choose(page, "pareto-color", "param:blocks.M.type")
    page.wait_for_function("() => document.querySelector('#pareto-plot .js-plotly-plot').data"
                           ".some(t => t.name.includes('blocks.M.type='))", timeout=30_000)
    names = page.evaluate("() => document.querySelector('#pareto-plot .js-plotly-plot').data"
                          ".filter(t => t.meta === 'points').map(t => [t.name, t.marker.color])")
    types = {r["params"]["blocks.M.type"] for r in Store(server["url"], readonly=True)
             .trials("ui-a") if r["state"] == "COMPLETE" and r["feasible"]
             and r["reused_from"] is None}
    shown = {name.split("blocks.M.type=")[1].split(" ")[0] for name, _ in names}
    assert shown == types
    by_type = {}
    for name, colour in names:
        by_type.setdefault(name.split("blocks.M.type=")[1].split(" ")[0], set()).add(colour)
    assert all(len(c) == 1 for c in by_type.values())          # one colour per type
    assert len({next(iter(c)) for c in by_type.values()}) == len(by_type)
    legend = page.evaluate("() => [...document.querySelectorAll('#pareto-plot .legendtext')]"
                           ".map(e => e.textContent)")
    assert any("blocks.M.type=" in t for t in legend)
    shot(page, "7-pareto-colour-by-block-type")
    open_tab(page, "Trials")
    headers = page.locator("#trials-table thead th, #trials-table [role=columnheader]")
    headers.first.wait_for(timeout=30_000)
    assert any("param:blocks.M.type" in t for t in headers.all_inner_texts())
    cells = page.locator("#trials-table").inner_text()
    assert any(t in cells for t in types)
    shot(page, "8-trials-block-type-column")


def test_curves_read_cleanly(page):
    """Per-task loss series, the mixed train/loss hidden, smoothing, chance lines, lr and the
    gradient norm on axes of their own."""
    open_tab(page, "Trial detail")
    assert "No trial open" in page.locator("#trial-header").inner_text()
    page.locator("#trial-header").wait_for()
    choose(page, "detail-study", "ui-a")
    page.get_by_role("button", name="Open trial").click()
    page.locator("#trial-header").get_by_text("ui-a · trial").wait_for(timeout=30_000)
    page.wait_for_function("() => { const gd = document.querySelector('#trial-curves "
                           ".js-plotly-plot'); return gd && gd.data.length > 4; }",
                           timeout=30_000)
    info = page.evaluate("""() => {
      const gd = document.querySelector('#trial-curves .js-plotly-plot');
      const byName = {};
      gd.data.forEach(t => { byName[t.name] = {visible: t.visible, yaxis: t.yaxis || 'y'}; });
      return {byName, shapes: (gd.layout.shapes || []).length,
              titles: gd._fullLayout.annotations.map(a => a.text)};
    }""")
    by_name = info["byName"]
    assert by_name["train/loss"]["visible"] == "legendonly"
    assert {"train/mqar/loss", "train/bytes_lm/loss"} <= set(by_name)
    assert "train/mqar/loss (raw)" in by_name                   # smoothed over the faint raw
    assert len({by_name[n]["yaxis"] for n in ("lr", "train/grad_norm", "train/mqar/loss",
                                              "eval/quality")}) == 4
    assert info["shapes"] == 2                                  # chance: mqar and bytes_lm
    assert any("chance" in t for t in info["titles"])
    page.locator("#trial-xaxis").get_by_text("tokens", exact=True).click()
    page.wait_for_function("() => document.querySelector('#trial-curves .js-plotly-plot')"
                           "._fullLayout.xaxis.title.text.startsWith('tokens')",
                           timeout=30_000)
    shot(page, "9-curves")


def test_optunas_analysis_plots_render(page):
    open_tab(page, "Analysis")
    for kind in ("importance", "parallel", "slice", "contour", "history"):
        page.wait_for_function(
            f"() => {{ const gd = document.querySelector('#analysis-{kind} .js-plotly-plot');"
            f" return gd && gd.data && gd.data.length > 0; }}", timeout=60_000)
    title = page.evaluate("() => document.querySelector('#analysis-importance "
                          ".js-plotly-plot').layout.title.text")
    assert title.startswith("parameter importance")
    shot(page, "10-analysis")


def test_the_editor_keeps_yaml_valid_as_you_type(page):
    """Typed key by key with Enter, a nested block then a top-level key: still valid YAML (the
    editor no longer carries the nested indentation into the next line)."""
    open_tab(page, "Compose")
    page.locator("#compose-status .hl-ok").wait_for(timeout=30_000)
    editor = page.locator("#compose-editor .cm-content")
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.type('name: typed\nmodel: {d_model: 64, vocab_size: 256}\nblocks:\n'
                       '  M: {type: mamba2, d_state: 16}\n  "*": {type: attention, n_heads: 4}\n'
                       'pattern: "(M M *) x 2"\n', delay=5)
    page.locator("#compose-status .hl-ok").get_by_text("valid: 6 layers").wait_for(
        timeout=30_000)
    summary = page.locator("#compose-summary")
    assert "FLOPs/tok@" in summary.inner_text()
    box = summary.bounding_box()
    assert box["width"] > 1000                              # full width: no column cut off
    shot(page, "11-compose-typed")


def test_every_tab_says_what_to_do_when_empty(browser, tmp_path):
    """A database with no searches yet: each tab says what to do."""
    from hybridlab.ui.app import build_app, launch
    demo = build_app(str(tmp_path / "empty.db"), live=False)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    try:
        pg.goto(url)
        pg.locator("#studies-caption").get_by_text("Nothing here yet").wait_for(timeout=60_000)
        expect = {"Pareto": "#pareto-caption", "Trials": "#trials-caption",
                  "Trial detail": "#trial-header", "Compare": "#compare-strips",
                  "Launch": "#launch-status", "Export": "#export-summary"}
        words = {"Pareto": "no studies yet", "Trials": "Launch tab",
                 "Trial detail": "No trial open", "Compare": "Nothing to compare yet",
                 "Launch": "no search launched", "Export": "Build and download"}
        for tab, selector in expect.items():
            open_tab(pg, tab)
            pg.locator(selector).get_by_text(words[tab], exact=False).first.wait_for(
                timeout=30_000)
            pg.screenshot(path=str(output_dir(SHOTS) / f"12-empty-{tab.replace(' ', '-')}.png"))
        open_tab(pg, "Analysis")
        pg.wait_for_function("() => { const gd = document.querySelector('#analysis-importance "
                             ".js-plotly-plot'); return gd && gd.layout.annotations && "
                             "gd.layout.annotations[0].text.includes('no studies yet'); }",
                             timeout=30_000)
    finally:
        context.close()
        demo.close()
