"""Hostile callers of the web UI (issue 26): real servers started here, driven through
gradio_client and raw HTTP, as someone who reaches the page would.

The world: a folder the UI is started in (``root``) beside a folder it must never read
(``outside``, holding files with a secret token); inside the root, symlinks out of it, a symlink
to /dev/zero, a FIFO, an oversized spec, a spec whose ``plugins:`` names a module that writes a
marker file when imported, and a database whose studies have control characters in their names
and a stored spec naming that plugin.

Every named endpoint (enumerated from the app's API, so a new endpoint is covered without
editing this file) is called with path traversal, absolute paths, symlinks out of the root,
/dev/zero, huge strings, wrong types and plugin specs, on a plain server, one with --auth and one
with --no-launch. Whatever comes back -- outputs or error messages -- must never contain the
secret, and the marker file must never appear.
"""
from __future__ import annotations

import html
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
import warnings
import zipfile
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import yaml

gradio_client = pytest.importorskip("gradio_client")
Client = gradio_client.Client

SECRET = f"hl-secret-{uuid.uuid4().hex}"
MARKER_MODULE = f"hl_hostile_plugin_{uuid.uuid4().hex[:12]}"
EVIL_STUDY = "evil\x1b[31m\n<b>study</b>"
PLAIN_STUDY = "plain"
AUTH = ("alice", "s3cret-pass")
#: A call that takes longer than this hangs (e.g. reading /dev/zero or a FIFO).
CALL_TIMEOUT_S = 60
BARE = "has not enabled verbose error reporting"
HUGE = "x" * (2 << 20)                      # a 2 MiB string

TINY_BASE = {"name": "tb", "model": {"d_model": 16, "vocab_size": 16},
             "blocks": {"M": {"type": "mamba2", "d_state": 4, "headdim": 8, "chunk_size": 8}},
             "pattern": "MM"}
TINY_SEARCH = {
    "name": "hostile-launch", "base": "base.yaml",
    "space": {"blocks.M.d_state": {"choice": [2, 4]}},
    "tasks": [{"name": "parity", "train_max_len": 8, "test_min_len": 8, "test_max_len": 10,
               "test_examples": 16}],
    "train": {"steps": 2, "batch_size": 4, "eval_points": 1, "prune_at_frac": None},
    "objectives": [{"metric": "quality", "direction": "maximize"}],
    "trials": 1,
}
PLUGIN_SPEC = yaml.safe_dump({**TINY_BASE, "name": "plugged", "plugins": [MARKER_MODULE]},
                             sort_keys=False)


# -- the world -----------------------------------------------------------------------------------
def _build_world(base: Path) -> dict:
    root, outside, plugins = base / "root", base / "outside", base / "plugins"
    for d in (root / "specs", root / "examples", outside, plugins):
        d.mkdir(parents=True)
    marker = base / "plugin-was-imported"
    # files that must never be read: spec-like, so a loader would happily quote them
    (outside / "secret.yaml").write_text(f"{SECRET}: 1\nname: {SECRET}\n")
    (outside / "shadow").write_text(f"root:{SECRET}:19000:0:99999:7:::\n")
    (outside / "secret.txt").write_text(f"token={SECRET}\n")
    (outside / "base.yaml").write_text(yaml.safe_dump({**TINY_BASE, "name": SECRET}))
    specs = root / "specs"
    (specs / "base.yaml").write_text(yaml.safe_dump(TINY_BASE))
    (specs / "search.yaml").write_text(yaml.safe_dump(TINY_SEARCH, sort_keys=False))
    (specs / "plugin.yaml").write_text(PLUGIN_SPEC)
    (specs / "big.yaml").write_text("# " + "x" * (1 << 20) + "\n" + yaml.safe_dump(TINY_BASE))
    (specs / "out.yaml").symlink_to(outside / "secret.yaml")
    (specs / "outdir").symlink_to(outside, target_is_directory=True)
    (specs / "zero.yaml").symlink_to("/dev/zero")
    os.mkfifo(specs / "fifo.yaml")
    (specs / "a-folder.yaml").mkdir()
    (root / "examples" / "evil.yaml").symlink_to(outside / "secret.yaml")
    # the plugin: importing it (from anywhere a loader might look) leaves the marker file
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    for folder in (plugins, root, specs):
        (folder / f"{MARKER_MODULE}.py").write_text(code)
    return {"base": base, "root": root, "outside": outside, "specs": specs, "marker": marker,
            "downloads": base / "downloads",
            "plugins": plugins, "db": _hostile_db(root / "hostile.db")}


