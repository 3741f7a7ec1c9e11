"""The web UI driven through its API with gradio_client (Gradio's own test pattern): a running
app on a database filled by real tiny CPU searches. Every event of the page has an API name and
a test here; ``test_every_endpoint_has_a_test`` fails when a new event has none.

Select events (row clicks) need the browser's event data, which gradio_client cannot send; they
go through Gradio's queue with that data (``call_with_event``)."""
from __future__ import annotations

import json
import math
import re
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from ui_fixtures import MALICIOUS, call_with_event, server  # noqa: F401

from hybridlab.formatting import fmt_value

gradio_client = pytest.importorskip("gradio_client")
Client = gradio_client.Client

#: api name -> the test that calls it
ENDPOINT_TESTS = {
    "load_page": "test_load_page_fills_every_tab",
    "refresh_studies": "test_studies_table_counts_and_best",
    "studies_tick": "test_ticks_refresh_only_on_change",
    "studies_open": "test_select_study_row_opens_its_pareto_front",
    "pareto_studies": "test_pareto_two_studies_points_and_fronts",
    "pareto_render": "test_pareto_render_options",
    "pareto_tick": "test_ticks_refresh_only_on_change",
    "open_clicked_point": "test_clicked_point_opens_trial",
    "pareto_table_open": "test_select_pareto_row_opens_trial",
    "trials_study": "test_trials_table_and_csv",
    "trials_filter": "test_trials_filters",
    "trials_tick": "test_ticks_refresh_only_on_change",
    "trials_open": "test_select_trial_row_opens_trial",
    "detail_trials": "test_detail_trial_list",
    "open_trial": "test_open_trial_detail_everything",
    "add_to_compare": "test_compare_trials",
    "compare": "test_compare_trials",
    "compare_curve": "test_compare_trials",
    "compose_check": "test_compose_live_validation_and_summary",
    "compose_example": "test_compose_example",
    "launch_check": "test_launch_check",
    "launch_load": "test_launch_search_runs_in_background_process",
    "launch_example": "test_launch_check",
    "launch_start": "test_launch_search_runs_in_background_process",
    "launch_status": "test_launch_search_runs_in_background_process",
    "launch_tick": "test_launch_search_runs_in_background_process",
    "launch_stop": "test_launch_stop",
    "export_study": "test_export_build_native_identical_logits",
    "export_build": "test_export_build_native_identical_logits",
    "export_this_trial": "test_export_this_trial_and_other_formats",
    "set_live": "test_set_live",
    "detail_curves": "test_curves_smoothing_and_x_axis",
    "analysis": "test_analysis_plots",
    "analysis_scale": "test_analysis_plots",
    "analysis_open": "test_analysis_plots",
    "launch_follow": "test_launch_search_runs_in_background_process",
}


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def client(server):  # noqa: F811
    return Client(server["server_url"], verbose=False)


def plot(out) -> dict:
    """A gr.Plot output -> the plotly figure dict."""
    assert out["type"] == "plotly", out
    return json.loads(out["plot"])


def points(fig: dict) -> list:
    return [t for t in fig["data"] if t.get("meta") == "points"]


def frame(out) -> list[dict]:
    return [dict(zip(out["headers"], row)) for row in out["data"]]


def store(server):  # noqa: F811
    from hybridlab.storage import Store
    return Store(server["url"], readonly=True)


# -- coverage ------------------------------------------------------------------------------------
def test_every_endpoint_has_a_test(client):
    api = client.view_api(return_format="dict", print_info=False)
    names = {n.lstrip("/") for n in api["named_endpoints"]}
    assert names == set(ENDPOINT_TESTS), (
        f"endpoints without a test: {sorted(names - set(ENDPOINT_TESTS))}; "
        f"tests for missing endpoints: {sorted(set(ENDPOINT_TESTS) - names)}")
    module = sys.modules[__name__]
    for test in set(ENDPOINT_TESTS.values()):
        assert callable(getattr(module, test, None)), test


# -- studies -------------------------------------------------------------------------------------
def test_load_page_fills_every_tab(client, server):  # noqa: F811
    out = client.predict(api_name="/load_page")
    studies = frame(out[0])
    assert [r["study"] for r in studies] == ["ui-a", "ui-b", MALICIOUS]
    assert "3** studies" in out[2]
    # the Pareto tab starts on the first study with its first two objectives
    assert out[3]["value"] == ["ui-a"]
    assert out[4]["value"] == "quality" and out[5]["value"] == "state_bytes@4096"
    assert points(plot(out[8]))
    # compose starts with a valid spec and its summary
    assert "valid" in out[-4] and "params total" in out[-2]


