"""Exports of searched models: native round trip (identical logits), Hugging Face folder
(transformers' Auto classes, generate through the recurrent step), scaled layouts, generation,
and safety (nothing written outside the export folder, whatever the study is called)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

import hybridlab
from hybridlab.cli.main import main
from hybridlab.errors import ExportError, SpecError
from hybridlab.storage import Store

from ui_fixtures import MALICIOUS, REPO, ui_database

try:
    import transformers  # noqa: F401
    HAVE_TRANSFORMERS = True
except ImportError:
    HAVE_TRANSFORMERS = False
needs_transformers = pytest.mark.skipif(
    not HAVE_TRANSFORMERS, reason="transformers is not installed (pip install transformers)")


@pytest.fixture
def db():
    info = ui_database()
    return {"url": info["url"], "store": Store(info["url"], readonly=True)}


def ids(n=2, length=24, vocab=256):
    return torch.randint(0, vocab, (n, length))


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with (is_link, size, mtime_ns) -- to prove nothing else changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (p.is_symlink(), st.st_size, st.st_mtime_ns)
    return out


# -- native --------------------------------------------------------------------------------------
def test_native_round_trip_identical_logits(db, tmp_path):
    from safetensors.torch import load_file

    from hybridlab.export.native import export_native, load_model, load_trial_model
    from hybridlab.export.source import find_trial

    result = export_native(db["store"], "ui-a", tmp_path / "best", best="quality")
    src = find_trial(db["store"], "ui-a", best="quality")
    assert result.trial == src.number
    assert sorted(p.name for p in result.files) == ["README.md", "metrics.json",
                                                    "model.safetensors", "spec.yaml"]
    loaded = load_model(tmp_path / "best")
    assert not loaded.training
    reference = load_trial_model(src)
    # and straight from the search's own artifact file
    direct = hybridlab.build_model(src.spec)
    direct.load_state_dict(load_file(str(src.weights)), strict=False)
    x = ids()
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))
        assert torch.equal(loaded(x), direct(x))
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    detail = db["store"].trial_detail("ui-a", src.number)
    assert metrics["study"] == "ui-a" and metrics["trial"] == src.number
    assert {o["metric"]: o["value"] for o in metrics["objectives"]} == detail["values"]
    assert metrics["scores"] == detail["scores"]
    assert metrics["sizes"]["params_total"] == sum(p.numel() for p in loaded.parameters())
    assert metrics["pattern"] == detail["pattern"]
    card = (tmp_path / "best" / "README.md").read_text()
    for needle in (detail["pattern"], "## Sizes", "## How to load", "hybridlab.load_model",
                   metrics["weights_sha256"], "bytes_lm"):
        assert needle in card


def test_load_model_refuses_weights_of_another_model(db, tmp_path):
    from hybridlab.export.native import export_native, load_model

    export_native(db["store"], "ui-a", tmp_path / "a", best="quality")
    spec = yaml.safe_load((tmp_path / "a" / "spec.yaml").read_text())
    spec["model"]["d_model"] = 48
    (tmp_path / "a" / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ExportError, match="does not match.*shape"):
        load_model(tmp_path / "a")
    with pytest.raises(ExportError, match="no spec.yaml"):
        load_model(tmp_path)


def test_choosing_trials_and_user_errors(db, tmp_path):
    from hybridlab.export.native import export_native
    from hybridlab.export.source import find_trial
    from hybridlab.storage import views

    rows = [r for r in views.flat_trials(db["store"], "ui-a") if r["state"] == "COMPLETE"]
    assert find_trial(db["store"], "ui-a", best="quality").number == \
        min(rows, key=lambda r: (-r["quality"], r["number"]))["number"]
    assert find_trial(db["store"], "ui-a", best="params_total").number == \
        min(rows, key=lambda r: (r["params_total"], r["number"]))["number"]
    assert find_trial(db["store"], "ui-a", best="cost/decode_tokens_per_s").number == \
        max(rows, key=lambda r: (r["cost/decode_tokens_per_s"], -r["number"]))["number"]
    cases = [
        (dict(study="nope", trial=0), "no study 'nope'", "ui-a"),
        (dict(study="ui-a", trial=99), "no trial 99", "trials: 0..6"),
        (dict(study="ui-a", best="bogus"), "bogus", "quality"),
        (dict(study="ui-a", trial=1), "no saved weights", "--layout-only"),   # infeasible
        (dict(study="ui-a", trial=1, best="quality"), "exactly one", ""),
    ]
    for kwargs, message, hint in cases:
        study = kwargs.pop("study")
        with pytest.raises(SpecError) as e:
            export_native(db["store"], study, tmp_path / "x", **kwargs)
        assert message in e.value.problems[0].message
        assert hint in e.value.problems[0].hint
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_changed_weights_file_is_refused(db, tmp_path, monkeypatch):
    from hybridlab.export.native import export_native
    from hybridlab.export.source import find_trial

    src = find_trial(db["store"], "ui-b", trial=0)
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(src.weights.read_bytes() + b" ")
    detail = dict(src.detail)
    detail["artifacts"] = [dict(a, path=str(copy)) if a["kind"] == "weights" else a
                           for a in detail["artifacts"]]
    import hybridlab.export.source as source
    from hybridlab.export.source import weights_file
    monkeypatch.setattr(source, "reading_roots", lambda *a: [tmp_path / "nowhere"])
    with pytest.raises(SpecError, match="missing or changed"):
        weights_file(db["store"], detail, "ui-b", 0)
    monkeypatch.undo()
    # a moved database folder: the recorded path is gone, the conventional place is used
    detail["artifacts"] = [dict(a, path=str(tmp_path / "gone.safetensors"))
                           if a["kind"] == "weights" else a for a in detail["artifacts"]]
    path, sha = weights_file(db["store"], detail, "ui-b", 0)
    assert path == src.weights and sha == src.weights_sha256
    assert export_native(db["store"], "ui-b", tmp_path / "ok", trial=0).trial == 0


# -- CLI: export, generate -----------------------------------------------------------------------
def test_cli_export_and_generate_bytes(db, tmp_path, capsys):
    from hybridlab.export.generate import generate_text
    from hybridlab.export.native import load_model

    out = tmp_path / "cli"
    assert main(["export", "--db", db["url"], "--study", "ui-a", "--best", "quality",
                 "--out", str(out)]) == 0
    assert "exported ui-a trial" in capsys.readouterr().out
    assert main(["generate", str(out), "--prompt", "def f(", "--max-new-tokens", "12"]) == 0
    text = capsys.readouterr().out
    new = generate_text(load_model(out), "def f(", max_new_tokens=12)
    assert text == "def f(" + new + "\n"
    assert len(new.encode("utf-8", errors="surrogateescape")) >= 1
    # sampling is reproducible with a seed
    runs = []
    for _ in range(2):
        assert main(["generate", str(out), "--prompt", "x", "--max-new-tokens", "8",
                     "--temperature", "0.9", "--top-k", "20", "--seed", "3"]) == 0
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1]
    # user errors: exit 2 with a message, never a traceback
    assert main(["generate", str(tmp_path), "--prompt", "x"]) == 2
    assert "not a hybridlab export" in capsys.readouterr().err
    assert main(["export", "--db", db["url"], "--study", "ui-a", "--trial", "1",
                 "--out", str(tmp_path / "y")]) == 2
    assert "no saved weights" in capsys.readouterr().err
    assert main(["export", "--db", db["url"], "--study", "ui-a", "--trial", "0",
                 "--out", str(tmp_path / "y"), "--d-model", "64"]) == 2
    assert "--layout-only" in capsys.readouterr().err
    assert main(["export", "--db", db["url"], "--study", "ui-a", "--trial", "0",
                 "--out", str(tmp_path / "y"), "--layout-only"]) == 2
    assert "--d-model" in capsys.readouterr().err


def test_generate_needs_a_byte_vocabulary(tmp_path, capsys):
    from hybridlab.export.native import write_native
    model = hybridlab.build_model({"model": {"d_model": 16, "vocab_size": 64},
                                   "blocks": {"M": {"type": "mamba2", "d_state": 4,
                                                    "headdim": 8}},
                                   "pattern": "MM"})
    write_native(tmp_path / "small", model)
    assert main(["generate", str(tmp_path / "small"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "model.vocab_size" in err and "256" in err


def test_generation_follows_the_forward_pass():
    """Greedy decoding through ``step`` picks the argmax of the parallel forward's logits."""
    from hybridlab.export.generate import generate_tokens

    spec = hybridlab.load_spec(REPO / "examples" / "hybrid-small.yaml")
    model = hybridlab.build_model(spec).eval()
    prompt = ids(1, 8, spec.model.vocab_size)
    out = generate_tokens(model, prompt, max_new_tokens=8)
    assert out.shape == (1, 16) and torch.equal(out[:, :8], prompt)
    with torch.no_grad():
        logits = model(out)
    for t in range(8, 16):
        top2 = torch.topk(logits[0, t - 1], 2).values
        if float(top2[0] - top2[1]) > 1e-3:      # no near-tie: the choice is unambiguous
            assert int(out[0, t]) == int(logits[0, t - 1].argmax())


