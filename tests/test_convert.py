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
