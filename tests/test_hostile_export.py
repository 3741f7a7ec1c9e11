"""Hostile and broken exports: tampered weights and specs, plugins named by an export or a
database (never imported), an --out that is a symlink or already holds files, permissions.
Every failure is an ExportError naming the file (exit 2, no traceback in the CLI)."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file, save_model

from hybridlab.cli.main import main
from hybridlab.composer.builder import build_model
from hybridlab.composer.canonical import dump_spec_yaml
from hybridlab.errors import ExportError
from hybridlab.export.native import SPEC_FILE, WEIGHTS_FILE, load_model, write_native
from hybridlab.export.safe import ExportDir, UnsafePath
from hybridlab.storage import Store
from hybridlab.storage.engine import dispose_engines

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SPEC = {"name": "tiny", "model": {"d_model": 16, "vocab_size": 256},
        "blocks": {"M": {"type": "mamba2", "d_state": 4, "headdim": 8},
                   "*": {"type": "attention", "n_heads": 2}},
        "pattern": "M*"}
PLUGIN = "hl_hostile_plugin"


@pytest.fixture(autouse=True)
def _fresh_engines():
    yield
    dispose_engines()


@pytest.fixture(scope="module")
def good_export(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("export") / "good"
    write_native(out, build_model(SPEC))
    return out


def copy_of(good: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(good, folder)
    return folder


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module that leaves a marker file when imported; importable from sys.path."""
    marker = tmp_path / "plugin-ran"
    src = tmp_path / "plugins"
    src.mkdir()
    (src / f"{PLUGIN}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.delitem(sys.modules, PLUGIN, raising=False)
    yield marker
    sys.modules.pop(PLUGIN, None)


# -- tampered export folders ---------------------------------------------------------------------
def _state(folder):
    return load_file(str(folder / WEIGHTS_FILE))


def _save(folder, state):
    save_file(state, str(folder / WEIGHTS_FILE))


def _drop_tensor(folder):
    s = _state(folder)
    s.pop("layers.0.block.D")
    _save(folder, s)


def _extra_tensor(folder):
    s = _state(folder)
    s["evil.weight"] = torch.zeros(2)
    _save(folder, s)


def _wrong_shape(folder):
    s = _state(folder)
    s["layers.0.block.D"] = torch.zeros(7)
    _save(folder, s)


def _wrong_dtype(folder):
    s = _state(folder)
    s["layers.0.block.D"] = s["layers.0.block.D"].to(torch.int32)
    _save(folder, s)


def _edit_spec(**model):
    def edit(folder):
        spec = yaml.safe_load((folder / SPEC_FILE).read_text())
        spec["model"].update(model)
        (folder / SPEC_FILE).write_text(yaml.safe_dump(spec))
    return edit


def _weights_bytes(fn):
    def edit(folder):
        path = folder / WEIGHTS_FILE
        path.write_bytes(fn(path.read_bytes()))
    return edit


def _replace_with_dir(name):
    def edit(folder):
        (folder / name).unlink()
        (folder / name).mkdir()
    return edit


def _symlink(name, target):
    def edit(folder):
        (folder / name).unlink()
        (folder / name).symlink_to(target)
    return edit


# case -> (how to break the export, a phrase of the message, the file it must name)
TAMPERED = {
    "empty-weights": (_weights_bytes(lambda b: b""), "not a readable safetensors file",
                      WEIGHTS_FILE),
    "truncated-weights": (_weights_bytes(lambda b: b[: len(b) // 2]),
                          "not a readable safetensors file", WEIGHTS_FILE),
    "cut-header": (_weights_bytes(lambda b: b[:6]), "not a readable safetensors file",
                   WEIGHTS_FILE),
    "random-weights": (_weights_bytes(lambda b: os.urandom(len(b))),
                       "not a readable safetensors file", WEIGHTS_FILE),
    "garbled-header": (_weights_bytes(lambda b: b[:8] + b"\xff" * 40 + b[48:]),
                       "not a readable safetensors file", WEIGHTS_FILE),
    "missing-tensor": (_drop_tensor, "missing layers.0.block.D", WEIGHTS_FILE),
    "extra-tensor": (_extra_tensor, "not in the model: evil.weight", WEIGHTS_FILE),
    "wrong-shape": (_wrong_shape, "layers.0.block.D has shape [7]", WEIGHTS_FILE),
    "wrong-dtype": (_wrong_dtype, "layers.0.block.D is I32, the spec makes float32",
                    WEIGHTS_FILE),
    "edited-spec-width": (_edit_spec(d_model=32), "has shape [256, 16], the spec makes "
                                                  "[256, 32]", SPEC_FILE),
    "edited-spec-invalid": (_edit_spec(d_model=-3), "is not a valid model spec", SPEC_FILE),
    "spec-not-text": (lambda f: (f / SPEC_FILE).write_bytes(b"\xff\xfe\x00" * 50),
                      "cannot read", SPEC_FILE),
    "spec-is-a-folder": (_replace_with_dir(SPEC_FILE), "holds no spec.yaml", "export"),
    "no-weights": (lambda f: (f / WEIGHTS_FILE).unlink(), "holds no model.safetensors",
                   "export"),
    "weights-are-a-folder": (_replace_with_dir(WEIGHTS_FILE), "holds no model.safetensors",
                             "export"),
    "spec-symlink": (_symlink(SPEC_FILE, "/etc/passwd"), "is a symlink", SPEC_FILE),
    "weights-symlink": (_symlink(WEIGHTS_FILE, "/dev/zero"), "is a symlink", WEIGHTS_FILE),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_export_is_an_error_naming_the_file(case, good_export, tmp_path, capsys):
    folder = copy_of(good_export, tmp_path)
    breaker, phrase, names = TAMPERED[case]
    breaker(folder)
    with pytest.raises(ExportError) as e:
        load_model(folder)
    message = str(e.value)
    assert phrase in message and names in message, message
    assert "root:" not in message                  # never quotes a file that is not a spec
    assert main(["generate", str(folder), "--prompt", "hi", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err


def test_real_generate_process_prints_no_traceback(good_export, tmp_path):
    folder = copy_of(good_export, tmp_path)
    _wrong_shape(folder)
    done = subprocess.run([sys.executable, "-m", "hybridlab.cli.main", "generate", str(folder),
                           "--prompt", "hi"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "has shape [7]" in done.stderr
    assert "Traceback" not in done.stderr


def test_weights_in_another_float_precision_still_load(good_export, tmp_path):
    folder = copy_of(good_export, tmp_path)
    original = _state(folder)
    _save(folder, {k: v.half() for k, v in original.items()})
    loaded = load_model(folder).state_dict()
    for k, v in original.items():
        assert torch.equal(loaded[k], v.half().float()), k


def test_untouched_export_loads_and_generates(good_export, tmp_path, capsys):
    folder = copy_of(good_export, tmp_path)
    assert main(["generate", str(folder), "--prompt", "hi", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("hi")
    for bad, phrase in ((["--top-k", "0"], "--top-k"), (["--device", "nonsense"], "--device"),
                        (["--max-new-tokens", "10000000"], "--max-new-tokens is at most")):
        assert main(["generate", str(folder), "--prompt", "hi", *bad]) == 2
        assert phrase in capsys.readouterr().err


def test_plugins_named_by_an_export_are_never_imported(good_export, tmp_path, plugin):
    folder = copy_of(good_export, tmp_path)
    with open(folder / SPEC_FILE, "a") as f:
        f.write(f"plugins: [{PLUGIN}]\n")
    with pytest.raises(ExportError, match=f"names plugins \\({PLUGIN}\\).*import {PLUGIN}\\)"
                                          f", then call load_model again"):
        load_model(folder)
    assert not plugin.exists() and PLUGIN not in sys.modules
    # the user imports it (their decision), then the export loads
    __import__(PLUGIN)
    assert plugin.exists()
    assert load_model(folder).spec.plugins == (PLUGIN,)


# -- a database with a trained trial, made by hand (no training) ---------------------------------
def trained_db(folder: Path) -> str:
    url = f"sqlite:///{folder / 'runs.db'}"
    store = Store(url)
    torch.manual_seed(1)
    model = build_model(SPEC)
    arch = "a" * 64
    store.record_architecture(arch, name="tiny", pattern=model.spec.pattern, n_layers=2,
                              spec_yaml=dump_spec_yaml(model.spec))
    study = optuna.create_study(storage=store.optuna_storage(), study_name="s",
                                directions=["maximize"])
    study.set_metric_names(["quality"])
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    store.start_run(study_name="s", trial_id=trial._trial_id, trial_number=trial.number,
                    arch_hash=arch)
    weights = folder / "trial-0.safetensors"
    save_model(model, str(weights))
    store.add_artifact(trial_id=trial._trial_id, study_name="s", trial_number=0,
                       kind="weights", path=weights)
    study.tell(trial, 0.5)
    store.finish_run(trial._trial_id, "complete", wall_s=1.0)
    store.optuna_storage().engine.dispose()
    dispose_engines()
    return url


@pytest.fixture
def db(tmp_path) -> str:
    return trained_db(tmp_path)


def export_cli(db: str, out, *extra) -> list[str]:
    return ["export", "--db", db, "--study", "s", "--trial", "0", "--out", str(out), *extra]


def snapshot(root: Path) -> dict[str, bytes | str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_export_never_clobbers_without_force(db, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(export_cli(db, out)) == 0
    capsys.readouterr()
    (out / "notes.txt").write_text("mine")
    (out / SPEC_FILE).write_text("my own edits\n")
    before = snapshot(out)
    for extra in ([], ["--layout-only", "--d-model", "32", "--layers", "2"]):
        assert main(export_cli(db, out, *extra)) == 2
        err = capsys.readouterr().err
        assert f"{out} is not empty" in err and "--force" in err and "Traceback" not in err
        assert snapshot(out) == before
    with pytest.raises(ExportError, match="not empty"):
        from hybridlab.export.native import export_native
        export_native(Store(db, readonly=True), "s", out, trial=0)
    assert snapshot(out) == before
    # --force: the export's files are replaced, the user's other files are kept
    assert main(export_cli(db, out, "--force")) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / SPEC_FILE).read_text() != "my own edits\n"
    assert load_model(out).spec.pattern == "M*"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]     # no temporary files


def test_out_through_a_symlink_or_onto_a_file_is_refused(db, tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    parent_link = tmp_path / "parent-link"
    parent_link.symlink_to(real)
    for out in (link, parent_link / "sub", link / "a" / "b"):
        for extra in ([], ["--force"], ["--layout-only", "--d-model", "32", "--layers", "2"]):
            assert main(export_cli(db, out, *extra)) == 2
            err = capsys.readouterr().err
            assert "is a symlink" in err and "real path" in err and "Traceback" not in err
    assert list(real.iterdir()) == []              # nothing written through the links
    with pytest.raises(UnsafePath):                # an ExportError too
        ExportDir(link, force=True)
    file = tmp_path / "a-file"
    file.write_text("x")
    assert main(export_cli(db, file, "--force")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert file.read_text() == "x"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_exported_files_get_normal_permissions(db, tmp_path, umask, capsys):
    old = os.umask(umask)
    try:
        out = tmp_path / "out"
        assert main(export_cli(db, out)) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes) == {SPEC_FILE, WEIGHTS_FILE, "metrics.json", "README.md"}
    assert set(modes.values()) == {0o666 & ~umask}, modes     # model.safetensors was 0600


def test_missing_database_is_an_error(tmp_path, capsys):
    assert main(export_cli(str(tmp_path / "typo.db"), tmp_path / "out")) == 2
    assert f"no database at {tmp_path / 'typo.db'}" in capsys.readouterr().err


def _edit_stored_spec(db: str, fn) -> None:
    path = db[len("sqlite:///"):]
    con = sqlite3.connect(path)
    (text,) = con.execute("SELECT spec_yaml FROM hl_architectures").fetchone()
    con.execute("UPDATE hl_architectures SET spec_yaml = ?", (fn(text),))
    con.commit()
    con.close()


def test_plugins_named_by_a_database_are_never_imported(db, tmp_path, plugin, capsys):
    _edit_stored_spec(db, lambda text: text + f"plugins: [{PLUGIN}]\n")
    for extra in ([], ["--layout-only", "--d-model", "32", "--layers", "2"],
                  ["--format", "hf"]):
        assert main(export_cli(db, tmp_path / "out", *extra)) == 2
        err = capsys.readouterr().err
        assert f"names plugins ({PLUGIN})" in err and "never imports code named by a " \
               "database" in err and "Traceback" not in err
    assert not plugin.exists() and PLUGIN not in sys.modules


def test_an_edited_stored_spec_is_an_error(db, tmp_path, capsys):
    _edit_stored_spec(db, lambda text: text.replace("d_model: 16", "d_model: [1, 2]"))
    assert main(export_cli(db, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "the spec of trial 0 of study 's' is not a valid model spec" in err
    assert "d_model" in err and "Traceback" not in err