# -- layout only ---------------------------------------------------------------------------------
def test_cli_layout_only(db, tmp_path, capsys):
    from hybridlab.composer import convert

    out = tmp_path / "layout"
    assert main(["export", "--db", db["url"], "--study", "ui-a", "--trial", "5", "--out",
                 str(out), "--layout-only", "--d-model", "512", "--layers", "12"]) == 0
    spec = hybridlab.load_spec(out / "spec.yaml")
    assert spec.model.d_model == 512
    mixers = [layer for layer in spec.layers if layer.type not in ("mlp", "moe")]
    assert len(mixers) == 12
    assert (out / "megatron_pattern.txt").read_text().strip() == convert.to_megatron(spec)
    assert json.loads((out / "hf_layer_types.json").read_text()) == convert.to_hf(spec)
    info = json.loads((out / "layout.json").read_text())
    assert info["pattern"] == spec.pattern and info["source_pattern"] == "M-*-M-"
    # trial 5 is M-*-M- (2 Mamba : 1 attention, MLP after each): the ratio is kept
    assert sum(1 for m in mixers if m.type == "attention") == 4
    assert info["sizes"]["params_total"] == sum(
        p.numel() for p in hybridlab.build_model(spec, device="meta").parameters())
    # works for trials without weights (the layout is recorded for every built candidate)
    assert main(["export", "--db", db["url"], "--study", "ui-a", "--trial", "1", "--out",
                 str(tmp_path / "l2"), "--layout-only", "--d-model", "64", "--layers", "4"]) == 0


