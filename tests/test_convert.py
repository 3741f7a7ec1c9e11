"""Converters: Megatron pattern strings both ways, HF layer_types, with the real blocks."""
import json

import pytest

from hybridlab.composer.convert import from_megatron, megatron_notes, to_hf, to_megatron
from hybridlab.composer.loader import load_spec
from hybridlab.errors import SpecError

NEMOTRON_H_8B = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
NEMOTRON_3_NANO_START = "MEMEM*EMEMEM*EMEMEM*E|MEMEM*EMEMEM*E"


@pytest.mark.parametrize("pattern", [NEMOTRON_H_8B, NEMOTRON_3_NANO_START, "M", "*-*-|*E|M-"])
def test_megatron_round_trip(pattern):
    text = from_megatron(pattern)
    spec = load_spec(text)
    assert to_megatron(spec) == pattern
    assert len(spec.layers) == len(pattern.replace("|", ""))


def test_from_megatron_writes_default_blocks_and_model():
    text = from_megatron("M-M *E", name="nano", d_model=128, vocab_size=512)
    spec = load_spec(text)
    assert spec.name == "nano"
    assert (spec.model.d_model, spec.model.vocab_size) == (128, 512)
    assert [layer.type for layer in spec.layers] == ["mamba2", "mlp", "mamba2", "attention", "moe"]
    assert spec.layers[0].config == type(spec.layers[0].config)()      # Config defaults
    assert spec.raw["blocks"] == {"M": {"type": "mamba2"}, "*": {"type": "attention"},
                                  "-": {"type": "mlp"}, "E": {"type": "moe"}}


def test_from_megatron_rejects_unknown_symbols_with_columns():
    with pytest.raises(SpecError) as info:
        from_megatron("M-G*/M-")
    assert [p.format().split("\n")[0] for p in info.value.problems] == [
        "<megatron>:1:3: Megatron symbol 'G' has no hybridlab block",
        "<megatron>:1:5: Megatron symbol '/' has no hybridlab block"]
    assert "multi-token prediction" in info.value.problems[1].hint
    with pytest.raises(SpecError, match="the Megatron pattern is empty"):
        from_megatron("  ")


def test_from_megatron_output_is_validated():
    with pytest.raises(SpecError, match="empty pipeline stage"):
        from_megatron("M-||M-")


def test_hf_paired_layout_uses_layer_and_mlp_types():
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16},
                      "blocks": {"S": {"type": "attention", "window": 32}},
                      "pattern": "(M- ME *- SE) x 1"})
    assert to_hf(spec) == {
        "layer_types": ["linear_attention", "linear_attention", "full_attention",
                        "sliding_attention"],
        "mlp_layer_types": ["dense", "sparse", "dense", "sparse"]}


def test_hf_unpaired_layout_is_one_nemotron_style_list():
    spec = load_spec(from_megatron("MM*-E"))
    assert to_hf(spec) == {"layer_types": ["linear_attention", "linear_attention",
                                           "full_attention", "mlp", "moe"]}
    json.dumps(to_hf(spec))


def test_blocks_without_megatron_symbol_are_named(tmp_path):
    spec_file = tmp_path / "zamba.yaml"
    spec_file.write_text("model: {d_model: 64, vocab_size: 16}\n"
                         "blocks:\n"
                         "  S: {type: shared_attention, n_heads: 4}\n"
                         "pattern: MMSMMS\n")
    spec = load_spec(spec_file, source=str(spec_file))
    with pytest.raises(SpecError) as info:
        to_megatron(spec)
    (problem,) = info.value.problems
    assert problem.format().split("\n")[0] == (
        f"{spec_file}:3:13: blocks.S: layers 2, 5 ('S': shared_attention) cannot be expressed "
        f"in Megatron notation")
    assert to_hf(spec)["layer_types"][2] == "hybrid"


def test_megatron_notes_flag_lossy_symbols():
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16},
                      "blocks": {"A": {"type": "mamba1"}}, "pattern": "AM"})
    assert to_megatron(spec) == "MM"
    assert megatron_notes(spec) == [
        "mamba1 layers are written as 'M', which Megatron reads as mamba2"]
    assert megatron_notes(load_spec(from_megatron("M*"))) == []