def _hostile_db(path: Path) -> str:
    """Two studies without training: one named with control characters and HTML, one plain;
    trial 0 of each stores a spec that names the plugin."""
    import optuna

    from hybridlab.storage import Store, optuna_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    url = f"sqlite:///{path}"
    Store(url)
    storage = optuna_storage(url)
    good = yaml.safe_dump(TINY_BASE)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for name in (EVIL_STUDY, PLAIN_STUDY):
        study = optuna.create_study(storage=storage, study_name=name,
                                    directions=["maximize", "minimize"])
        study.set_metric_names(["quality", "params_total"])
        study.add_trials([optuna.trial.create_trial(
            values=[0.1 * (i + 1), 1000.0 - i], params={"x": 0.5}, distributions=dist,
            user_attrs={"spec_yaml": PLUGIN_SPEC if i == 0 else good, "pattern": "MM"})
            for i in range(4)])
    return url


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = _build_world(tmp_path_factory.mktemp("hostile"))
    sys.path.insert(0, str(w["plugins"]))         # importable, were anything to import it
    yield w
    sys.path.remove(str(w["plugins"]))
    sys.modules.pop(MARKER_MODULE, None)


def _serve(world, **kwargs) -> dict:
    from hybridlab.ui.app import build_app, launch
    auth = kwargs.pop("auth", None)
    demo = build_app(kwargs.pop("db", world["db"]), live=False, base_dir=world["root"],
                     **kwargs)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True, auth=auth)
    client = Client(url, verbose=False, auth=auth, download_files=str(world["downloads"]))
    return {"demo": demo, "url": url, "client": client, "auth": auth}


def _close(server) -> None:
    server["demo"].hybridlab.ctx.launcher.stop_all()
    server["demo"].close()


@pytest.fixture(scope="module")
def servers(world):
    """name -> a running server: plain, with --auth, with --no-launch."""
    out = {"plain": _serve(world), "auth": _serve(world, auth=AUTH),
           "no-launch": _serve(world, enable_launch=False)}
    yield out
    for s in out.values():
        _close(s)


# -- calling -------------------------------------------------------------------------------------
def call(client, api_name: str, *args) -> tuple[object, str | None]:
    """(outputs, None) or (None, the error message); fails on a hang."""
    job = client.submit(*args, api_name=api_name)
    try:
        return job.result(timeout=CALL_TIMEOUT_S), None
    except FutureTimeout:
        pytest.fail(f"{api_name}{_short(args)} did not answer in {CALL_TIMEOUT_S} s")
    except Exception as e:              # noqa: BLE001 -- AppError and the client's own errors
        return None, str(getattr(e, "message", None) or e)


def text_of(world, value) -> str:
    """Everything a response holds, as text: the files it returned (downloads) included."""
    parts = [json.dumps(value, default=str)]
    downloads = str(world["downloads"]) + os.sep
    for s in _strings(value):
        if s.startswith(downloads) and os.path.isfile(s):
            data = Path(s).read_bytes()
            if s.endswith(".zip"):
                with zipfile.ZipFile(s) as zf:
                    data += b"".join(zf.read(n) for n in zf.namelist())
            parts.append(data.decode("utf-8", "replace"))
    return "\n".join(parts)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _short(args) -> str:
    return "(" + ", ".join(repr(a)[:60] for a in args) + ")"