def test_studies_table_counts_and_best(client, server):  # noqa: F811
    table, fig, caption = client.predict(api_name="/refresh_studies")
    rows = {r["study"]: r for r in frame(table)}
    summaries = {s["name"]: s for s in store(server).list_studies()}
    for name, s in summaries.items():
        r = rows[name]
        assert r["complete"] == s["counts"]["COMPLETE"]
        assert r["pruned"] == s["counts"]["PRUNED"]
        assert r["failed"] == s["counts"]["FAIL"]
        assert r["running"] == s["counts"]["RUNNING"]
        done = sum(s["counts"][k] for k in ("COMPLETE", "PRUNED", "FAIL"))
        assert r["done/target"] == f"{done}/{s['target_trials']}"
        best = s["best"]["quality"]
        assert f"(#{best['trial_number']})" in r["best per objective"]
        assert r["status"] == "done"
    assert rows["ui-a"]["pruned"] == 3
    bars = plot(fig)["data"]
    complete = next(b for b in bars if b["name"] == "complete")
    assert dict(zip(complete["y"], complete["x"]))["ui-a"] == 4


def test_select_study_row_opens_its_pareto_front(server):  # noqa: F811
    data = ["ui-b", None, None, "study", "auto", "auto", "axes", True, False, False, "study",
            "common"]
    out = call_with_event(server["server_url"], "studies_open", data,
                          {"index": [1, 0], "value": "ui-b", "row_value": ["ui-b", "done"],
                           "col_value": ["ui-b"], "selected": True})
    assert out[0]["value"] == ["ui-b"]
    fig = json.loads(out[5]["plot"])
    assert {p[0] for t in points(fig) for p in t["customdata"]} == {"ui-b"}
    assert out[-1]["selected"] == "pareto"


# -- Pareto --------------------------------------------------------------------------------------
def _expected(server, study, x, y, dirs):  # noqa: F811
    from hybridlab.storage import views
    rows = [r for r in views.flat_trials(store(server), study)
            if r["state"] == "COMPLETE" and r["feasible"] and r.get(x) is not None
            and r.get(y) is not None and r["reused_from"] is None]   # a reuse is its original
    front = {rows[i]["number"] for i in
             views.front_indices([(r[x], r[y]) for r in rows], dirs)}
    return {r["number"] for r in rows}, front


def test_pareto_two_studies_points_and_fronts(client, server):  # noqa: F811
    out = client.predict(["ui-a", "ui-b"], "quality", "params_total", "study", "auto", "auto",
                         "axes", True, False, False, "study", "common",
                         api_name="/pareto_studies")
    x, y = out[1]["value"], out[2]["value"]
    assert (x, y) == ("quality", "params_total")
    fig = plot(out[5])
    traces = points(fig)
    for study, colour in (("ui-a", None), ("ui-b", None)):
        everything, front = _expected(server, study, x, y, ("maximize", "minimize"))
        mine = [t for t in traces if t["customdata"][0][0] == study]
        shown = {p[1] for t in mine for p in t["customdata"]}
        assert shown == everything
        front_trace = next(t for t in mine if t["name"].endswith("front"))
        assert {p[1] for p in front_trace["customdata"]} == front
        # hover carries the layout pattern
        assert all(p[2] and p[2] != "?" for p in front_trace["customdata"])
        assert "pattern" in front_trace["hovertemplate"]
    # each study its own colour; the fronts are joined by lines
    colours = {t["marker"]["color"] for t in traces if t["name"].endswith("front")}
    assert len(colours) == 2
    assert sum(1 for t in fig["data"] if t.get("meta") == "front-line") >= 1
    assert fig["layout"]["uirevision"]
    hv = plot(out[6])
    assert {t["name"] for t in hv["data"]} == {"ui-a", "ui-b"}
    # one scale for both studies, stated on the plot
    note = " ".join(a["text"] for a in hv["layout"]["annotations"]).replace("<br>", " ")
    assert "One scale for ui-a, ui-b" in note and "reference point 1.1" in note
    table = frame(out[7])
    assert {(r["study"], int(r["trial"])) for r in table} == \
        {(t["customdata"][i][0], t["customdata"][i][1]) for t in traces
         if t["name"].endswith("front") for i in range(len(t["customdata"]))}


def test_pareto_render_options(client, server):  # noqa: F811
    # colour by a metric, dominated hidden, front over all objectives, log axes
    plot_out, hv, table, caption = client.predict(
        ["ui-a"], "quality", "state_bytes@4096", "params_total", "auto", "auto", "objectives",
        False, False, True, "study", "common", api_name="/pareto_render")
    fig = plot(plot_out)
    traces = points(fig)
    assert all(t["name"].endswith("front") for t in traces)
    expected = {r["number"] for r in store(server).pareto("ui-a")}
    assert {p[1] for t in traces for p in t["customdata"]} == expected
    assert traces[0]["marker"]["color"]                              # coloured by a metric
    assert not isinstance(traces[0]["marker"]["color"], str)
    assert traces[0]["marker"]["colorbar"]["title"]["text"] == "params_total"
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert "all objectives" in caption
    # a changed direction changes the front
    _, _, table2, caption2 = client.predict(
        ["ui-a"], "quality", "state_bytes@4096", "study", "minimize", "maximize", "axes", True,
        False, False, "study", "common", api_name="/pareto_render")
    everything, front = _expected(server, "ui-a", "quality", "state_bytes@4096",
                                  ("minimize", "maximize"))
    assert {int(r["trial"]) for r in frame(table2)} == front
    assert "x minimize, y maximize" in caption2


