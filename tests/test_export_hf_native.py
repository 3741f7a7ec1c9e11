"""`export --format hf` writes the matching transformers class whenever the model fits one: each
folder loads with transformers alone (a process where hybridlab cannot be imported, no remote
code) and gives hybridlab's logits and greedy tokens.

Tolerance: the logits agree to float32 rounding -- |hf - hybridlab| <= 2e-5 * max(1, max|logit|).
The two sides compute the same float32 math in different orders (transformers' chunked SSD and
sequential scans vs hybridlab's references, SDPA vs eager attention, fused vs split q/k/v); the
largest difference measured over these models (three seeds, 64 tokens) is 3e-6 of the logit
scale, so the bound leaves ~7x headroom while any mapping mistake (a swapped norm, a transposed expert, a wrong
eps) moves logits by 1e-3 or more. Every norm weight and bias is perturbed away from its
initial 1 or 0 so a missing or swapped one would show.
"""
from __future__ import annotations

import json

import pytest
import torch

import hybridlab
from hybridlab.export.generate import generate_tokens

from test_export_hf_isolated import assert_same_greedy, run_isolated

transformers = pytest.importorskip("transformers")

NUL = 0
INIT = {"std": 0.1}        # larger than the default 0.02: random models then say varied things

ZAMBA2_MAMBA = {"type": "mamba2", "d_state": 16, "headdim": 16, "chunk_size": 8,
                "dt_limit": [0.001, None], "bias": True}
ZAMBA2_SHARED = {"type": "shared_attention", "structure": "zamba2", "n_heads": 4, "n_kv_heads": 2,
                 "rope_theta": 1000.0, "concat_embeddings": True, "mlp_hidden_mult": 2.0,
                 "mlp_activation": "geglu",
                 "mamba": {k: v for k, v in ZAMBA2_MAMBA.items() if k != "type"}}

SPECS = {
    "MambaForCausalLM": {
        "model": {"d_model": 48, "vocab_size": 256, "init": {"std": 0.3}},
        "blocks": {"M": {"type": "mamba1", "d_state": 8, "d_conv": 3, "expand": 2,
                         "bias": True, "dt_rank": 5}},
        "pattern": "MMM"},
    "Mamba2ForCausalLM": {
        "model": {"d_model": 64, "vocab_size": 300, "tie_embeddings": False, "init": INIT},
        "blocks": {"M": {"type": "mamba2", "d_state": 16, "headdim": 16, "ngroups": 2,
                         "chunk_size": 8, "dt_limit": [0.0, 5.0]}},
        "pattern": "MMM"},
    "JambaForCausalLM": {
        "model": {"d_model": 64, "vocab_size": 256, "tie_embeddings": False, "norm_eps": 1e-6,
                  "init": INIT},
        "blocks": {"M": {"type": "mamba1", "d_state": 8, "expand": 2, "dt_bc_norm": True},
                   "*": {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "rope": False,
                         "head_dim": 20},
                   "-": {"type": "mlp", "hidden_mult": 2.0},
                   "E": {"type": "moe", "n_experts": 4, "top_k": 2, "hidden_mult": 2.0,
                         "normalize_top_k": False}},
        "pattern": "M- ME *- ME M- ME"},
    "NemotronHForCausalLM": {
        "model": {"d_model": 64, "vocab_size": 256, "init": INIT},
        "blocks": {"M": {"type": "mamba2", "d_state": 16, "headdim": 16, "ngroups": 2,
                         "chunk_size": 8},
                   "*": {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "rope": False,
                         "head_dim": 24},
                   "-": {"type": "mlp", "activation": "relu2", "hidden_mult": 2.0},
                   "E": {"type": "moe", "n_experts": 4, "top_k": 2, "hidden_mult": 1.0,
                         "activation": "relu2", "score": "sigmoid", "n_shared_experts": 1}},
        "pattern": "ME M*- ME M-"},
    "BambaForCausalLM": {
        "model": {"d_model": 64, "vocab_size": 256, "norm_eps": 1e-6, "init": INIT},
        "blocks": {"M": {"type": "mamba2", "d_state": 16, "headdim": 16, "ngroups": 2,
                         "chunk_size": 8, "norm_eps": 1e-6},
                   "*": {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "head_dim": 24,
                         "rope_fraction": 0.5, "rope_theta": 500.0, "qkv_bias": True},
                   "-": {"type": "mlp", "hidden_mult": 2.0, "bias": True}},
        "pattern": "M- M- *- M-"},
    "GraniteMoeHybridForCausalLM": {
        "model": {"d_model": 64, "vocab_size": 256, "init": INIT},
        "blocks": {"M": {"type": "mamba2", "d_state": 16, "headdim": 16, "chunk_size": 8},
                   "*": {"type": "attention", "n_heads": 4, "n_kv_heads": 1, "head_dim": 24,
                         "rope_theta": 500.0},
                   "E": {"type": "moe", "n_experts": 4, "top_k": 2, "hidden_mult": 1.0,
                         "n_shared_experts": 1}},
        "pattern": "ME ME *E ME"},
    "FalconH1ForCausalLM": {
        "model": {"d_model": 64, "vocab_size": 256, "init": INIT},
        "blocks": {"P": {"type": "parallel", "combine": "sum", "branch_norm": False,
                         "attention": {"n_heads": 4, "n_kv_heads": 2, "head_dim": 24,
                                       "rope_theta": 1000.0},
                         "ssm": {"type": "mamba2", "d_state": 16, "headdim": 16, "ngroups": 2,
                                 "d_ssm": 96, "chunk_size": 8, "norm_before_gate": True}},
                   "-": {"type": "mlp", "hidden_mult": 2.0}},
        "pattern": "P- P- P-"},
    "Zamba2ForCausalLM": {
        "model": {"d_model": 64, "vocab_size": 256, "init": INIT},
        "blocks": {"M": {"type": "mamba2", "d_state": 16, "headdim": 16, "chunk_size": 8,
                         "dt_limit": [0.001, None]},
                   "S": {"type": "shared_attention", "structure": "zamba2", "n_heads": 4,
                         "adapter_rank": 8, "concat_embeddings": True, "mlp_hidden_mult": 2.0,
                         "mamba": {"d_state": 16, "headdim": 16, "chunk_size": 8,
                                   "dt_limit": [0.001, None]}}},
        "pattern": "M M S M M S"},
    "Zamba2ForCausalLM/two-blocks-rope": {
        "model": {"d_model": 64, "vocab_size": 256, "tie_embeddings": False, "init": INIT},
        "blocks": {"M": ZAMBA2_MAMBA,
                   "A": ZAMBA2_SHARED, "B": ZAMBA2_SHARED},
        "pattern": "M A M B M A"},
    "GraniteMoeHybridForCausalLM/dense-nope": {
        "model": {"d_model": 64, "vocab_size": 256, "init": INIT},
        "blocks": {"M": {"type": "mamba2", "d_state": 16, "headdim": 16, "chunk_size": 8},
                   "*": {"type": "attention", "n_heads": 4, "n_kv_heads": 1, "rope": False},
                   "-": {"type": "mlp", "hidden_mult": 2.0}},
        "pattern": "M- *- M-"},
}


