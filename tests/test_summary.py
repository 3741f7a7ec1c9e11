"""summarize() and `hybridlab summary`: counts equal the built model, per-layer accounting adds
up, KV/FLOPs formulas, meta-token offsets, CLI table/JSON/errors."""
import json

import pytest
import torch

from hybridlab.blocks import get_block
from hybridlab.cli.main import main
from hybridlab.composer.builder import build_model
from hybridlab.composer.spec import LayerSpec, ModelConfig, ModelSpec
from hybridlab.composer.summary import human_bytes, human_count, summarize



D, V = 32, 64


def spec_of(layers, d_model=D, vocab=V, **model):
    """[(name, type, fields)] -> ModelSpec, as the loader would produce it."""
    return ModelSpec("test", ModelConfig(d_model=d_model, vocab_size=vocab, **model), tuple(
        LayerSpec(i, name, typ, get_block(typ).Config(**fields)) for i, (name, typ, fields) in enumerate(layers)))


ATTN = ("*", "attention", dict(n_heads=4, n_kv_heads=2))
SWA = ("w", "attention", dict(n_heads=4, n_kv_heads=1, window=100))
MLP = ("-", "mlp", dict(hidden_mult=2.0))
MOE = ("E", "moe", dict(n_experts=4, top_k=1, n_shared_experts=1, hidden_mult=1.0))
SHARED = ("S", "shared_attention", dict(n_heads=4, adapter_rank=2, concat_embeddings=True))
M2 = ("M", "mamba2", dict(d_state=16, headdim=16))
PAR = ("P", "parallel", dict(attention=dict(n_heads=4, window=8), ssm=dict(type="mamba1", d_state=8)))

SPECS = {
    "dense": dict(layers=[ATTN, MLP, SWA, MLP]),
    "moe_untied": dict(layers=[M2, MOE, ATTN, MOE], tie_embeddings=False, norm="layernorm"),
    "shared_meta": dict(layers=[SHARED, M2, SHARED, MLP, SHARED], meta_tokens=5),
    "parallel": dict(layers=[PAR, MLP, PAR, MOE], meta_tokens=2),
}


def make_spec(name):
    kw = dict(SPECS[name])
    return spec_of(kw.pop("layers"), **kw)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_counts_equal_the_built_model(name):
    spec = make_spec(name)
    info = summarize(spec, contexts=(16, 1024))
    model = build_model(spec)
    assert info["params_total"] == sum(p.numel() for p in model.parameters())
    assert info["params_active"] == model.num_parameters(active=True)
    final_norm = sum(p.numel() for p in model.norm_f.parameters())
    assert sum(e["params"] for e in info["layers"]) + info["params_embedding"] + final_norm == \
        info["params_total"]
    assert info["params_embedding"] + info["params_non_embedding"] == info["params_total"]
    assert [e["index"] for e in info["layers"]] == list(range(len(spec.layers)))
    assert [e["symbol"] for e in info["layers"]] == [layer.name for layer in spec.layers]
    assert info["pattern"] == spec.pattern
    for key in ("kv_bytes", "flops_per_token"):
        for c in ("16", "1024"):
            layer_sum = sum(e[key][c] for e in info["layers"])
            assert info[key][c] == layer_sum + (2 * V * D if key == "flops_per_token" else 0)
    assert info["state_bytes"] == sum(e["state_bytes"] for e in info["layers"])


def test_embedding_split():
    tied = summarize(make_spec("dense"))
    assert tied["params_embedding"] == V * D
    untied = summarize(make_spec("moe_untied"))
    assert untied["params_embedding"] == 2 * V * D
    meta = summarize(make_spec("shared_meta"))
    assert meta["params_embedding"] == V * D + 5 * D


def test_kv_and_flops_formulas_by_hand():
    info = summarize(make_spec("dense"), contexts=(50, 1000), dtype=torch.float16)
    attn, swa = info["layers"][0], info["layers"][2]
    hd = D // 4
    assert attn["kv_bytes"] == {"50": 2 * 50 * 2 * hd * 2, "1000": 2 * 1000 * 2 * hd * 2}
    assert swa["kv_bytes"] == {"50": 2 * 50 * 1 * hd * 2, "1000": 2 * 100 * 1 * hd * 2}
    attn_params = D * (D + 2 * 2 * hd) + D * D
    assert attn["params"] == attn_params + D                      # + its pre-norm
    assert attn["flops_per_token"]["1000"] == 2 * attn_params + 4 * 4 * hd * 1000
    assert info["layers"][1]["flops_per_token"]["50"] == 2 * 3 * D * 2 * D
    assert info["kv_bytes"]["1000"] == attn["kv_bytes"]["1000"] + swa["kv_bytes"]["1000"]
    assert info["state_bytes"] == 0 and info["dtype"] == "float16" and info["contexts"] == [50, 1000]