def test_ticks_refresh_only_on_change(server):  # noqa: F811
    """The change token lives in session state: the first tick of a session renders, the next
    ones are skipped (``gr.skip()``) while the database is unchanged."""
    skipped = {"__type__": "update"}
    c = Client(server["server_url"], verbose=False)
    inputs = (["ui-a"], "quality", "params_total", "study", "auto", "auto", "axes", True, False,
              False, "study", "common")
    out = c.predict(*inputs, api_name="/pareto_tick")
    assert points(plot(out[0]))
    assert c.predict(*inputs, api_name="/pareto_tick")[0] == skipped
    out = c.predict(api_name="/studies_tick")
    assert frame(out[0])
    assert c.predict(api_name="/studies_tick")[0] == skipped
    trial_inputs = ("ui-a", ["COMPLETE"], False, 100, "quality", [], "", "number", False, 1,
                    100)
    out = c.predict(*trial_inputs, api_name="/trials_tick")
    assert {r["state"] for r in frame(out[0])} == {"COMPLETE"}
    assert c.predict(*trial_inputs, api_name="/trials_tick")[0] == skipped
    # a new session renders again
    fresh = Client(server["server_url"], verbose=False)
    assert frame(fresh.predict(api_name="/studies_tick")[0])


def _detail_number(header_html: str) -> tuple[str, int]:
    m = re.search(r">([^<>]+) · trial (\d+)</span>", header_html)
    assert m, header_html
    return m.group(1), int(m.group(2))


def test_clicked_point_opens_trial(client):
    out = client.predict(json.dumps({"study": "ui-a", "trial": 5}),
                         api_name="/open_clicked_point")
    assert _detail_number(out[2]) == ("ui-a", 5)
    with pytest.raises(Exception, match="not a plot point"):
        client.predict("garbage", api_name="/open_clicked_point")


def test_select_pareto_row_opens_trial(server):  # noqa: F811
    out = call_with_event(server["server_url"], "pareto_table_open", [],
                          {"index": [0, 1], "value": 3, "row_value": ["ui-b", 3, "M-"],
                           "col_value": [3], "selected": True})
    assert _detail_number(out[2]) == ("ui-b", 3)
    assert out[-1]["selected"] == "detail"


