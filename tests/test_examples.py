"""Every spec in examples/: it loads, builds, trains a step, decodes exactly like forward and is
causal; the published-scale specs reproduce their public figures through `summarize` quickly."""
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import hybridlab
from hybridlab.composer.builder import build_model
from hybridlab.composer.summary import summarize



EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PUBLISHED = {"jamba-v0.1.yaml", "nemotron-h-8b.yaml"}
EXPECTED = {"jamba-tiny.yaml", "zamba2-tiny.yaml", "hymba-tiny.yaml", "nemotron-h-tiny.yaml",
            "granite4-h-tiny.yaml", "mamba1-tiny.yaml", "mamba2-tiny.yaml", "mamba3-tiny.yaml",
            "transformer-pp-tiny.yaml", "hybrid-small.yaml", "mamba3-mimo-tiny.yaml"} | PUBLISHED
MODEL_SPECS = sorted(p.name for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("search-"))
TINY = [name for name in MODEL_SPECS if name not in PUBLISHED]


def load(name):
    return hybridlab.load_spec(EXAMPLES / name)


def test_all_expected_examples_exist():
    assert EXPECTED <= set(MODEL_SPECS), sorted(EXPECTED - set(MODEL_SPECS))


@pytest.mark.parametrize("name", MODEL_SPECS)
def test_example_validates(name):
    spec = load(name)
    assert spec.layers and spec.model.vocab_size > 0
    if name not in PUBLISHED:
        assert 64 <= spec.model.d_model <= 128 and spec.model.vocab_size == 256


@pytest.mark.parametrize("name", TINY)
def test_tiny_example_trains_one_step(name):
    spec = load(name)
    model = build_model(spec)
    assert summarize(spec)["params_total"] == sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, spec.model.vocab_size, (2, 24))
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    (loss + model.aux_loss()).backward()
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(256.0)).item()) < 0.5
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", TINY)
def test_tiny_example_decode_equals_forward_and_is_causal(name):
    spec = load(name)
    model = build_model(spec, dtype=torch.float64)
    L = 20
    ids = torch.randint(0, spec.model.vocab_size, (2, L))
    with torch.no_grad():
        full = model(ids)
        cache = model.init_cache(2, L)
        steps = torch.stack([model.step(ids[:, t], cache)[0] for t in range(L)], 1)
        assert ((steps - full).abs().max() / full.abs().max()) <= 1e-6
        t = 11
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % spec.model.vocab_size
        out = model(changed)
    torch.testing.assert_close(out[:, :t], full[:, :t], rtol=1e-12, atol=1e-14)
    assert not torch.allclose(out[:, t], full[:, t])


# -- what each example claims to be --------------------------------------------------------

def types_of(spec):
    return [layer.type for layer in spec.layers]


def test_jamba_tiny_layout():
    spec = load("jamba-tiny.yaml")
    types = types_of(spec)
    mixers = types[0::2]
    assert Counter(mixers) == {"mamba1": 7, "attention": 1} and mixers[4] == "attention"
    assert types[1::2] == ["mlp", "moe"] * 4
    assert not spec.model.tie_embeddings


def test_zamba2_tiny_shares_one_block():
    spec = load("zamba2-tiny.yaml")
    assert set(types_of(spec)) == {"mamba2", "shared_attention"}
    model = build_model(spec)
    uses = [layer.block for layer in model.layers if layer.block.type_name == "shared_attention"]
    assert len(uses) >= 2 and all(u.core is uses[0].core for u in uses)
    assert all(u.adapter is not None and u.proj is not None for u in uses)


def test_hymba_tiny_heads_meta_tokens_and_windows():
    spec = load("hymba-tiny.yaml")
    assert spec.model.meta_tokens == 128
    parallel = [layer for layer in spec.layers if layer.type == "parallel"]
    windows = [layer.config.attention.get("window") for layer in parallel]
    assert windows.count(None) == 3 and all(w for w in windows if w is not None)
    assert windows[0] is None and windows[-1] is None
    assert {layer.config.ssm["type"] for layer in parallel} == {"mamba1"}


def test_nemotron_h_tiny_is_a_megatron_pattern():
    spec = load("nemotron-h-tiny.yaml")
    assert isinstance(spec.raw["pattern"], str) and set(spec.pattern) <= set("M*-|")
    assert "|" in spec.pattern


def test_granite4_h_tiny_is_a_9_to_1_layout():
    spec = load("granite4-h-tiny.yaml")
    assert "layout" in spec.raw
    mixers = [t for t in types_of(spec) if t != "moe"]
    assert Counter(mixers) == {"mamba2": 9, "attention": 1}
    assert types_of(spec)[1::2] == ["moe"] * 10


def test_hybrid_small_is_the_search_base():
    spec = load("hybrid-small.yaml")
    assert spec.raw["layout"]["mix"] == {"M": 7, "*": 1} and spec.model.d_model == 128


def test_pure_baselines():
    for ssm in ("mamba1", "mamba2", "mamba3"):
        assert set(types_of(load(f"{ssm}-tiny.yaml"))) == {ssm}
    tpp = load("transformer-pp-tiny.yaml")
    assert types_of(tpp) == ["attention", "mlp"] * 4 and tpp.model.norm == "rmsnorm"
    assert tpp.layers[0].config.rope and tpp.layers[1].config.activation == "swiglu"


# -- published scale: summary only ---------------------------------------------------------

def timed_summary(name, contexts=(4096,)):
    summarize(load("transformer-pp-tiny.yaml"))   # warm up torch's one-time meta-device imports
    spec = load(name)
    start = time.perf_counter()
    info = summarize(spec, contexts=contexts)
    return info, time.perf_counter() - start


def test_jamba_v01_reproduces_public_figures():
    info, seconds = timed_summary("jamba-v0.1.yaml", contexts=(4096, 262144))
    assert seconds < 5.0
    assert round(info["params_total"] / 1e9, 1) == 51.6            # "52B total"
    assert round(info["params_active"] / 1e9) == 12                # "12B active"
    assert info["kv_bytes"]["262144"] == 4 * 2**30                 # 4 GB KV cache at 256K, 16-bit
    assert Counter(e["type"] for e in info["layers"]) == \
        {"mamba1": 28, "attention": 4, "mlp": 16, "moe": 16}


def test_nemotron_h_8b_reproduces_public_figures():
    info, seconds = timed_summary("nemotron-h-8b.yaml")
    assert seconds < 5.0
    assert round(info["params_total"] / 1e9, 1) == 8.1
    assert len(info["layers"]) == 52
    assert Counter(e["symbol"] for e in info["layers"]) == {"M": 24, "*": 4, "-": 24}
    # only the 4 attention layers hold a KV cache: 4 x 2 x 8 heads x 128 x 4096 x 2 B
    assert info["kv_bytes"]["4096"] == 4 * 2 * 8 * 128 * 4096 * 2