# -- transformers config.json <-> spec ----------------------------------------------------------
# Small configs of the six hybrid classes, written here (no download): each reads into a spec
# whose parameter count is transformers' own for the config (counted on the meta device), and
# the spec's --to hf gives back the class's layout fields.
HF_CONFIGS = {
    "jamba": dict(model_type="jamba", vocab_size=300, hidden_size=64, intermediate_size=224,
                  num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                  num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_dt_rank=6,
                  attn_layer_period=4, attn_layer_offset=2, expert_layer_period=2,
                  expert_layer_offset=1),
    "nemotron_h": dict(model_type="nemotron_h", vocab_size=300, hidden_size=64,
                       layers_block_type=["linear_attention", "moe", "linear_attention",
                                          "full_attention", "mlp", "linear_attention", "moe"],
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                       intermediate_size=160, mamba_num_heads=8, mamba_head_dim=16,
                       ssm_state_size=16, n_groups=2, n_routed_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=48, moe_shared_expert_intermediate_size=96),
    "bamba": dict(model_type="bamba", vocab_size=300, hidden_size=64, intermediate_size=160,
                  num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                  attn_layer_indices=[2, 5], mamba_n_heads=8, mamba_d_state=16,
                  mamba_n_groups=2, mamba_chunk_size=32),
    "zamba2": dict(model_type="zamba2", vocab_size=300, hidden_size=64, num_hidden_layers=8,
                   layers_block_type=["mamba", "mamba", "hybrid", "mamba", "hybrid", "mamba",
                                      "mamba", "hybrid"],
                   mamba_d_state=16, n_mamba_heads=8, num_attention_heads=4, num_mem_blocks=2,
                   use_shared_attention_adapter=True, adapter_rank=8, intermediate_size=128,
                   use_mem_rope=True),
    "falcon_h1": dict(model_type="falcon_h1", vocab_size=300, hidden_size=64,
                      intermediate_size=160, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, mamba_d_ssm=96, mamba_n_heads=6, mamba_d_head=16,
                      mamba_d_state=16, mamba_n_groups=2, mamba_rms_norm=True),
    "granitemoehybrid": dict(model_type="granitemoehybrid", vocab_size=300, hidden_size=64,
                             intermediate_size=48, shared_intermediate_size=96,
                             num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=1,
                             num_local_experts=4, num_experts_per_tok=2,
                             layer_types=["linear_attention"] * 2 + ["full_attention"]
                             + ["linear_attention"] * 3,
                             mamba_n_heads=8, mamba_d_state=16, position_embedding_type="nope",
                             attention_multiplier=0.5),
}
#: each class's own layout fields, as transformers reads them back
LAYOUT_FIELDS = {
    "jamba": ("num_hidden_layers", "attn_layer_period", "attn_layer_offset",
              "expert_layer_period", "expert_layer_offset", "num_experts"),
    "nemotron_h": ("layers_block_type",),
    "bamba": ("num_hidden_layers", "attn_layer_indices"),
    "zamba2": ("layers_block_type", "num_mem_blocks", "hybrid_layer_ids"),
    "falcon_h1": ("num_hidden_layers", "mamba_d_ssm"),
    "granitemoehybrid": ("layer_types", "num_local_experts"),
}


def hf_config(data: dict):
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[data["model_type"]](
        **{k: v for k, v in data.items() if k != "model_type"})


@pytest.mark.parametrize("model_type", list(HF_CONFIGS))
def test_from_hf_matches_transformers_parameter_count_and_layout(model_type, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    import hybridlab
    from hybridlab.cli.main import main
    from hybridlab.export.hf_config import from_hf
    from hybridlab.export.hf_classes import hf_config_for

    data = HF_CONFIGS[model_type]
    text, notes = from_hf(data, source="config.json")
    spec = load_spec(text)
    with torch.device("meta"):
        theirs = AutoModelForCausalLM.from_config(hf_config(data))
    expected = sum(p.numel() for p in theirs.parameters())
    assert hybridlab.build_model(spec, device="meta").num_parameters() == expected
    # the spec fits the class again: --to hf writes its layout fields, equal to the original's
    back, _ = hf_config_for(spec)
    assert back is not None and back["model_type"] == model_type
    again, original = hf_config(back), hf_config(data)
    for name in LAYOUT_FIELDS[model_type]:
        assert getattr(again, name) == getattr(original, name), name
    if model_type == "granitemoehybrid":
        assert notes == ["attention_multiplier = 0.5: hybridlab scales attention scores by "
                         "1/sqrt(head_dim)"]
    else:
        assert notes == []
    # the command line: --from hf prints the spec, --to hf the class's config
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(data))
    assert main(["convert", str(config_file), "--from", "hf", "--name", "published"]) == 0


def test_convert_cli_from_hf_and_to_hf(tmp_path, capsys):
    from hybridlab.cli.main import main

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(HF_CONFIGS["jamba"]))
    assert main(["convert", str(config_file), "--from", "hf", "--name", "jamba-small"]) == 0
    out, err = capsys.readouterr()
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(out)
    spec = load_spec(spec_file)
    assert spec.name == "jamba-small" and spec.pattern == "M-ME*-MEM-ME*-ME"
    assert main(["convert", str(spec_file), "--to", "hf"]) == 0
    out, err = capsys.readouterr()
    config = json.loads(out)
    assert config["architectures"] == ["JambaForCausalLM"]
    assert (config["attn_layer_period"], config["attn_layer_offset"],
            config["expert_layer_period"], config["expert_layer_offset"]) == (4, 2, 2, 1)
    # a layout no class has: the HF v5 notation, and why on stderr
    spec_file.write_text("model: {d_model: 64, vocab_size: 16}\n"
                         "blocks: {M: {type: mamba3, d_state: 16, headdim: 16}}\npattern: MM\n")
    assert main(["convert", str(spec_file), "--to", "hf"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"layer_types": ["linear_attention", "linear_attention"]}
    assert "no transformers class fits" in err and "Mamba2: layers 0, 1 ('M') mamba3" in err


def test_from_hf_errors_name_the_file(tmp_path, capsys):
    from hybridlab.cli.main import main

    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "jamba",\n "hidden_size": }')
    assert main(["convert", str(bad), "--from", "hf"]) == 2
    assert f"{bad}:2:17: not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    assert main(["convert", str(bad), "--from", "hf"]) == 2
    err = capsys.readouterr().err
    assert "model_type: model_type 'llama' has no hybridlab mapping" in err
    assert "supported: mamba, mamba2, jamba, nemotron_h" in err