# -- trials --------------------------------------------------------------------------------------
EVERY_STATE = ["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]


def _csv(path) -> list[dict]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_trials_table_and_csv(client, server):  # noqa: F811
    out = client.predict("ui-a", EVERY_STATE, False, 100, None,
                         ["state", "pattern", "quality", "param:blocks.M.type",
                          "cost/params_total", "score/bytes_lm", "failure_reason"],
                         "", "number", False, 1, 100, api_name="/trials_study")
    top_metric, columns, sort, table, csv_path, caption, page = out
    assert top_metric["value"] == "quality"
    choices = [c[1] for c in columns["choices"]]
    # every parameter is a column, the categorical block type included
    assert {"score/bytes_lm", "param:blocks.M.type", "param:blocks.M.d_state",
            "param:layout.layers"} <= set(choices)
    rows = frame(table)
    assert len(rows) == 7 and "7** of 7" in caption and page == 1
    assert list(table["headers"][:4]) == ["number", "state", "pattern", "quality ↑"]
    types = {r["param:blocks.M.type"] for r in rows}
    assert types and types <= {"mamba1", "mamba2"}
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert len(pruned) == 3 and all("infeasible" in r["failure_reason"] for r in pruned)
    # cells in the one number style, the CSV exact
    exact = {int(r["number"]): r for r in _csv(csv_path)}
    assert [int(r["number"]) for r in rows] == sorted(exact)
    want = {r["number"]: r for r in store(server).trials("ui-a")}
    for r in rows:
        n = int(r["number"])
        total = want[n]["metrics"]["cost/params_total"]
        assert float(exact[n]["cost/params_total"]) == total
        assert r["cost/params_total"] == fmt_value("params_total", total)
        assert exact[n]["param:blocks.M.type"] == want[n]["params"]["blocks.M.type"]
        if want[n]["values"]:
            assert float(exact[n]["quality"]) == want[n]["values"]["quality"]
    assert exact[int(rows[0]["number"])]["pattern"] == rows[0]["pattern"]


def test_trials_filters(client, server):  # noqa: F811
    args = ("", "number", False, 1, 100)
    table, _, caption, _ = client.predict("ui-a", ["PRUNED"], False, 100, "quality", [], *args,
                                          api_name="/trials_filter")
    assert {r["state"] for r in frame(table)} == {"PRUNED"} and len(frame(table)) == 3
    table, _, _, _ = client.predict("ui-a", EVERY_STATE, True, 100, "quality", [], *args,
                                    api_name="/trials_filter")
    front = {r["number"] for r in store(server).pareto("ui-a")}
    assert {int(r["number"]) for r in frame(table)} == front
    table, csv_path, caption, _ = client.predict("ui-a", EVERY_STATE, False, 50, "quality", [],
                                                 *args, api_name="/trials_filter")
    done = sorted((r for r in store(server).trials("ui-a", states=["COMPLETE"])),
                  key=lambda r: -r["values"]["quality"])
    k = math.ceil(len(done) * 0.5)
    got = _csv(csv_path)
    assert len(frame(table)) == len(got) == k
    assert min(float(r["quality"]) for r in got) == done[k - 1]["values"]["quality"]
    assert "top 50% by quality (maximize)" in caption
    # a cost metric is minimised
    table, csv_path, _, _ = client.predict("ui-a", EVERY_STATE, False, 1, "cost/params_total",
                                           ["cost/params_total"], *args,
                                           api_name="/trials_filter")
    cheapest = min(r["metrics"]["cost/params_total"] for r in store(server).trials("ui-a")
                   if "cost/params_total" in r["metrics"])
    got = _csv(csv_path)
    assert got and all(float(r["cost/params_total"]) == cheapest for r in got)


def test_trials_sort_page_and_text_filter(client, server):  # noqa: F811
    """Sorting, paging and the text filter run on the server, over every page."""
    want = sorted((r for r in store(server).trials("ui-a") if r["values"]),
                  key=lambda r: (-r["values"]["quality"], r["number"]))
    table, csv_path, caption, page = client.predict(
        "ui-a", ["COMPLETE"], False, 100, "quality", ["quality"], "", "quality", True, 1, 50,
        api_name="/trials_filter")
    assert [int(r["number"]) for r in frame(table)] == [r["number"] for r in want]
    assert "sorted by quality (descending)" in caption and "page 1 of 1" in caption
    mamba1 = {r["number"] for r in store(server).trials("ui-a")
              if r["params"]["blocks.M.type"] == "mamba1"}
    table, _, caption, _ = client.predict(
        "ui-a", EVERY_STATE, False, 100, "quality", ["state", "param:blocks.M.type"],
        "MAMBA1", "number", False, 1, 50, api_name="/trials_filter")
    assert {int(r["number"]) for r in frame(table)} == mamba1
    assert "matching 'MAMBA1'" in caption
    # a page past the end is the last page
    _, _, caption, page = client.predict("ui-a", EVERY_STATE, False, 100, "quality", [], "",
                                         "number", False, 99, 50, api_name="/trials_filter")
    assert page == 1 and "page 1 of 1" in caption


def test_select_trial_row_opens_trial(server):  # noqa: F811
    out = call_with_event(server["server_url"], "trials_open", ["ui-a"],
                          {"index": [2, 0], "value": 2, "row_value": [2, "PRUNED", "M-*-M-"],
                           "col_value": [2], "selected": True})
    assert _detail_number(out[2]) == ("ui-a", 2)
    assert "infeasible" in out[3]["value"]


# -- trial detail --------------------------------------------------------------------------------
def test_detail_trial_list(client):
    out = client.predict("ui-b", api_name="/detail_trials")
    assert [c[1] for c in out["choices"]] == [0, 1, 2, 3]
    assert out["value"] == 3


def test_open_trial_detail_everything(client, server):  # noqa: F811
    import hybridlab
    study_dd, trial_dd, header, failure, strip, curves, scores, metrics, spec = client.predict(
        "ui-a", 5, 0.6, "step", api_name="/open_trial")
    d = store(server).trial_detail("ui-a", 5)
    assert trial_dd["value"] == 5 and "complete" in header and d["pattern"] in header
    assert failure["visible"] is False
    # the strip: one cell per layer, coloured by block type, with a legend
    model_spec = hybridlab.load_spec(spec)
    cells = re.findall(r"class='hl-cell' data-type='([a-z_0-9]+)'", strip)
    assert cells == [layer.type for layer in model_spec.layers]
    # the legend names the block type behind each symbol
    assert "hl-legend" in strip and "<code>*</code> = attention &times;1" in strip
    m_type = next(layer.type for layer in model_spec.layers if layer.name == "M")
    assert f"<code>M</code> = {m_type} &times;" in strip
    assert spec.strip() == d["spec_yaml"].strip()
    names = {t["name"] for t in plot(curves)["data"] if not t["name"].endswith("(raw)")}
    assert names == set(d["curves"])
    bars = plot(scores)["data"][0]
    assert dict(zip(bars["x"], bars["y"])) == pytest.approx(d["scores"])
    table = frame(metrics)
    assert {(r["group"], r["name"]) for r in table} >= {("objective", "quality"),
                                                        ("score", "bytes_lm"),
                                                        ("cost", "params_total")}
    # an infeasible trial shows why
    out = client.predict("ui-a", 1, 0.6, "step", api_name="/open_trial")
    assert out[3]["visible"] is True and "params_total" in out[3]["value"]
    with pytest.raises(Exception, match="no trial 99"):
        client.predict("ui-a", 99, 0.6, "step", api_name="/open_trial")


def test_curves_smoothing_and_x_axis(client, server):  # noqa: F811
    """W&B-style curves: per-task losses as their own series, the round-robin train/loss only
    in the legend, EMA smoothing over faint raw lines, tokens on x, lr and the gradient norm on
    axes of their own, chance levels as dashed lines."""
    from hybridlab.search.tasks import get_task
    from hybridlab.ui.curves import ema

    d = store(server).trial_detail("ui-a", 5)
    fig = plot(client.predict("ui-a", 5, 0.9, "tokens", api_name="/detail_curves"))
    by_name = {t["name"]: t for t in fig["data"]}
    assert {"train/bytes_lm/loss", "train/mqar/loss", "lr", "train/grad_norm",
            "eval/quality"} <= set(by_name)
    assert by_name["train/loss"]["visible"] == "legendonly"
    raw = d["curves"]["train/mqar/loss"]
    assert by_name["train/mqar/loss (raw)"]["y"] == pytest.approx([v for _, v in raw])
    assert by_name["train/mqar/loss"]["y"] == pytest.approx(ema([v for _, v in raw], 0.9))
    per_step = d["metrics"]["train/train_tokens"] / d["metrics"]["train/train_steps"]
    assert by_name["train/mqar/loss"]["x"] == pytest.approx([s * per_step for s, _ in raw])
    titles = {fig["layout"][k]["title"]["text"] for k in fig["layout"]
              if k.startswith("xaxis") and fig["layout"][k].get("title")}
    assert titles == {"tokens (step × mean tokens per step)"}
    axes = {name: by_name[name].get("yaxis", "y") for name in ("lr", "train/grad_norm",
                                                                "train/mqar/loss", "eval/quality")}
    assert len(set(axes.values())) == 4                 # each kind on its own axis
    mqar = get_task("mqar", vocab_size=64, seq_len=32, kv_pairs=4, test_examples=32)
    chance = sorted(sh["y0"] for sh in fig["layout"]["shapes"])
    assert chance == pytest.approx(sorted([0.0, mqar.chance]))    # bytes_lm's chance is 0
    # evaluation series are not smoothed; smoothing 0 draws no raw copies
    assert by_name["eval/quality"]["y"] == pytest.approx([v for _, v in
                                                          d["curves"]["eval/quality"]])
    flat = plot(client.predict("ui-a", 5, 0, "step", api_name="/detail_curves"))
    assert not [t for t in flat["data"] if t["name"].endswith("(raw)")]


def test_analysis_plots(client, server):  # noqa: F811
    """Optuna's own plots (optuna.visualization) for one study and objective."""
    out = client.predict("ui-a", "quality", None, None, None, api_name="/analysis")
    study, objective, cx, cy = out[:4]
    assert study["value"] == "ui-a" and objective["value"] == "quality"
    assert {cx["value"], cy["value"]} <= {"blocks.M.type", "blocks.M.d_state",
                                          'layout.mix."*"', "layout.layers"}
    importance, parallel, slice_, contour, history = (plot(o) for o in out[4:9])
    usable = [r for r in store(server).trials("ui-a", states=["COMPLETE"]) if r["feasible"]
              and r["reused_from"] is None]
    assert f"({len(usable)} trials)" in importance["layout"]["title"]["text"]
    assert set(importance["data"][0]["y"]) <= {"blocks.M.type", "blocks.M.d_state",
                                               'layout.mix."*"', "layout.layers"}
    assert len(parallel["data"]) >= len(usable)          # a line per trial (Optuna 5)
    assert len(slice_["data"]) >= 2 and contour["data"] and history["data"]
    hist_y = [y for t in history["data"] for y in (t.get("y") or []) if y is not None]
    assert max(hist_y) == pytest.approx(max(r["values"]["quality"] for r in usable))
    # opening the tab draws the first study's plots
    opened = client.predict(None, None, None, None, None, api_name="/analysis_open")
    assert opened[0]["value"] == "ui-a" and plot(opened[4])["data"]
    # no study made by hybridlab scale in this database: the section says how to get one
    scaled = plot(out[10])
    assert "hybridlab scale" in scaled["layout"]["annotations"][0]["text"]
    assert plot(client.predict(None, api_name="/analysis_scale"))["layout"]["annotations"]


# -- compare -------------------------------------------------------------------------------------
def test_compare_trials(client, server):  # noqa: F811
    out = client.predict(["ui-a#0"], "ui-a", 5, api_name="/add_to_compare")
    trials_dd, strips, table, curve_dd, fig = out[:5]
    assert trials_dd["value"] == ["ui-a#0", "ui-a#5"]
    assert strips.count("class='hl-strip'") == 2
    assert frame(table)[0].keys() >= {"metric", "ui-a #0", "ui-a #5"}
    assert curve_dd["value"] == "eval/quality"
    assert {t["name"] for t in plot(fig)["data"]} == {"ui-a #0", "ui-a #5"}
    out = client.predict(["ui-a#0", "ui-b#1", "../../x#0"], "train/loss", 0.0, "step",
                         api_name="/compare")
    assert out[0]["value"] == ["ui-a#0", "ui-b#1", "../../x#0"]
    assert out[3]["value"] == "train/loss"
    rows = {r["metric"]: r for r in frame(out[2])}
    assert rows["pattern"]["ui-b #1"] == store(server).trial_detail("ui-b", 1)["pattern"]
    # every parameter is a row (a parameter one study does not sample stays empty)
    b1 = store(server).trial_detail("ui-b", 1)
    assert rows["param:blocks.M.type"]["ui-b #1"] == b1["params"]["blocks.M.type"]
    assert rows["param:blocks.M.type"]["../../x #0"] == ""
    assert rows["params_total"]["ui-b #1"] == fmt_value("params_total",
                                                       b1["values"]["params_total"])
    fig = plot(client.predict(["ui-a#0", "ui-b#1"], "eval/mqar/accuracy", 0.0, "step",
                              api_name="/compare_curve"))
    assert {t["name"] for t in fig["data"]} == {"ui-a #0", "ui-b #1"}
    assert fig["layout"]["yaxis"]["title"]["text"] == "eval/mqar/accuracy"


# -- compose -------------------------------------------------------------------------------------
GOOD = """name: c
model: {d_model: 64, vocab_size: 256}
blocks:
  M: {type: mamba2, d_state: 16, headdim: 16}
  "*": {type: attention, n_heads: 4}
pattern: "(M M *) x 2"
"""
BROKEN = """name: c
model: {d_model: 64, vocab_size: 256}
blocks:
  M: {type: mamba2, d_state: -1, headdim: 16}
  "*": {type: attention, n_heads: 5}
pattern: "(M M *) x 2"
"""


def test_compose_live_validation_and_summary(client, tmp_path, capsys):
    import hybridlab
    from hybridlab.cli.main import main
    from hybridlab.composer.summary import summarize
    from hybridlab.formatting import format_summary

    status, strip, summary, bars = client.predict(GOOD, "4096, 32768", "bf16",
                                                  api_name="/compose_check")
    assert "valid: 6 layers" in status
    expected = format_summary(summarize(hybridlab.load_spec(GOOD), contexts=[4096, 32768]))
    assert summary == expected                        # the same code as `hybridlab summary`
    assert strip.count("class='hl-cell'") == 6
    assert len(plot(bars)["data"]) == 3
    # errors: the same problems, lines and columns as `hybridlab validate`
    status, strip, summary, _ = client.predict(BROKEN, "4096", "bf16", api_name="/compose_check")
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    capsys.readouterr()
    assert main(["validate", str(path)]) == 2
    cli = re.findall(r":(\d+):(\d+): ", capsys.readouterr().err)
    ui = re.findall(r"<b>line (\d+), col (\d+)</b>", status)
    assert ui and ui == cli
    assert "d_state" in status and "n_heads" in status and summary == ""
    status, *_ = client.predict(GOOD, "0", "bf16", api_name="/compose_check")
    assert "context lengths" in status


def test_compose_example(client):
    from hybridlab.ui.common import example_dirs
    text = client.predict("hybrid-small.yaml", api_name="/compose_example")
    files = [d / "hybrid-small.yaml" for d in example_dirs(Path.cwd())]
    assert text.strip() == next(f for f in files if f.exists()).read_text().strip()


# -- launch --------------------------------------------------------------------------------------
TINY_SEARCH = {
    "name": "launched",
    "base": "base.yaml",
    "space": {"blocks.M.d_state": {"choice": [2, 4]}},
    "tasks": [{"name": "parity", "train_max_len": 8, "test_min_len": 8, "test_max_len": 10,
               "test_examples": 16}],
    "train": {"steps": 6, "batch_size": 4, "eval_points": 1, "prune_at_frac": None},
    "cost": {"prefill_len": 16, "decode_steps": 2, "decode_batch": 1, "repeats": 1},
    "objectives": [{"metric": "quality", "direction": "maximize"},
                   {"metric": "params_total", "direction": "minimize"}],
    "sampler": {"name": "random", "seed": 0},
    "trials": 2,
}
TINY_BASE = {"name": "tb", "model": {"d_model": 16, "vocab_size": 16},
             "blocks": {"M": {"type": "mamba2", "d_state": 4, "headdim": 8, "chunk_size": 8}},
             "pattern": "MM"}


@pytest.fixture
def launch_app(tmp_path):
    from hybridlab.ui.app import build_app, launch
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "base.yaml").write_text(yaml.safe_dump(TINY_BASE))
    demo = build_app(str(tmp_path / "launch.db"), live=False, base_dir=tmp_path)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    yield {"client": Client(url, verbose=False), "demo": demo, "dir": tmp_path,
           "url": str(tmp_path / "launch.db")}
    demo.hybridlab.ctx.launcher.stop_all()
    for job in demo.hybridlab.ctx.launcher.jobs.values():
        job.proc.wait(timeout=60)
    demo.close()


