"""Shared set-up of the UI and export tests: one database filled by real tiny CPU searches, and
one running UI server on it -- each built once per test process (however many test modules
use them), then removed at exit.

Studies in the database:
* ``ui-a``   byte-level models (vocab 256, bytes_lm + mqar tasks); a parameter constraint makes
             some candidates infeasible (PRUNED, with a reason), the rest train and keep weights;
* ``ui-b``   a second search over the same metrics, to compare fronts across studies;
* ``../../x`` a study named like a path, to check exports never leave their folder.
"""
from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "test-output"
MALICIOUS = "../../x"

SEARCH = {
    "name": "ui-a",
    "base": {
        "name": "ui-base",
        "model": {"d_model": 32, "vocab_size": 256},
        "blocks": {
            "M": {"type": "mamba2", "d_state": 8, "headdim": 16, "expand": 2, "chunk_size": 16},
            "*": {"type": "attention", "n_heads": 2},
            "-": {"type": "mlp", "hidden_mult": 2},
        },
        "layout": {"layers": 2, "mix": {"M": 2, "*": 1}, "ffn": ["-"]},
    },
    "space": {
        "blocks.M.type": {"choice": ["mamba1", "mamba2"]},
        "blocks.M.d_state": {"choice": [4, 8]},
        'layout.mix."*"': {"choice": [0, 1]},
        "layout.layers": {"int": [1, 3]},
    },
    "tasks": [
        {"name": "bytes_lm", "seq_len": 32, "max_train_bytes": 60000, "max_val_bytes": 1024},
        {"name": "mqar", "vocab_size": 64, "seq_len": 32, "kv_pairs": 4, "test_examples": 32},
    ],
    "train": {"steps": 16, "batch_size": 8, "lr": 3.0e-3, "eval_points": 2,
              "prune_at_frac": None},
    "cost": {"prefill_len": 32, "decode_steps": 2, "decode_batch": 1, "repeats": 1},
    "objectives": [{"metric": "quality", "direction": "maximize"},
                   {"metric": "state_bytes@4096", "direction": "minimize"},
                   {"metric": "params_total", "direction": "minimize"}],
    "constraints": {"params_max": 45000},
    "sampler": {"name": "random", "seed": 1},
    "trials": 7,
}


def _spec(folder: Path, name: str, **changes) -> Path:
    data = copy.deepcopy(SEARCH)
    data["name"] = name
    data.update(changes)
    path = folder / f"{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@functools.lru_cache(maxsize=None)
def ui_database() -> dict:
    """Run the searches once per process; returns {"root", "url", "studies"}."""
    import optuna

    from hybridlab.search.driver import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="hl-ui-tests-"))
    atexit.register(shutil.rmtree, root, True)
    db = root / "db" / "ui.db"
    url = f"sqlite:///{db}"
    t0 = time.monotonic()
    run_search(str(_spec(root, "ui-a")), db=url, device="cpu")
    run_search(str(_spec(root, "ui-b", sampler={"name": "random", "seed": 7}, trials=4,
                         constraints={})), db=url, device="cpu")
    run_search(str(_spec(root, MALICIOUS, trials=2, constraints={},
                         space={"blocks.M.d_state": {"choice": [4, 8]}})), db=url, device="cpu")
    return {"root": root, "url": url, "studies": ["ui-a", "ui-b", MALICIOUS],
            "build_s": time.monotonic() - t0}


@functools.lru_cache(maxsize=None)
def ui_server() -> dict:
    """One UI server on the test database (live refresh off: tests drive refreshes)."""
    from hybridlab.ui.app import build_app, launch

    info = ui_database()
    demo = build_app(info["url"], live=False, refresh_s=2.0, base_dir=REPO)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    atexit.register(_close, demo)
    return {**info, "demo": demo, "server_url": url, "app": demo.hybridlab}


def _close(demo) -> None:
    try:
        demo.hybridlab.ctx.launcher.stop_all()
        demo.close()
    except Exception:
        pass


@pytest.fixture
def ui_db():
    return ui_database()


@pytest.fixture
def server():
    return ui_server()


def output_dir(name: str) -> Path:
    path = OUTPUT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- calling a select event (gradio_client cannot send event data) -------------------------------
def call_with_event(base_url: str, api_name: str, data: list, event_data: dict,
                    timeout: float = 60.0) -> list:
    """Run the event ``api_name`` through Gradio's queue with ``event_data`` (what the browser
    sends for ``.select``), returning its output data. Raises on an error message."""
    import httpx

    base = base_url.rstrip("/") + "/gradio_api"
    config = httpx.get(base_url.rstrip("/") + "/config", timeout=timeout).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    session = uuid.uuid4().hex
    r = httpx.post(f"{base}/queue/join", json={
        "data": data, "event_data": event_data, "fn_index": fn_index, "trigger_id": None,
        "session_hash": session}, timeout=timeout)
    r.raise_for_status()
    result: dict = {}
    with httpx.stream("GET", f"{base}/queue/data", params={"session_hash": session},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed":
                result = msg
                break
    if not result:
        raise RuntimeError(f"{api_name}: the queue sent no result")
    if not result.get("success", False):
        raise RuntimeError(f"{api_name} failed: {result.get('output')}")
    return result["output"]["data"]