@pytest.mark.parametrize("name", ["hybrid-small", "jamba-tiny", "granite4-h-tiny",
                                  "nemotron-h-tiny", "zamba2-tiny", "hymba-tiny",
                                  "transformer-pp-tiny", "mamba3-tiny"])
def test_scale_spec_examples(name):
    from hybridlab.blocks.registry import get_block
    from hybridlab.export.layout import scale_spec

    spec = hybridlab.load_spec(REPO / "examples" / f"{name}.yaml")
    text, info = scale_spec(spec, d_model=384, layers=20)
    scaled = hybridlab.load_spec(text)
    assert scaled.model.d_model == 384
    kinds = [get_block(layer.type).kind for layer in scaled.layers]
    assert kinds.count("mixer") == 20
    assert set(layer.type for layer in scaled.layers) == set(layer.type for layer in spec.layers)
    # at the original size a ratio layout comes back unchanged
    n_mixers = sum(1 for layer in spec.layers if get_block(layer.type).kind == "mixer")
    same, info = scale_spec(spec, d_model=spec.model.d_model, layers=n_mixers)
    if not info["notes"]:
        assert hybridlab.load_spec(same).pattern == spec.pattern.replace("|", "")


# -- safety --------------------------------------------------------------------------------------
def test_malicious_study_name_never_escapes(db, tmp_path):
    from hybridlab.export.bundle import build_bundle
    from hybridlab.export.native import bundle_name, export_native
    from hybridlab.export.safe import ExportDir, UnsafePath, safe_component

    assert safe_component(MALICIOUS) == "x"
    assert safe_component("../../") == "export" and safe_component(".hidden/..") == "hidden"
    assert bundle_name(MALICIOUS, 0) == "x-trial-0"
    root = tmp_path / "root"
    out = root / "a" / "b" / "out"
    out.mkdir(parents=True)
    victim = root / "victim.txt"
    victim.write_text("keep me")
    (out / "spec.yaml").symlink_to(victim)            # a trap: must be replaced, not followed
    before = tree(root)
    with pytest.raises(ExportError, match="not empty"):     # never clobbered without force
        export_native(db["store"], MALICIOUS, out, trial=0)
    assert tree(root) == before
    result = export_native(db["store"], MALICIOUS, out, trial=0, force=True)
    after = tree(root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(k == "a/b/out" or k.startswith("a/b/out/") for k in changed), changed
    assert victim.read_text() == "keep me"
    assert not (out / "spec.yaml").is_symlink()
    assert all(p.parent == out.resolve() for p in result.files)
    assert "study `../../x`" in (out / "README.md").read_text()     # shown as text only
    with pytest.raises(UnsafePath):
        ExportDir(out, force=True).write_text("../evil.txt", "x")
    with pytest.raises(UnsafePath):
        ExportDir(out, force=True).write_text("sub/evil.txt", "x")
    # the zipped bundle: one safe top folder, nothing else
    before = tree(root)
    zip_path, _ = build_bundle(db["store"], MALICIOUS, root / "work", trial=0)
    assert zip_path.name == "x-trial-0.zip"
    assert all(k.startswith("work") for k in set(tree(root)) - set(before))
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert names and all(n.startswith("x-trial-0/") and ".." not in n for n in names)


# -- Hugging Face --------------------------------------------------------------------------------
HF_CHECK = r"""
import json, sys, torch
import hybridlab.export.hf_hook as hook
hook.install()
assert "transformers" not in sys.modules, "install() must not import transformers"
from transformers import AutoModelForCausalLM
import hybridlab
from hybridlab.export.native import load_model
from hybridlab.export.generate import generate_tokens
hf = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
native = load_model(sys.argv[2])
x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    same = torch.equal(hf(x).logits, native(x))
    out = hf.generate(x, max_new_tokens=6, do_sample=False)
print(json.dumps({"class": type(hf).__name__, "same_logits": same,
                  "same_generate": torch.equal(out, generate_tokens(native, x, 6)),
                  "shape": list(out.shape)}))
"""


@needs_transformers
def test_hf_export_loads_with_auto_classes_and_generates(db, tmp_path, capsys):
    from hybridlab.export.native import load_model

    hf_dir, native_dir = tmp_path / "hf", tmp_path / "native"
    for fmt, out in (("hf", hf_dir), ("native", native_dir)):
        assert main(["export", "--db", db["url"], "--study", "ui-b", "--best", "quality",
                     "--out", str(out), "--format", fmt]) == 0
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["model_type"] == "hybridlab" and config["architectures"] == \
        ["HybridLabForCausalLM"]
    assert hybridlab.load_spec(config["spec_yaml"]).pattern == config["hybrid_pattern"]
    assert "AutoModelForCausalLM" in (hf_dir / "README.md").read_text()
    # the native loader reads the HF folder too
    x = ids()
    with torch.no_grad():
        assert torch.equal(load_model(hf_dir)(x), load_model(native_dir)(x))
    # a fresh interpreter: the import hook registers the classes when transformers is imported
    proc = subprocess.run([sys.executable, "-c", HF_CHECK, str(hf_dir), str(native_dir)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"class": "HybridLabForCausalLM", "same_logits": True,
                      "same_generate": True, "shape": [2, 22]}


@needs_transformers
def test_hf_registration_either_import_order():
    code = ("import sys, transformers\n"
            "import hybridlab.export.hf_hook as hook\n"
            "hook.install()\n"
            "from transformers import AutoConfig\n"
            "print(type(AutoConfig.for_model('hybridlab')).__name__, hook.installed())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["HybridLabConfig", "False"]


def test_hook_costs_nothing_without_transformers():
    code = ("import sys, hybridlab.export.hf_hook as hook\n"
            "hook.install(); hook.install()\n"
            "print('transformers' in sys.modules, hook.installed(),"
            " sum(isinstance(f, hook.TransformersHook) for f in sys.meta_path))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False", "True", "1"]


@needs_transformers
@pytest.mark.parametrize("name,untie", [("zamba2-tiny", False), ("hymba-tiny", False),
                                        ("nemotron-h-tiny", False), ("jamba-tiny", True)])
def test_hf_any_layout_round_trips(tmp_path, name, untie):
    """Shared attention blocks, meta tokens, parallel blocks, flat FFN layers, untied heads:
    the HF folder with hybridlab's own classes (``native=False``: no transformers class, even
    where one fits) gives the same logits and the same generated tokens."""
    from transformers import AutoModelForCausalLM

    from hybridlab.export.generate import generate_tokens
    from hybridlab.export.hf import register, write_hf

    register()
    data = yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text())
    if untie:
        data["model"]["tie_embeddings"] = False
    model = hybridlab.build_model(hybridlab.load_spec(data)).eval()
    write_hf(tmp_path, model, native=False)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = ids(1, 10, model.spec.model.vocab_size)
    with torch.no_grad():
        assert torch.equal(hf(x).logits, model(x))
        assert torch.equal(hf.generate(x, max_new_tokens=5, do_sample=False),
                           generate_tokens(model, x, 5))
    config = json.loads((tmp_path / "config.json").read_text())
    from hybridlab.composer.convert import to_hf
    assert config["hybridlab_layer_types"] == to_hf(model.spec)
    assert config["tie_word_embeddings"] is model.spec.model.tie_embeddings
