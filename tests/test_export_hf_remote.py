"""The fallback HF export: when no transformers class fits (Mamba-3, meta tokens and parallel
hybrid heads, shared attention, plugin blocks), the folder carries a trust_remote_code package
made of hybridlab's own source -- copied verbatim, only import statements rewritten -- and
transformers loads it with trust_remote_code=True in a process where hybridlab cannot be
imported: same logits (the same code on the same weights: measured bit-identical; bound 1e-6 of
the logit scale), same greedy tokens through the recurrent step."""
from __future__ import annotations

import ast
import json
import sys
import textwrap

import pytest
import torch
import yaml

import hybridlab
from hybridlab.composer.loader import load_spec
from hybridlab.export.generate import generate_tokens

from test_export_hf_isolated import assert_same_greedy, run_isolated
from ui_fixtures import REPO

transformers = pytest.importorskip("transformers")

PLUGIN = "hl_hf_test_shift_mixer"
PLUGIN_SOURCE = textwrap.dedent('''
    """A test plugin: a token-shift mixer, registered through the hybridlab facade."""
    from dataclasses import dataclass

    import torch
    from torch import nn

    import hybridlab
    from hybridlab.blocks import Block, BlockConfig


    @dataclass
    class ShiftConfig(BlockConfig):
        mix: float = 0.25


    @hybridlab.register_block("hf_test_shift")
    class Shift(Block):
        Config = ShiftConfig
        kind = "mixer"

        def __init__(self, cfg, ctx):
            super().__init__(cfg, ctx)
            self.proj = nn.Linear(ctx.d_model, ctx.d_model, bias=False)
            nn.init.normal_(self.proj.weight, std=ctx.init_std)

        def forward(self, x, ctx):
            prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
            return self.proj(self.cfg.mix * prev + (1 - self.cfg.mix) * x)

        def init_state(self, batch_size, max_len, device=None, dtype=None):
            w = self.proj.weight
            return {"prev": torch.zeros(batch_size, w.shape[1], device=device or w.device,
                                        dtype=dtype or w.dtype)}

        def step(self, x_t, state, ctx):
            y = self.proj(self.cfg.mix * state["prev"] + (1 - self.cfg.mix) * x_t)
            return y, {"prev": x_t}
''')

CASES = ["mamba3-tiny", "hymba-tiny", "zamba2-tiny", "plugin"]


def model_for(case: str, plugin_dir):
    torch.manual_seed(0)
    if case == "plugin":
        (plugin_dir / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
        sys.path.insert(0, str(plugin_dir))
        spec = load_spec({"name": "with-plugin", "plugins": [PLUGIN],
                          "model": {"d_model": 32, "vocab_size": 256, "init": {"std": 0.1}},
                          "blocks": {"X": {"type": "hf_test_shift"},
                                     "M": {"type": "mamba2", "d_state": 8, "headdim": 16,
                                           "chunk_size": 8}},
                          "pattern": "XMX"}, allow_plugins=True)
    else:
        data = yaml.safe_load((REPO / "examples" / f"{case}.yaml").read_text())
        data["model"]["init"] = {"std": 0.3 if case == "hymba-tiny" else 0.1}
        spec = load_spec(data)
    model = hybridlab.build_model(spec).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "beta" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from hybridlab.export.hf import write_hf

    root = tmp_path_factory.mktemp("hf-remote")
    gen = torch.Generator().manual_seed(3)
    jobs, made = [], {}
    try:
        for case in CASES:
            model = model_for(case, root)
            result = write_hf(root / case, model)
            x = torch.randint(0, 256, (2, 20), generator=gen)
            prompt = torch.randint(0, 256, (2, 5), generator=gen)
            made[case] = (model, x, prompt, result)
            jobs.append({"dir": str(result.path), "inputs": x.tolist(),
                         "prompt": prompt.tolist(), "new_tokens": 10, "trust_remote_code": True,
                         "pipeline": "import os" if case == "mamba3-tiny" else None})
        done = run_isolated(jobs)
    finally:
        if str(root) in sys.path:
            sys.path.remove(str(root))
    return {case: (made[case], job) for case, job in zip(CASES, done)}


@pytest.mark.parametrize("case", CASES)
def test_fallback_loads_without_hybridlab_with_same_logits_and_tokens(exported, case):
    (model, x, prompt, result), job = exported[case]
    config = json.loads((result.path / "config.json").read_text())
    assert config["model_type"] == "hybridlab"
    assert config["auto_map"] == {"AutoConfig": "configuration_hybridlab.HybridLabConfig",
                                  "AutoModelForCausalLM": "modeling_hybridlab.HybridLabForCausalLM"}
    assert job["class"] == "HybridLabForCausalLM"
    assert job["module"].startswith("transformers_modules.")        # the folder's own code
    assert any("no transformers class fits" in n for n in result.notes)
    with torch.no_grad():
        ours = model(x)
    scale = max(1.0, float(ours.abs().max()))
    assert float((job["logits"] - ours).abs().max()) <= 1e-6 * scale
    expected = generate_tokens(model, prompt, 10)
    assert_same_greedy(job["tokens"], expected, prompt.shape[1])
    assert len(set(expected[:, prompt.shape[1]:].flatten().tolist())) >= 3


def test_fallback_pipeline_generates_text(exported):
    (model, _, _, _), job = exported["mamba3-tiny"]
    ids = generate_tokens(model, torch.tensor([list(b"import os")]), 8)[0].tolist()
    assert 0 not in ids
    assert job["pipeline"][0]["generated_text"] == bytes(ids).decode("utf-8", errors="replace")


def without_imports(text: str) -> list[str]:
    """The lines of a module that are not import statements (nor the copy's header)."""
    tree = ast.parse(text)
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip.update(range(node.lineno, node.end_lineno + 1))
    return [line for i, line in enumerate(text.splitlines(), 1)
            if i not in skip and not line.startswith("# Copied verbatim from")
            and not line.startswith("# only import statements")]


def test_copied_sources_are_hybridlabs_own(exported):
    """Every copied module is the hybridlab module it names, byte for byte outside import
    statements: the remote code cannot drift from the blocks, builder and reference kernels."""
    (_, _, _, result), _ = exported["zamba2-tiny"]
    copied = 0
    for path in sorted(result.path.glob("*.py")):
        text = path.read_text()
        first = text.splitlines()[0]
        if not first.startswith("# Copied verbatim from hybridlab/"):
            assert path.name in ("hl_kernels.py", "hl_plugins.py", "hl_facade.py"), path.name
            continue
        source = REPO / first.split()[4]
        assert without_imports(text) == without_imports(source.read_text()), path.name
        copied += 1
    names = {p.name for p in result.path.glob("*.py")}
    assert {"modeling_hybridlab.py", "configuration_hybridlab.py", "hl_blocks_mamba2.py",
            "hl_blocks_shared_attention.py", "hl_composer_builder.py",
            "hl_kernels_ops_ssd_reference.py"} <= names
    assert copied >= 15