def test_meta_tokens_add_to_the_context():
    info = summarize(make_spec("shared_meta"), contexts=(10,), dtype=torch.bfloat16)
    shared = info["layers"][0]
    core_hd = 2 * D // 4
    assert shared["kv_bytes"]["10"] == 2 * (10 + 5) * 4 * core_hd * 2


def test_shared_core_counted_at_first_use_only():
    info = summarize(make_spec("shared_meta"))
    first, second, third = (info["layers"][i] for i in (0, 2, 4))
    assert first["params"] > second["params"] == third["params"]
    # ...but every use costs the full compute
    assert first["flops_per_token"] == second["flops_per_token"] == third["flops_per_token"]


def test_moe_active_counts():
    info = summarize(make_spec("moe_untied"))
    moe = info["layers"][1]
    expert = 3 * D * D
    norm = 2 * D
    assert moe["params"] == D * 4 + 4 * expert + expert + norm
    assert moe["params_active"] == D * 4 + 1 * expert + expert + norm
    assert info["params_total"] - info["params_active"] == 2 * 3 * expert


def test_state_bytes_come_from_ssm_blocks():
    info = summarize(make_spec("parallel"), dtype=torch.float32)
    par = info["layers"][0]
    model = build_model(make_spec("parallel"))
    assert par["state_bytes"] == model.layers[0].block.ssm.state_bytes(torch.float32) > 0


def test_human_readable_numbers():
    assert human_count(51_570_000_000) == "51.6B"
    assert human_count(12_345) == "12.3K"
    assert human_count(999) == "999"
    assert human_count(8_100_000) == "8.1M"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(4 * 2**30) == "4.0 GiB"
    assert human_bytes(12) == "12 B"


# -- CLI -------------------------------------------------------------------------------------

SPEC_YAML = """\
name: cli-test
model: {d_model: 32, vocab_size: 64}
blocks:
  "*": {type: attention, n_heads: 4, n_kv_heads: 2}
  "-": {type: mlp, hidden_mult: 2.0}
pattern: "(*-) x 2"
"""


def test_cli_table(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC_YAML)
    assert main(["summary", str(path), "--context", "128", "--context", "4096"]) == 0
    out = capsys.readouterr().out
    assert "pattern: *-*-" in out
    assert "KV/seq@128" in out and "KV/seq@4096" in out and "FLOPs/tok@4096" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[:3] for r in rows] == [["0", "*", "attention"], ["1", "-", "mlp"],
                                     ["2", "*", "attention"], ["3", "-", "mlp"]]
    # attention KV at 4096 in bf16: 2 * 4096 * 2 heads * 8 * 2 B = 256 KiB
    assert rows[0][-4:-2] == ["256.0", "KiB"]
    total = sum(p.numel() for p in build_model(str(path)).parameters())
    assert f"({total:,})" in out


def test_cli_json(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC_YAML)
    assert main(["summary", str(path), "--json", "--dtype", "fp32", "--context", "64"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "cli-test" and info["dtype"] == "float32"
    assert info["kv_bytes"] == {"64": 2 * (2 * 64 * 2 * 8 * 4)}
    assert info == summarize(str(path), contexts=(64,), dtype=torch.float32)


def test_cli_spec_errors_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC_YAML.replace("n_kv_heads: 2", "n_kv_heads: 3"))
    assert main(["summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:" in err and "n_kv_heads" in err
    assert main(["summary", str(tmp_path / "missing.yaml")]) == 2
    ok = tmp_path / "ok.yaml"
    ok.write_text(SPEC_YAML)
    assert main(["summary", str(ok), "--context", "0"]) == 2
    assert "--context must be >= 1" in capsys.readouterr().err


def test_accepts_an_int_context_and_dtype_names():
    spec = make_spec("dense")
    assert summarize(spec, contexts=64, dtype="fp32") == summarize(spec, contexts=(64,), dtype=torch.float32)
    assert summarize(spec, dtype="bf16")["dtype"] == "bfloat16"


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    return 0


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_and_kv_bytes_equal_the_allocated_cache(name, dtype):
    spec = make_spec(name)
    info = summarize(spec, contexts=(3, 40), dtype=dtype)
    for device in ("cpu", "meta"):
        model = build_model(spec, device=device, dtype=dtype)
        for ctx in (3, 40):
            cache = model.init_cache(2, ctx)
            assert cache.position == spec.model.meta_tokens
            per_layer = [_tensor_bytes(state) for state in cache.states]
            assert per_layer == [2 * (e["state_bytes"] + e["kv_bytes"][str(ctx)]) for e in info["layers"]]