def assert_clean(world, what: str, out, err) -> None:
    body = text_of(world, out) + "\n" + (err or "")
    assert SECRET not in body, f"{what} leaked the secret file: {body[:2000]}"
    assert "Traceback (most recent call last)" not in body, f"{what}: {body[:2000]}"
    assert not world["marker"].exists(), f"{what} imported the spec's plugin"


def event(server, api_name: str, data: list, event_data: dict) -> tuple[object, str | None]:
    """Run ``api_name`` through Gradio's queue with browser event data (a row click), logged
    in when the server asks for it: (outputs, None) or (None, error); (None, None) when the
    page has no such event."""
    with httpx.Client(base_url=server["url"].rstrip("/"), timeout=CALL_TIMEOUT_S) as http:
        if server.get("auth"):
            user, password = server["auth"]
            http.post("/login", data={"username": user, "password": password})
        config = http.get("/config").json()
        fn = next((d["id"] for d in config["dependencies"] if d.get("api_name") == api_name),
                  None)
        if fn is None:
            return None, None
        session = uuid.uuid4().hex
        http.post("/gradio_api/queue/join", json={
            "data": data, "event_data": event_data, "fn_index": fn, "trigger_id": None,
            "session_hash": session}).raise_for_status()
        with http.stream("GET", "/gradio_api/queue/data",
                         params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        if msg.get("success"):
                            return msg["output"]["data"], None
                        return None, str(msg.get("output", {}).get("error"))
    pytest.fail(f"{api_name}: the queue sent no result")


def people_text(value):
    """The strings of a response that people read: labels, table cells, HTML, plot names --
    not the values that name a study to the server (a dropdown's value, a plot point's click
    data)."""
    if isinstance(value, dict):
        if value.get("type") == "plotly" and isinstance(value.get("plot"), str):
            fig = json.loads(value["plot"])
            for trace in fig.get("data", []):
                yield from people_text({k: v for k, v in trace.items() if k != "customdata"})
            yield from people_text(fig.get("layout", {}))
            return
        for k, v in value.items():
            if k in ("value", "legendgroup", "uirevision"):      # keys, never shown
                continue
            if k == "choices":
                for c in v:
                    yield from people_text(c[0] if isinstance(c, (list, tuple)) else c)
                continue
            yield from people_text(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from people_text(v)
    elif isinstance(value, str):
        yield value


def named_endpoints(client) -> dict[str, list[dict]]:
    api = client.view_api(return_format="dict", print_info=False)
    return {name: info["parameters"] for name, info in api["named_endpoints"].items()}


def hostile_values(world) -> list:
    outside, specs = world["outside"], world["specs"]
    return [
        str(outside / "secret.yaml"), str(outside / "shadow"), "/etc/shadow", "/etc/passwd",
        "../outside/secret.yaml", "../../outside/shadow", "specs/../../outside/secret.txt",
        "specs/out.yaml", "specs/outdir/secret.yaml", str(specs / "outdir" / "shadow"),
        "/dev/zero", "specs/zero.yaml", "specs/fifo.yaml", "specs/big.yaml",
        "~/../../etc/passwd", "file:///etc/passwd", "specs/\x00.yaml", "evil.yaml",
        HUGE,
        PLUGIN_SPEC,
        yaml.safe_dump({**TINY_SEARCH, "base": str(outside / "secret.yaml")}),
        yaml.safe_dump({**TINY_SEARCH, "base": "../outside/shadow"}),
        yaml.safe_dump({**TINY_SEARCH, "base": {**TINY_BASE, "plugins": [MARKER_MODULE]}}),
        json.dumps({"study": EVIL_STUDY, "trial": 10 ** 30}),
        10 ** 30, -1, 1e308, float("nan"), True, None, [], [str(outside / "secret.yaml")] * 5,
        {"path": str(outside / "secret.yaml")},
    ]


# -- files stay where they belong ----------------------------------------------------------------
def test_load_file_refuses_everything_outside_with_one_message(world, servers):
    client, outside, specs = servers["plain"]["client"], world["outside"], world["specs"]
    refused = [str(outside / "secret.yaml"), str(outside / "missing.yaml"), "/etc/shadow",
               "../outside/secret.yaml", "../outside/missing.yaml", "specs/out.yaml",
               "specs/outdir/secret.yaml", "specs/outdir/missing.yaml", "/dev/zero",
               "specs/zero.yaml", "specs/fifo.yaml", "specs/a-folder.yaml", "specs/missing.yaml",
               str(specs / "base.yaml") + "/..", "specs/plugin.yaml\x00", "~root/.ssh/id_rsa"]
    messages = set()
    for raw in refused:
        out, err = call(client, "/launch_load", raw)
        assert_clean(world, f"launch_load({raw!r})", out, err)
        assert out is None and err and BARE not in err, (raw, out, err)
        messages.add(html.unescape(err).replace(repr(raw), "<PATH>"))
    # one message, whatever the reason: it cannot tell a missing file from a forbidden one
    assert len(messages) == 1, messages
    assert "inside" in messages.pop()
    # what is inside the root loads, relative or absolute
    for good in ("specs/search.yaml", str(specs / "search.yaml")):
        out, err = call(client, "/launch_load", good)
        assert err is None and "name: hostile-launch" in out[0]


def test_oversized_spec_file_and_text_are_refused_clearly(world, servers):
    client = servers["plain"]["client"]
    out, err = call(client, "/launch_load", "specs/big.yaml")
    assert out is None and "at most 1 MiB" in html.unescape(err)
    big = "# " + "x" * (1 << 20) + "\n" + yaml.safe_dump(TINY_BASE)
    status, strip, summary, _ = call(client, "/compose_check", big, "4096", "bf16")[0]
    assert "larger than 1 MiB" in status and summary == ""
    check, err = call(client, "/launch_check", big)
    assert err is None and "larger than 1 MiB" in check
    out, err = call(client, "/launch_start", big, 1, 1, "cpu")
    assert err is None and "larger than 1 MiB" in out[1]
    assert not servers["plain"]["demo"].hybridlab.ctx.launcher.jobs


def test_search_base_outside_the_roots_is_refused_like_a_missing_file(world, servers):
    # a new session: editor text reads a relative base: from the folder the UI started in
    # (a session that loaded a file reads it from that file's folder)
    client = Client(servers["plain"]["url"], verbose=False,
                    download_files=str(world["downloads"]))
    outside = world["outside"]
    answers = {}
    for base in (str(outside / "base.yaml"), str(outside / "missing.yaml"),
                 str(outside / "shadow"), "../outside/base.yaml", "specs/out.yaml",
                 "specs/outdir/base.yaml", "/dev/zero", "specs/fifo.yaml"):
        text = yaml.safe_dump({**TINY_SEARCH, "base": base}, sort_keys=False)
        out, err = call(client, "/launch_check", text)           # fails on a hang
        assert_clean(world, f"launch_check(base={base!r})", out, err)
        assert err is None and "problem" in out, (base, out)
        answers[base] = re.sub(r"&#x27;[^&]*&#x27;", "'<PATH>'", out.replace(base, "<PATH>"))
    # outside the roots, nothing tells a forbidden file from a missing one (the FIFO is inside)
    answers.pop("specs/fifo.yaml")
    assert len(set(answers.values())) == 1, answers
    # a base inside the root is fine (editor text: relative to the folder the UI started in)
    out, _ = call(client, "/launch_check",
                  yaml.safe_dump({**TINY_SEARCH, "base": "specs/base.yaml"}, sort_keys=False))
    assert "valid search spec" in out


def test_examples_that_lead_outside_are_not_offered(world, servers):
    client = servers["plain"]["client"]
    for api in ("/compose_example", "/launch_example"):
        out, err = call(client, api, "evil.yaml")
        assert_clean(world, api, out, err)
        assert out is None and "no example" in err
    out, err = call(client, "/compose_example", "hybrid-small.yaml")     # a shipped one
    assert err is None and "model:" in out


def test_the_file_route_serves_nothing_outside(world, servers):
    url = servers["plain"]["url"].rstrip("/")
    for target in (world["outside"] / "secret.yaml", world["specs"] / "out.yaml",
                   world["specs"] / "base.yaml", Path("/etc/passwd")):
        for path in (f"/gradio_api/file={target}", f"/file={target}",
                     f"/gradio_api/file={world['root']}/../outside/secret.yaml"):
            r = httpx.get(url + path, timeout=30)
            assert SECRET not in r.text and "root:x:0:0" not in r.text, (path, r.status_code)
            assert r.status_code >= 400, (path, r.status_code)


# -- no code runs ----------------------------------------------------------------------------------
def test_plugins_are_never_imported(world, servers):
    client = servers["plain"]["client"]
    status = call(client, "/compose_check", PLUGIN_SPEC, "4096", "bf16")[0][0]
    assert "plugins" in status and "the web page never imports plugins" in status, status
    out, err = call(client, "/launch_load", "specs/plugin.yaml")      # a model spec, not search
    assert_clean(world, "launch_load(plugin.yaml)", out, err)
    search = yaml.safe_dump({**TINY_SEARCH, "base": {**TINY_BASE, "plugins": [MARKER_MODULE]}},
                            sort_keys=False)
    check = call(client, "/launch_check", search)[0]
    assert "plugins" in check and "valid search spec" not in check, check
    out, err = call(client, "/launch_start", search, 1, 1, "cpu")
    assert err is None and "plugins" in out[1]
    assert not servers["plain"]["demo"].hybridlab.ctx.launcher.jobs
    # a stored spec naming the plugin: shown, never imported; its layout is not exported
    detail = call(client, "/open_trial", PLAIN_STUDY, 0)[0]
    assert MARKER_MODULE in detail[-1]
    out, err = call(client, "/export_build", PLAIN_STUDY, "trial", None, 0, "layout", 64, 4)
    assert out is None and err and BARE not in err, (out, err)
    assert not world["marker"].exists()


def test_launched_searches_get_no_plugin_opt_in(monkeypatch):
    from hybridlab.ui.launcher import child_env
    monkeypatch.setenv("HYBRIDLAB_PLUGINS", "1")
    env = child_env()
    assert "HYBRIDLAB_PLUGINS" not in env and env.get("PATH") == os.environ.get("PATH")


# -- errors, never a bare AppError -----------------------------------------------------------------
def test_database_problems_show_their_message(world, tmp_path):
    from hybridlab.errors import StoreError
    from hybridlab.storage import Store

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database\x00" * 200)
    copy = tmp_path / "copy.db"           # the database whole, out of its WAL
    with closing(sqlite3.connect(world["db"][len("sqlite:///"):])) as src, \
            closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    good = copy.read_bytes()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(good[:3000])
    future, no_runs = tmp_path / "future.db", tmp_path / "no-runs.db"
    for path, sql in ((future, "UPDATE hl_schema_version SET version = 999"),
                      (no_runs, "DROP TABLE hl_runs")):
        path.write_bytes(good)
        with closing(sqlite3.connect(path)) as db:
            db.execute(sql)
            db.commit()
    for path in (corrupt, truncated, future, no_runs):
        url = f"sqlite:///{path}"
        with pytest.raises(StoreError) as expected:
            Store(url, readonly=True).study_names()
        server = _serve(world, db=url)
        try:
            for api in ("/load_page", "/refresh_studies"):
                out, err = call(server["client"], api)
                assert out is None and err and BARE not in err, (api, err)
                assert html.unescape(err).replace("<br>", "\n").startswith(
                    str(expected.value).splitlines()[0]), (api, err)
            out, err = call(server["client"], "/open_trial", PLAIN_STUDY, 0)
            assert out is None and err and BARE not in err
        finally:
            _close(server)
    # a database that does not exist yet is an empty page (a search launched from it creates
    # the file), never an error
    server = _serve(world, db=f"sqlite:///{tmp_path / 'not-yet.db'}")
    try:
        out, err = call(server["client"], "/refresh_studies")
        assert err is None and "0** studies" in out[2] and "Launch tab" in out[2]
    finally:
        _close(server)


def test_unknown_studies_and_trials_say_so(world, servers, capfd):
    client = servers["plain"]["client"]
    out, err = call(client, "/open_trial", "no-such-study", 0)
    assert out is None and "no study" in err
    # the server log says it too, with the caller's control characters escaped
    out, err = call(client, "/open_trial", "clear\x1b[2Jscreen", 0)
    assert out is None and "no study" in err and "\x1b" not in err
    log = capfd.readouterr().err
    assert "clear\\x1b[2Jscreen" in log and "\x1b" not in log
    out, err = call(client, "/open_trial", PLAIN_STUDY, 99)
    assert out is None and "99" in err and BARE not in err
    out, err = call(client, "/export_build", "no-such-study", "best", "quality", None, "native",
                    1, 1)
    assert out is None and "no study" in err
    out, err = call(client, "/export_build", PLAIN_STUDY, "trial", None, 1, "native", 1, 1)
    assert out is None and err and BARE not in err      # no weights stored: says so


def test_names_with_control_characters_are_shown_escaped(world, servers):
    client = servers["plain"]["client"]
    outputs = [call(client, "/load_page")[0], call(client, "/refresh_studies")[0],
               call(client, "/pareto_studies", [EVIL_STUDY], None, None, "study", "auto", "auto",
                    "axes", True, False, False)[0],
               call(client, "/open_trial", EVIL_STUDY, 1)[0],
               call(client, "/compare", [f"{EVIL_STUDY}#1", f"{PLAIN_STUDY}#1"], None)[0]]
    for out in outputs:
        assert out is not None
        shown = [s for s in people_text(out) if "evil" in s]
        assert shown, out
        for s in shown:               # text for people: escaped; in HTML, no markup from it
            assert "\x1b" not in s, repr(s)[:300]
            if "class=" in s:
                assert "<b>study</b>" not in s, s[:300]
    table = outputs[1][0]
    assert [r[0] for r in table["data"]][0] == "evil\\x1b[31m\\x0a<b>study</b>"


# -- --no-launch and --auth ----------------------------------------------------------------------
def test_no_launch_has_no_launch_endpoints(world, servers):
    server = servers["no-launch"]
    names = set(named_endpoints(server["client"]))
    plain = set(named_endpoints(servers["plain"]["client"]))
    launch = {n for n in plain if n.startswith("/launch")}
    assert launch and not (names & launch), names & launch
    assert names == plain - launch
    config = httpx.get(server["url"].rstrip("/") + "/config", timeout=30).json()
    assert not any((d.get("api_name") or "").startswith("launch")
                   for d in config["dependencies"])
    assert not any(c.get("props", {}).get("elem_id", "") in ("launch-editor", "launch-check")
                   for c in config["components"])
    for name in launch:
        with pytest.raises(Exception):
            server["client"].predict("specs/search.yaml", api_name=name)
        r = httpx.post(server["url"].rstrip("/") + f"/gradio_api/call{name}",
                       json={"data": ["specs/search.yaml"]}, timeout=30)
        assert r.status_code >= 400, (name, r.status_code)
        assert event(server, name.lstrip("/"), ["specs/search.yaml"], {}) == (None, None)
    # no function index leads to a launcher either: the page has fewer functions
    plain_config = httpx.get(servers["plain"]["url"].rstrip("/") + "/config", timeout=30).json()
    assert len(config["dependencies"]) < len(plain_config["dependencies"])


def test_auth_is_required_for_everything(world, servers):
    url = servers["auth"]["url"].rstrip("/")
    assert httpx.get(url + "/config", timeout=30).status_code == 401
    with pytest.raises(Exception):
        Client(url, verbose=False)
    r = httpx.post(url + "/gradio_api/call/launch_load", json={"data": ["/etc/passwd"]},
                   timeout=30)
    assert r.status_code in (401, 403, 404) and SECRET not in r.text


# -- every endpoint, every hostile value -----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("which", ["plain", "auth", "no-launch"])
def test_every_endpoint_with_hostile_input(world, servers, which):
    """Each hostile value in every parameter of every named endpoint, then each path attack in
    one parameter with the others at their defaults. The servers with --auth and --no-launch run
    the same handlers: they get the path attacks and a few wrong types in every parameter."""
    server = servers[which]
    client = server["client"]
    endpoints = named_endpoints(client)
    assert len(endpoints) >= 20
    values = hostile_values(world)
    paths = values[:14]
    if which != "plain":
        values = paths + [HUGE, PLUGIN_SPEC, 10 ** 30, None, [], {"path": paths[0]}]
        paths = []
    calls = 0
    for name, params in sorted(endpoints.items()):
        defaults = [p.get("parameter_default") if p.get("parameter_has_default")
                    else p.get("example_input") for p in params]
        for v in values:
            out, err = call(client, name, *([v] * len(params)))
            assert_clean(world, f"{which} {name}({v!r:.60})", out, err)
            calls += 1
        for i in range(len(params)):
            for v in paths:
                args = list(defaults)
                args[i] = v
                out, err = call(client, name, *args)
                assert_clean(world, f"{which} {name} arg {i} = {v!r:.60}", out, err)
                calls += 1
    # select events with hostile event data (what a browser would send for a row click)
    for name in ("studies_open", "pareto_table_open", "trials_open"):
        if f"/{name}" not in endpoints:
            continue
        n = len(endpoints[f"/{name}"])
        for row in ([str(world["outside"] / "secret.yaml"), "1e400"], ["../outside/shadow"],
                    [None, None], [EVIL_STUDY, 10 ** 30], "specs/out.yaml"):
            out, err = event(server, name, [None] * n,
                             {"index": [0, 0], "value": row[0], "row_value": row,
                              "col_value": row, "selected": True})
            assert_clean(world, f"{which} {name} row {row!r:.60}", out, err)
            assert out is not None or err, (name, row)
    # the server is still well: the page loads, nothing was launched
    out, err = call(client, "/load_page")
    assert err is None and out is not None
    assert not server["demo"].hybridlab.ctx.launcher.jobs
    assert calls > 400


# -- start-up --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hybridlab(*args, cwd, env=None):
    return subprocess.Popen([sys.executable, "-m", "hybridlab.cli.main", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False",
                                 **(env or {})})


def test_busy_port_says_so_and_names_the_option(world):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        proc = _hybridlab("ui", "--db", world["db"], "--port", str(port), cwd=world["root"])
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert f"port {port} is busy; pick another with --port" in out
    assert "GRADIO_SERVER_PORT" not in out and "Traceback" not in out


def test_cli_server_log_stays_clean(world):
    """`hybridlab ui` in its own process, the way a user starts it: no share-link hint at start,
    and a spec with ``plugins: [this]`` (the Zen of Python) prints nothing in the server log --
    even with the plugin opt-in in the server's environment."""
    port = _free_port()
    proc = _hybridlab("ui", "--db", world["db"], "--port", str(port), cwd=world["root"],
                      env={"HYBRIDLAB_PLUGINS": "1"})
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 240
        while True:
            try:
                httpx.get(url + "config", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "hybridlab ui did not start"
                time.sleep(0.5)
        client = Client(url, verbose=False)
        zen = yaml.safe_dump({**TINY_BASE, "plugins": ["this"]}, sort_keys=False)
        status = call(client, "/compose_check", zen, "4096", "bf16")[0][0]
        assert "allow-plugins" in status
        check = call(client, "/launch_check", yaml.safe_dump(
            {**TINY_SEARCH, "base": {**TINY_BASE, "plugins": ["this"]}}))[0]
        assert "valid search spec" not in check
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "Beautiful is better than ugly" not in out, out
    assert "share=True" not in out and "public link" not in out, out
    assert f"serving on http://127.0.0.1:{port}" in out, out
