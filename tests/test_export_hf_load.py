"""Back from transformers: load_model reads every HF export -- native classes through the
reversed weight mapping -- and save_pretrained copies of them, which keep config.json and the
weights but not spec.yaml; registration works in any import order."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hybridlab.errors import ExportError
from hybridlab.export.native import load_model

from test_export_hf_native import SPECS, build
from ui_fixtures import REPO

pytest.importorskip("transformers")

REMOTE = {"model": {"d_model": 32, "vocab_size": 256},
          "blocks": {"M": {"type": "mamba3", "d_state": 16, "headdim": 16}}, "pattern": "MM"}
CASES = ["JambaForCausalLM", "NemotronHForCausalLM", "Zamba2ForCausalLM/two-blocks-rope",
         "GraniteMoeHybridForCausalLM", "FalconH1ForCausalLM", "remote"]


def logits(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("case", CASES)
def test_load_model_reads_the_export_and_its_save_pretrained_copy(case, tmp_path):
    from transformers import AutoModelForCausalLM

    from hybridlab.export.hf import write_hf

    model = build(REMOTE if case == "remote" else SPECS[case])
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    folder = write_hf(tmp_path / "export", model).path
    # the export itself: spec.yaml + transformers-named weights, mapped back exactly
    assert torch.equal(logits(load_model(folder), x), logits(model, x))
    # a save_pretrained copy: no spec.yaml; the spec comes from config.json
    hf = AutoModelForCausalLM.from_pretrained(folder)
    copy = tmp_path / "copy"
    hf.save_pretrained(copy)
    assert not (copy / "spec.yaml").exists() and (copy / "config.json").is_file()
    again = load_model(copy)
    assert torch.equal(logits(again, x), logits(model, x))
    untied = model.spec.model.tie_embeddings and not again.spec.model.tie_embeddings
    head = model.embed.weight.numel() if untied else 0    # NemotronH has no tied embeddings
    assert again.num_parameters() == model.num_parameters() + head


def test_a_copy_with_settings_hybridlab_lacks_is_refused_by_name(tmp_path):
    from hybridlab.export.hf import write_hf

    folder = write_hf(tmp_path / "export", build(SPECS["GraniteMoeHybridForCausalLM"])).path
    (folder / "spec.yaml").unlink()
    config = json.loads((folder / "config.json").read_text())
    config["embedding_multiplier"] = 12.0
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="embedding_multiplier = 12.0: hybridlab has no muP"):
        load_model(folder)


def test_changed_weights_hybridlab_cannot_express_are_refused(tmp_path):
    """An output-projection bias hybridlab lacks is exported as zeros; a copy where it is no
    longer zero cannot be read back faithfully."""
    from safetensors.torch import load_file, save_file

    from hybridlab.export.hf import write_hf

    folder = write_hf(tmp_path / "export", build(SPECS["BambaForCausalLM"])).path
    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if k.endswith("self_attn.o_proj.bias"))
    weights[name] = weights[name] + 0.5
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExportError, match=f"{name} has non-zero entries where hybridlab has no"):
        load_model(folder)


@pytest.mark.parametrize("code", [
    "import hybridlab\nfrom hybridlab.export.hf import write_hf\n",
    "import hybridlab.export.hf\n",
    "import hybridlab\nimport transformers\n",
    "import transformers\nimport hybridlab\n",
])
def test_registration_in_any_import_order_without_warnings(code):
    check = code + ("from transformers import AutoConfig, AutoModelForCausalLM\n"
                    "config = AutoConfig.for_model('hybridlab')\n"
                    "print(type(config).__module__, type(config).__name__)\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", check], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["hybridlab.export.hf", "HybridLabConfig"]
    assert "partially initialized" not in proc.stderr