def test_launch_check(client, tmp_path):
    ok = client.predict(yaml.safe_dump({**TINY_SEARCH, "base": TINY_BASE}),
                        api_name="/launch_check")
    assert "valid search spec" in ok and "study &#x27;launched&#x27;" in ok
    bad = dict(TINY_SEARCH, base=TINY_BASE, trials=0)
    out = client.predict(yaml.safe_dump(bad, sort_keys=False), api_name="/launch_check")
    assert "problem" in out and "trials" in out and re.search(r"line \d+", out)
    path, text, check = client.predict("search-quick.yaml", api_name="/launch_example")
    assert path.endswith("search-quick.yaml") and "name: search-quick" in text
    assert "valid search spec" in check


def _wait_job(c, until, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = c.predict(None, api_name="/launch_tick")
        state = re.search(r"data-state='([^']+)'", out[1]).group(1)
        if until(state, out):
            return state, out
        time.sleep(1.0)
    raise TimeoutError(f"launched search still {state}: {out[3][-2000:]}")


def test_launch_search_runs_in_background_process(launch_app):
    import os
    c, folder = launch_app["client"], launch_app["dir"]
    spec_file = folder / "specs" / "search.yaml"
    spec_file.write_text(yaml.safe_dump(TINY_SEARCH, sort_keys=False))
    text, check = c.predict(str(spec_file), api_name="/launch_load")[:2]
    assert "valid search spec" in check
    job_dd, status, progress, log, follow = c.predict(text, None, 1, "cpu",
                                                      api_name="/launch_start")
    assert follow["active"] is True                     # the page follows it every second
    job = launch_app["demo"].hybridlab.ctx.launcher.jobs[job_dd["value"]]
    assert job.proc.pid != os.getpid()                        # a separate process
    assert job.spec_file == spec_file.resolve()               # the unchanged file, as it is
    assert "hybridlab.cli.main" in job.command and "search" in job.command
    # the page keeps reading while the search writes: no "database is locked", no errors
    reads, live_logs = 0, []

    def still_running(state, out):
        nonlocal reads
        if state == "running":
            table = frame(c.predict(api_name="/refresh_studies")[0])
            assert [r["study"] for r in table] in ([], ["launched"])
            reads += 1
            followed = c.predict(job_dd["value"], api_name="/launch_follow")
            if "running" in followed[1]:
                live_logs.append(followed[3])
        return state != "running"

    state, out = _wait_job(c, still_running)
    assert state == "finished", out[3]
    assert reads >= 1
    # the log streams while the search runs (unbuffered, the progress bar's latest state)
    assert any("search launched" in log for log in live_logs), live_logs[-1:]
    assert "\r" not in out[3]
    assert c.predict(job_dd["value"], api_name="/launch_follow")[4]["active"] is False
    from hybridlab.storage import Store
    summary = Store(launch_app["url"], readonly=True).study_summary("launched")
    assert summary["counts"]["COMPLETE"] == 2
    fig = plot(out[2])
    assert fig["data"][0]["y"] == ["launched"] and fig["data"][0]["x"] == [2]
    again = c.predict(job_dd["value"], api_name="/launch_status")
    assert "finished" in again[1] and "study launched" in again[3]


def test_launch_stop(launch_app):
    c, folder = launch_app["client"], launch_app["dir"]
    spec_file = folder / "specs" / "search.yaml"
    spec_file.write_text(yaml.safe_dump(TINY_SEARCH, sort_keys=False))
    text = c.predict(str(spec_file), api_name="/launch_load")[0]
    # edited in the page: run from a copy whose relative base path still resolves
    edited = text.replace("trials: 2", "trials: 400").replace("steps: 6", "steps: 400")
    job_dd, status, *_ = c.predict(edited, None, 1, "cpu", api_name="/launch_start")
    job = launch_app["demo"].hybridlab.ctx.launcher.jobs[job_dd["value"]]
    assert job.spec_file != spec_file.resolve()
    assert str((folder / "specs" / "base.yaml").resolve()) in job.spec_file.read_text()
    _wait_job(c, lambda s, o: "trial" in (o[3] or "") or "step" in str(o[2]), timeout=120)
    time.sleep(3)
    out = c.predict(job_dd["value"], api_name="/launch_stop")
    assert "stopp" in out[1]
    state, out = _wait_job(c, lambda s, o: s in ("stopped",) or s.startswith("failed"), 90)
    assert state == "stopped" and job.returncode is not None
    from hybridlab.storage import Store
    counts = Store(launch_app["url"], readonly=True).study_summary("launched")["counts"]
    assert counts["RUNNING"] == 0 and sum(counts.values()) < 400


# -- export --------------------------------------------------------------------------------------
def _unzip(path, dest: Path) -> Path:
    if isinstance(path, dict):                  # the download button's update: its file
        assert path["visible"] is True
        path = path["value"]
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
        zf.extractall(dest)
    roots = {n.split("/")[0] for n in names}
    assert len(roots) == 1
    return dest / roots.pop()


def test_export_build_native_identical_logits(client, server, tmp_path):  # noqa: F811
    from hybridlab.export.native import load_model, load_trial_model
    from hybridlab.export.source import find_trial

    objective, trial = client.predict("ui-a", None, api_name="/export_study")
    assert objective["value"] == "quality"
    assert {c[1] for c in trial["choices"]} == {0, 3, 5, 6}
    zip_path, summary, card = client.predict("ui-a", "best", "quality", None, "native", 1024, 24,
                                             api_name="/export_build")
    src = find_trial(store(server), "ui-a", best="quality")
    assert f"trial {src.number}" in summary and "model.safetensors" in summary
    assert "## How to load" in card and src.detail["pattern"] in card
    folder = _unzip(zip_path, tmp_path)
    assert folder.name == f"ui-a-trial-{src.number}"
    model = load_model(folder)
    reference = load_trial_model(src)
    ids = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        assert torch.equal(model(ids), reference(ids))


def test_export_this_trial_and_other_formats(client, server, tmp_path):  # noqa: F811
    out = client.predict(MALICIOUS, 0, api_name="/export_this_trial")
    assert out[0]["value"] == MALICIOUS and out[1]["value"] == "trial" and out[3]["value"] == 0
    zip_path, summary, _ = client.predict(MALICIOUS, "trial", "quality", 0, "layout", 256, 12,
                                          api_name="/export_build")
    folder = _unzip(zip_path, tmp_path / "layout")
    assert ".." not in folder.name and "/" not in folder.name
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    assert spec["model"]["d_model"] == 256 and spec["layout"]["layers"] == 12
    info = json.loads((folder / "layout.json").read_text())
    assert info["mixer_layers"] == 12
    pytest.importorskip("transformers", reason="the hf format needs transformers")
    zip_path, summary, card = client.predict("ui-b", "trial", None, 1, "hf", 1, 1,
                                             api_name="/export_build")
    folder = _unzip(zip_path, tmp_path / "hf")
    # the folder is what `hybridlab export --format hf` writes (its model_type is export's
    # choice: hybridlab's own, or a transformers class the layout fits; test_export checks it)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] and config["architectures"]
    assert "AutoModelForCausalLM" in card


def test_set_live(client):
    assert client.predict(False, api_name="/set_live") == {"active": False, "__type__": "update"}
    assert client.predict(True, api_name="/set_live") == {"active": True, "__type__": "update"}


def test_cli_ui_serves_on_localhost_with_auth(server):  # noqa: F811
    """`hybridlab ui` in its own process: listens on 127.0.0.1 only, asks for the password."""
    import subprocess

    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hybridlab.cli.main", "ui", "--db",
                             server["url"], "--port", str(port), "--auth", "alice:secret",
                             "--no-launch"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(base + "/config", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "hybridlab ui did not start"
                time.sleep(0.5)
        assert r.status_code == 401                     # nothing without logging in
        with httpx.Client(base_url=base, timeout=10) as http:
            bad = http.post("/login", data={"username": "alice", "password": "nope"})
            assert bad.status_code == 400
            ok = http.post("/login", data={"username": "alice", "password": "secret"})
            assert ok.status_code == 200
            config = http.get("/config").json()
        names = {d.get("api_name") for d in config["dependencies"]}
        assert {"load_page", "open_trial", "export_build"} <= names
        # --no-launch: no Launch tab and no Launch endpoints (not a hidden tab)
        assert not [c for c in config["components"] if c.get("props", {}).get("id") == "launch"]
        assert not {n for n in names if n and n.startswith("launch")}
        import socket
        ips = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)
               if a[0] == socket.AF_INET} - {"127.0.0.1", "127.0.1.1"}
        for ip in list(ips)[:1]:                       # not reachable on the machine's address
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://{ip}:{port}/config", timeout=3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_views_hypervolume_history_matches_store(server, tmp_path):  # noqa: F811
    """The UI's incremental hypervolume gives Store.hypervolume_history's numbers."""
    import random

    import optuna

    from hybridlab.storage import Store as WriteStore
    from hybridlab.storage import optuna_storage, views

    for study in server["studies"]:
        got, want = views.hypervolume_history(store(server), study), \
            store(server).hypervolume_history(study)
        assert [g["trial_number"] for g in got] == [w["trial_number"] for w in want]
        assert [g["hypervolume"] for g in got] == pytest.approx([w["hypervolume"] for w in want])
    url = f"sqlite:///{tmp_path / 'hv.db'}"
    WriteStore(url)
    rng = random.Random(0)
    study = optuna.create_study(storage=optuna_storage(url), study_name="hv",
                                directions=["maximize", "minimize", "minimize"])
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trials([optuna.trial.create_trial(
        values=[rng.random(), rng.random() * 1e6, rng.choice([1.0, 2.0, rng.random()])],
        params={"x": 0.5}, distributions=dist) for _ in range(60)])
    reader = WriteStore(url, readonly=True)
    got, want = views.hypervolume_history(reader, "hv"), reader.hypervolume_history("hv")
    assert [g["trial_number"] for g in got] == [w["trial_number"] for w in want]
    assert [g["hypervolume"] for g in got] == pytest.approx([w["hypervolume"] for w in want])
    assert got[-1]["hypervolume"] > got[0]["hypervolume"]