def build(data: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = hybridlab.build_model(hybridlab.load_spec({"name": "hf-test", **data})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    return model


def scale(logits: torch.Tensor) -> float:
    return max(1.0, float(logits.abs().max()))


def greedy(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    vocab = model.spec.model.vocab_size
    return generate_tokens(model, prompt, new, allowed_vocab=256 if vocab > 256 else None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every class's model exported and loaded once, in one isolated process."""
    from hybridlab.export.hf import write_hf

    root = tmp_path_factory.mktemp("hf-native")
    jobs, models = [], {}
    gen = torch.Generator().manual_seed(1)
    for key, data in SPECS.items():
        model = build(data)
        folder = root / key.replace("/", "-")
        result = write_hf(folder, model)
        x = torch.randint(0, 256, (2, 24), generator=gen)
        prompt = torch.randint(0, 256, (2, 6), generator=gen)
        models[key] = (model, x, prompt, result)
        jobs.append({"dir": str(folder), "inputs": x.tolist(), "prompt": prompt.tolist(),
                     "new_tokens": 12, "pipeline": "def f(x):" if key == "JambaForCausalLM"
                     else None})
    done = run_isolated(jobs)
    return {key: (models[key], job) for key, job in zip(SPECS, done)}


@pytest.mark.parametrize("key", list(SPECS))
def test_native_class_loads_alone_with_same_logits_and_tokens(exported, key):
    (model, x, prompt, result), job = exported[key]
    arch = key.split("/")[0]
    assert job["class"] == arch and job["module"].startswith("transformers.models.")
    config = json.loads((result.path / "config.json").read_text())
    assert config["architectures"] == [arch] and "auto_map" not in config
    with torch.no_grad():
        ours = model(x)
    diff = float((job["logits"].float() - ours).abs().max())
    assert diff <= 2e-5 * scale(ours), (arch, diff, scale(ours))
    expected = greedy(model, prompt, 12)
    got = job["tokens"]
    assert_same_greedy(got, expected, prompt.shape[1])
    assert len(set(got[:, prompt.shape[1]:].flatten().tolist())) >= 4      # not a constant run


def test_byte_level_folder_ships_tokenizer_and_generation_ids(exported):
    (model, _, _, result), job = exported["JambaForCausalLM"]
    names = {p.name for p in result.files}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "generation_config.json", "config.json", "model.safetensors"} <= names
    gen = json.loads((result.path / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (0, 0, 0)
    # the pipeline ran in the isolated process: prompt bytes in, hybridlab's greedy bytes out
    prompt = "def f(x):"
    out = job["pipeline"][0]["generated_text"]
    ids = greedy(model, torch.tensor([list(prompt.encode())]), 8)[0].tolist()
    assert NUL not in ids                    # byte 0 is eos: the pipeline would stop there
    assert out == bytes(ids).decode("utf-8", errors="replace")


def test_vocab_above_bytes_suppresses_the_unused_ids(exported):
    (model, _, prompt, result), job = exported["Mamba2ForCausalLM"]
    gen = json.loads((result.path / "generation_config.json").read_text())
    assert gen["suppress_tokens"] == list(range(256, 300))
    assert int(job["tokens"].max()) < 256
