"""Spec loader: good specs become the right ModelSpec; every bad spec in tests/bad_specs/ gives
exactly the expected problems at the exact line and column.

Block types are replaced by small dummy blocks for these tests (``dummy_blocks`` fixture), so
the messages that come from ``Config.validate`` are ours and stable; the last tests load the
real example specs with the real blocks.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

import hybridlab
from hybridlab.blocks import Block, BlockConfig, registry
from hybridlab.composer import canonical_dict, dump_spec_yaml, load_spec, spec_hash
from hybridlab.composer.spec import LayerSpec, ModelSpec
from hybridlab.errors import SpecError

BAD = Path(__file__).parent / "bad_specs"
EXAMPLES = Path(__file__).parent.parent / "examples"


# -- dummy blocks ------------------------------------------------------------------------------

@dataclass
class SSMConfig(BlockConfig):
    d_state: int = 16
    expand: int = 2
    A_init_range: tuple[float, float] = (1.0, 16.0)

    def validate(self, d_model):
        return [("d_state", f"must be > 0, got {self.d_state}")] if self.d_state <= 0 else []


@dataclass
class AttnConfig(BlockConfig):
    n_heads: int = 4
    n_kv_heads: Optional[int] = None
    window: Optional[int] = None
    position: Literal["rope", "nope"] = "rope"

    def validate(self, d_model):
        if d_model % self.n_heads:
            return [("n_heads", f"{self.n_heads} heads do not divide d_model {d_model}")]
        return []


@dataclass
class MLPConfig(BlockConfig):
    hidden_mult: float = 4.0


@dataclass
class MoEConfig(BlockConfig):
    n_experts: int = 4
    top_k: int = 2

    def validate(self, d_model):
        if self.top_k > self.n_experts:
            return [("top_k", f"top_k ({self.top_k}) > n_experts ({self.n_experts})")]
        return []


def _block(config, kind, symbol, hf):
    return type(config.__name__ + "Block", (Block,),
                {"Config": config, "kind": kind, "megatron_symbol": symbol, "hf_layer_type": hf})


@pytest.fixture
def dummy_blocks(monkeypatch):
    """A registry holding only the four dummy blocks, restored after the test."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    registry.register_block("mamba2")(_block(SSMConfig, "mixer", "M", "linear_attention"))
    registry.register_block("attention")(_block(AttnConfig, "mixer", "*", "full_attention"))
    registry.register_block("mlp")(_block(MLPConfig, "ffn", "-", "dense"))
    registry.register_block("moe")(_block(MoEConfig, "ffn", "E", "sparse"))


def problems_of(spec, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(spec, **kw)
    return [p.format() for p in info.value.problems]


# -- good specs --------------------------------------------------------------------------------

JAMBA_MINI = """
name: jamba-mini
model: {d_model: 256, vocab_size: 256, norm: rmsnorm, tie_embeddings: true, meta_tokens: 0}
blocks:
  M:   {type: mamba2, d_state: 16, expand: 2}
  "*": {type: attention, n_heads: 4, n_kv_heads: 2}
  "-": {type: mlp, hidden_mult: 4}
  E:   {type: moe, n_experts: 4, top_k: 2}
pattern: "(M- ME M- ME *- ME M- ME) x 2"
"""


def test_brief_example_expands_with_groups(dummy_blocks):
    spec = load_spec(JAMBA_MINI)
    assert spec.name == "jamba-mini"
    assert spec.pattern == "M-MEM-ME*-MEM-ME" * 2
    assert len(spec.layers) == 32
    assert [layer.index for layer in spec.layers] == list(range(32))
    assert spec.layers[8] == LayerSpec(8, "*", "attention", AttnConfig(n_heads=4, n_kv_heads=2))
    assert spec.layers[1].config == MLPConfig(hidden_mult=4.0)
    assert isinstance(spec.layers[1].config.hidden_mult, float)      # int 4 became 4.0
    assert spec.model.d_model == 256 and spec.model.tie_embeddings is True
    assert spec.raw["pattern"] == "(M- ME M- ME *- ME M- ME) x 2"
    assert spec.source is None


def test_nested_groups_and_stages(dummy_blocks):
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16},
                      "pattern": "((M-) x 2 *-) x 2 | (ME) x 3"})
    assert spec.pattern == "M-M-*-M-M-*-|MEMEME"
    assert [layer.stage for layer in spec.layers] == [0] * 12 + [1] * 6


def test_default_symbols_use_config_defaults(dummy_blocks):
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16}, "pattern": "M*-E"})
    assert [(layer.name, layer.type) for layer in spec.layers] == [
        ("M", "mamba2"), ("*", "attention"), ("-", "mlp"), ("E", "moe")]
    assert [layer.config for layer in spec.layers] == [SSMConfig(), AttnConfig(), MLPConfig(),
                                                       MoEConfig()]


def test_list_pattern_with_long_names_and_stage(dummy_blocks):
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16},
                      "blocks": {"mamba": {"type": "mamba2"}, "swa": {"type": "attention",
                                                                      "window": 8}},
                      "pattern": ["mamba", "swa", "|", "mamba", "-"]})
    assert [layer.name for layer in spec.layers] == ["mamba", "swa", "mamba", "-"]
    assert [layer.stage for layer in spec.layers] == [0, 0, 1, 1]
    assert spec.pattern == "[mamba][swa]|[mamba]-"
    assert spec.layers[1].config.window == 8


def test_bracketed_long_names_in_pattern_string(dummy_blocks):
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16},
                      "blocks": {"swa": {"type": "attention", "window": 8}},
                      "pattern": "(M [swa]) x 2"})
    assert [layer.name for layer in spec.layers] == ["M", "swa", "M", "swa"]


def test_model_defaults_and_init(dummy_blocks):
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16, "norm": "layernorm",
                                "norm_eps": "1e-6", "init": {"std": 0.01}}, "pattern": "M"})
    assert spec.model.norm == "layernorm"
    assert spec.model.norm_eps == 1e-6          # YAML 1.1 reads 1e-6 as a string; accepted
    assert spec.model.init.std == 0.01 and spec.model.init.residual_scaling is True
    assert spec.model.tie_embeddings is True and spec.model.meta_tokens == 0
    assert spec.name == "model"


def test_tuple_fields_become_tuples(dummy_blocks):
    spec = load_spec({"model": {"d_model": 64, "vocab_size": 16},
                      "blocks": {"M": {"type": "mamba2", "A_init_range": [2, 8]}}, "pattern": "M"})
    assert spec.layers[0].config.A_init_range == (2.0, 8.0)


def test_overrides_make_per_layer_copies(dummy_blocks):
    spec = load_spec({
        "model": {"d_model": 64, "vocab_size": 16},
        "blocks": {"*": {"type": "attention", "window": 1024}},
        "pattern": "(M-*-) x 3",
        "overrides": [{"at": [2, 10], "set": {"window": None}},      # Hymba: global attention
                      {"at": 0, "set": {"d_state": 64}},
                      {"at": [0], "set": {"expand": 4}}]})           # later overrides stack
    windows = {layer.index: layer.config.window for layer in spec.layers if layer.name == "*"}
    assert windows == {2: None, 6: 1024, 10: None}
    assert spec.layers[0].config == SSMConfig(d_state=64, expand=4)
    assert spec.layers[4].config == SSMConfig()
    assert spec.layers[4].config is spec.layers[8].config        # untouched layers share it
    assert spec.layers[2].config is not spec.layers[6].config


def test_plugins_register_blocks_before_validation(dummy_blocks, tmp_path):
    module = f"hl_test_plugin_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{module}.py").write_text(
        "from dataclasses import dataclass\n"
        "import hybridlab\n"
        "from hybridlab.blocks import Block, BlockConfig\n"
        "@dataclass\n"
        "class GatedConvConfig(BlockConfig):\n"
        "    kernel: int = 3\n"
        "@hybridlab.register_block('gated_conv')\n"
        "class GatedConv(Block):\n"
        "    Config = GatedConvConfig\n")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"plugins: [{module}]\nmodel: {{d_model: 64, vocab_size: 16}}\n"
                         "blocks:\n  C: {type: gated_conv, kernel: 5}\npattern: CMCM\n")
    path_before = list(sys.path)
    try:
        # the module sits next to the spec, not on sys.path
        spec = load_spec(spec_file, allow_plugins=True)
        # imported now (by the user, as far as the loader knows): accepted without the opt-in
        assert load_spec(spec_file) == spec
    finally:
        sys.modules.pop(module, None)
    assert sys.path == path_before
    assert spec.plugins == (module,)
    assert spec.layers[0].type == "gated_conv" and spec.layers[0].config.kernel == 5
    assert spec.name == "spec" and spec.source == str(spec_file)


def test_plugins_are_not_imported_without_the_opt_in(dummy_blocks, tmp_path):
    module = f"hl_test_plugin_refused_{tmp_path.name}".replace("-", "_")
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"model: {{d_model: 64, vocab_size: 16}}\nplugins: [{module}]\n"
                         "blocks:\n  C: {type: gated_conv}\npattern: CM\n")
    for spec in (spec_file, spec_file.read_text(), {"model": {"d_model": 64, "vocab_size": 16},
                                                    "plugins": module, "pattern": "M"}):
        with pytest.raises(SpecError) as info:
            load_spec(spec, source="spec.yaml")
        first = info.value.problems[0]
        assert first.field == "plugins" and first.message == (
            f"this spec imports Python modules ({module}), which runs their code: allowed only "
            "when you ask for it")
        assert "--allow-plugins" in first.hint and "HYBRIDLAB_PLUGINS=1" in first.hint
        assert "allow_plugins=True" in first.hint
    assert (first.line, first.col) == (0, 0)        # the dict has no positions
    assert problems_of(spec_file, source="spec.yaml")[0].startswith("spec.yaml:2:1: plugins: ")
    assert "(the plugins this spec names were not imported)" in problems_of(spec_file)[1]
    assert module not in sys.modules and not marker.exists()


def test_path_text_and_dict_inputs_agree(dummy_blocks, tmp_path):
    f = tmp_path / "jamba.yaml"
    f.write_text(JAMBA_MINI)
    from_path = load_spec(f, source="jamba.yaml")
    from_text = load_spec(JAMBA_MINI, source="jamba.yaml")
    import yaml
    from_dict = load_spec(yaml.safe_load(JAMBA_MINI), source="jamba.yaml")
    assert from_path == from_text == from_dict
    assert load_spec(from_path) is from_path
    assert str(f) == load_spec(str(f)).source


def test_dict_input_problems_have_field_paths_and_no_position(dummy_blocks):
    assert problems_of({"model": {"d_model": 64, "vocab_size": 16},
                        "blocks": {"M": {"type": "mamba2", "d_state": 0}}, "pattern": "M"}) == [
        "<dict>:0:0: blocks.M.d_state: must be > 0, got 0"]


# -- bad specs ---------------------------------------------------------------------------------
# file -> the exact problems, formatted "line:col: field: message" (+ "hint: ..." when given).
# Line and column are 1-based and point at the offending key, value or pattern symbol.

SPEC_SHAPE = "a spec is a mapping with name, model, blocks and pattern (or layout)"
EXPECTED = {
    "unknown_key.yaml": [
        "2:1: missing 'pattern' (or 'layout')",
        '    hint: pattern: "(M-M-M*-) x 4", or layout: {layers: 12, mix: {M: 3, "*": 1}}',
        "5:21: blocks.M.d_sate: unknown key 'd_sate' in block 'M' (mamba2)",
        "    hint: did you mean 'd_state'?",
        "6:1: patern: unknown key 'patern' in the spec",
        "    hint: did you mean 'pattern'?"],
    "wrong_type.yaml": [
        "4:12: model.d_model: expected an integer, got number 25.5",
        "6:19: model.tie_embeddings: expected true or false, got integer 3",
        "8:30: blocks.M.d_state: expected an integer, got string 'sixteen'",
        "9:36: blocks.*.position: expected one of 'rope', 'nope', got string 'rotary'"],
    "unknown_type.yaml": [
        "5:13: blocks.M.type: unknown block type 'mamba4'",
        "    hint: did you mean 'mamba2'? registered types: attention, mamba2, mlp, moe"],
    "undefined_symbol.yaml": [
        "4:23: pattern: block 'Q' is not defined",
        "    hint: defined blocks: none; defaults: M (mamba2), * (attention), - (mlp), E (moe)"],
    "block_scalar_pattern.yaml": [
        "7:6: pattern: block 'Z' is not defined",
        "    hint: defined blocks: none; defaults: M (mamba2), * (attention), - (mlp), E (moe)"],
    "list_pattern_undefined.yaml": ["7:25: pattern[2]: block 'atn' is not defined",
                                    "    hint: did you mean 'attn'?"],
    "long_name_unbracketed.yaml": [
        "6:15: pattern: block name 'swa' must be written in brackets in a pattern string: [swa]",
        "    hint: each character of a pattern string is one block name"],
    "empty_pattern.yaml": ["3:10: pattern: pattern is empty",
                           '    hint: pattern: "(M-M-M*-) x 4"'],
    "both_pattern_layout.yaml": [
        "4:1: layout: give either 'pattern' or 'layout', not both",
        "    hint: pattern lists the layers; layout derives them from ratios"],
    "neither_pattern_layout.yaml": [
        "1:1: missing 'pattern' (or 'layout')",
        '    hint: pattern: "(M-M-M*-) x 4", or layout: {layers: 12, mix: {M: 3, "*": 1}}'],
    "heads_divide.yaml": ["7:14: blocks.*.n_heads: 3 heads do not divide d_model 64"],
    "topk_gt_experts.yaml": ["4:39: blocks.E.top_k: top_k (6) > n_experts (4)"],
    "dstate_nonpositive.yaml": ["6:14: blocks.M.d_state: must be > 0, got 0"],
    "layout_no_layers.yaml": ["6:8: layout.mix: the layout has no layers: every weight is 0",
                              "    hint: give at least one mixer a weight > 0"],
    "layout_place_mismatch.yaml": [
        "7:10: layout.place: `place` lists 3 positions but the weights give '*' 2 of 8 layers",
        '    hint: make the weights match, e.g. mix: {M: 5, "*": 3}'],
    "layout_wrong_kind.yaml": [
        "6:15: layout.mix.-: '-' (mlp) is an FFN block, but mix lists sequence mixers",
        "7:9: layout.ffn[0]: '*' (attention) is a sequence mixer, but ffn lists FFN blocks"],
    "override_out_of_range.yaml": [
        "6:13: overrides[0].at[1]: layer index 7 is out of range: the model has 4 layers (0..3)",
        "    hint: indices count every layer of the expanded pattern, FFN layers included"],
    "override_unknown_field.yaml": [
        "7:11: overrides[0].set.window: layer 0 ('M': mamba2) has no field 'window'",
        "    hint: fields: d_state, expand, A_init_range"],
    "yaml_syntax.yaml": ["5:8: YAML syntax error: expected ',' or '}', but got ':' "
                         "(while parsing a flow mapping that starts at line 4)",
                         "    hint: check indentation, brackets and quotes"],
    "not_mapping.yaml": ["0:0: not_mapping.yaml is not a hybridlab model spec: it is not a "
                         "YAML mapping",
                         "    hint: a model spec is a YAML mapping with model: and pattern: (or "
                         "layout:); see docs/spec-format.md"],
    "empty.yaml": ["1:1: the spec is empty", "    hint: " + SPEC_SHAPE],
    "unbalanced_parens.yaml": ["3:11: pattern: unbalanced parentheses: '(' is never closed",
                               "    hint: add the missing ')'"],
    "repeat_zero.yaml": ["3:18: pattern: repeat count must be at least 1, got 0"],
    "unquoted_star.yaml": [
        "4:4: YAML syntax error: expected alphabetic or numeric character, but found ':' "
        "(while scanning an alias)",
        "    hint: '*' starts a YAML alias; quote keys and values that start with it: "
        "\"*\": {type: attention}, pattern: \"*-M-\""],
    "duplicate_key.yaml": [
        "5:3: blocks.M: duplicate key 'M'",
        "    hint: YAML would silently keep only the last one; remove or rename one"],
    "plugin_missing.yaml": [
        "2:1: plugins: this spec imports Python modules (hybridlab_no_such_plugin_module), which "
        "runs their code: allowed only when you ask for it",
        "    hint: run with --allow-plugins (or HYBRIDLAB_PLUGINS=1), or in Python "
        "load_spec(..., allow_plugins=True); a module you have already imported yourself is "
        "accepted without it"],
    "many_problems.yaml": [
        "3:44: model.norm: must be one of rmsnorm, layernorm",
        "5:30: blocks.M.d_state: must be > 0, got -4",
        "6:39: blocks.E.top_k: top_k (3) > n_experts (2)",
        "7:35: blocks.*.n_heads: 5 heads do not divide d_model 64"],
}


def test_missing_plugin_with_the_opt_in(dummy_blocks):
    with pytest.raises(SpecError) as info:
        load_spec(BAD / "plugin_missing.yaml", source="plugin_missing.yaml", allow_plugins=True)
    assert [p.format() for p in info.value.problems] == [
        "plugin_missing.yaml:2:11: plugins[0]: cannot import plugin "
        "'hybridlab_no_such_plugin_module': no such module\n"
        "    hint: plugins are Python module names importable from the spec's folder or the "
        "current directory"]


def test_every_bad_spec_has_expectations():
    assert sorted(EXPECTED) == sorted(p.name for p in BAD.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_spec(dummy_blocks, name):
    path = BAD / name
    with pytest.raises(SpecError) as info:
        load_spec(path, source=name)
    problems = info.value.problems
    assert all(p.file == name for p in problems)
    got = [line for p in problems for line in p.format()[len(name) + 1:].splitlines()]
    assert got == EXPECTED[name]


def test_missing_file_directory_and_binary(tmp_path):
    assert problems_of(tmp_path / "nope.yaml", source="nope.yaml") == [
        f"nope.yaml:0:0: file not found\n    hint: looked for {tmp_path / 'nope.yaml'}"]
    assert problems_of(tmp_path, source="dir")[0].startswith("dir:0:0: is a directory")
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"name: x\n\x89PNG\x00\xff\xfe")
    assert problems_of(binary, source="weights.bin")[0].startswith(
        "weights.bin:2:1: not a text file (invalid UTF-8)")   # the \\x89 byte
    control = tmp_path / "ctrl.yaml"
    control.write_text("model: a\x07b\n")
    assert problems_of(control, source="ctrl.yaml")[0].startswith(
        "ctrl.yaml:1:9: YAML error: unacceptable character U+0007")
    control.write_text("title: a\x07b\n")      # no model-spec key: not recognisably a spec
    assert problems_of(control, source="ctrl.yaml") == [
        "ctrl.yaml:0:0: ctrl.yaml is not a hybridlab model spec: it is not valid YAML\n"
        "    hint: a model spec is a YAML mapping with model: and pattern: (or layout:); see "
        "docs/spec-format.md"]


def test_pattern_column_follows_yaml_quoting(dummy_blocks):
    base = "model: {d_model: 64, vocab_size: 16}\n"
    assert problems_of(base + "pattern: MM Q\n")[0].startswith("<text>:2:13: pattern: block 'Q'")
    quoted = [p.split("\n")[0] for p in problems_of(base + "pattern: 'M''M Q'\n")]
    assert quoted == ["<text>:2:12: pattern: block ''' is not defined",     # '' is one quote
                      "<text>:2:16: pattern: block 'Q' is not defined"]
    assert problems_of(base + 'pattern: "M\\tM Q"\n')[0].startswith("<text>:2:16: pattern: block")
    assert problems_of(base + "pattern: >\n  MM\n  M Q\n")[0].startswith("<text>:4:5: pattern:")


def test_problem_details(dummy_blocks):
    base = {"model": {"d_model": 64, "vocab_size": 16}}
    cases = [
        ({"pattern": "(M-) x"}, "pattern: expected a repeat count after 'x'"),
        ({"pattern": "M|"}, "pattern: empty pipeline stage: '|' at the end of the pattern"),
        ({"pattern": "M2"}, "pattern: unexpected number '2'"),
        ({"pattern": 5},
         "pattern: pattern must be a string or a list of block names, got integer 5"),
        ({"pattern": []}, "pattern: pattern is empty"),
        ({"pattern": ["M*"]}, "pattern[0]: block 'M*' is not defined"),
        ({"pattern": "M/M"}, "pattern: block '/' is not defined"),
        ({"pattern": "M", "overrides": {"at": 0}},
         "overrides: overrides must be a list, got a mapping"),
        ({"pattern": "M", "overrides": [{"at": [0], "set": {"type": "attention"}}]},
         "overrides[0].set.type: an override cannot change the block type"),
        ({"pattern": "M", "overrides": [{"at": [0]}]}, "overrides[0]: missing required key 'set'"),
        ({"pattern": "M", "overrides": [{"at": [0], "set": {"d_state": "x"}}]},
         "overrides[0].set.d_state: expected an integer, got string 'x'"),
        ({"pattern": "M", "blocks": {"M": {"d_state": 4}}},
         "blocks.M: missing required key 'type'"),
        ({"pattern": "M", "blocks": {"12": {"type": "mamba2"}}}, None),   # long names: digits ok
        ({"pattern": "M", "blocks": {"a b": {"type": "mamba2"}}},
         "blocks.a b: block name 'a b' contains ' ', which the pattern syntax reserves"),
        ({"pattern": "M", "blocks": {"7": {"type": "mamba2"}}},
         "blocks.7: block name '7' is reserved in patterns (digits are repeat counts)"),
        ({"pattern": "M", "plugins": "os.nothing_here"},
         "plugins: this spec imports Python modules (os.nothing_here), which runs their code: "
         "allowed only when you ask for it"),
        ({"pattern": "M", "plugins": "os"}, None),          # imported already: nothing to run
        ({"pattern": "M", "name": ""}, "name: name must be a non-empty string, got string ''"),
        ({"pattern": "M", "model": {"d_model": 64}}, "model: missing required field 'vocab_size'"),
        ({"pattern": "M", "model": {"d_model": 64, "vocab_size": 8, "init": {"stdd": 1.0}}},
         "model.init.stdd: unknown key 'stdd' in model.init"),
        ({"layout": {"layers": 4, "mix": {"M": 10 ** 400}}},     # no float holds it
         "layout.mix.M: a weight must be a number >= 0, got an integer of about 401 digits"),
    ]
    for extra, expected in cases:
        spec = {**base, **extra}
        if expected is None:
            load_spec(spec)
            continue
        got = problems_of(spec)
        assert any(g.split("\n")[0] == f"<dict>:0:0: {expected}" for g in got), (extra, got)


def test_all_problems_are_collected_and_sorted(dummy_blocks):
    text = ("model: {d_model: 64, vocab_size: 16}\n"
            "blocks:\n  X: {type: nothing}\n  M: {type: mamba2, d_state: 0}\n"
            "pattern: M-QX\n")
    got = [p.split("\n")[0] for p in problems_of(text)]
    assert got == ["<text>:3:13: blocks.X.type: unknown block type 'nothing'",
                   "<text>:4:30: blocks.M.d_state: must be > 0, got 0",
                   "<text>:5:12: pattern: block 'Q' is not defined"]


def test_random_mutations_never_crash(dummy_blocks):
    """Any corruption of a valid spec gives a ModelSpec or a SpecError, nothing else."""
    import random
    rng = random.Random(0)
    alphabet = "MQ*-E|()[]x0123:{}\"' \n\t#&!@,-.abc"
    for _ in range(400):
        chars = list(JAMBA_MINI)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars))
            action = rng.random()
            if action < 0.4:
                del chars[i]
            elif action < 0.8:
                chars.insert(i, rng.choice(alphabet))
            else:
                chars[i] = rng.choice(alphabet)
        try:
            assert isinstance(load_spec("".join(chars) + "\n"), ModelSpec)
        except SpecError as e:
            assert e.problems and all(p.message for p in e.problems)


# -- writing specs back out ---------------------------------------------------------------------

def test_dump_round_trip_with_overrides_and_stages(dummy_blocks):
    spec = load_spec({"name": "rt", "model": {"d_model": 64, "vocab_size": 16, "meta_tokens": 4},
                      "blocks": {"swa": {"type": "attention", "window": 32}},
                      "pattern": "(M- [swa]E) x 2 | M*",
                      "overrides": [{"at": [0, 4], "set": {"d_state": 8}},
                                    {"at": [1], "set": {"hidden_mult": 2.5}}]})
    text = dump_spec_yaml(spec)
    again = load_spec(text)
    assert again == spec
    assert again.pattern == "M-[swa]EM-[swa]E|M*"
    assert spec_hash(again) == spec_hash(spec)


def test_canonical_dict_ignores_names_and_stages_but_not_sharing(dummy_blocks):
    base = {"model": {"d_model": 64, "vocab_size": 16}}
    a = load_spec({**base, "pattern": "M*M*"})
    b = load_spec({**base, "name": "other", "blocks": {"S": {"type": "mamba2"},
                                                       "A": {"type": "attention"}},
                   "pattern": "SA|SA"})
    c = load_spec({**base, "blocks": {"S": {"type": "mamba2"}}, "pattern": "M*S*"})
    d = load_spec({**base, "blocks": {"*": {"type": "attention", "n_heads": 8}}, "pattern": "M*M*"})
    e = load_spec({**base, "blocks": {"-": {"type": "mlp", "hidden_mult": 4}}, "pattern": "M-"})
    f = load_spec({**base, "pattern": "M-"})
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash(c)        # two Mamba blocks may not share weights
    assert spec_hash(a) != spec_hash(d)
    assert spec_hash(e) == spec_hash(f)        # 4 and 4.0 are the same setting
    layers = canonical_dict(a)["layers"]
    assert layers[1] == {"type": "attention", "block": 1,
                         "config": {"n_heads": 4, "n_kv_heads": None, "window": None,
                                    "position": "rope"}}
    assert canonical_dict(a)["model"]["d_model"] == 64
    assert len(spec_hash(a)) == 64


# -- the real blocks ------------------------------------------------------------------------------

def test_real_blocks_load_the_brief_example():
    spec = load_spec(JAMBA_MINI)
    assert spec.pattern == "M-MEM-ME*-MEM-ME" * 2
    assert type(spec.layers[0].config) is hybridlab.blocks.get_block("mamba2").Config
    assert spec.layers[0].config.d_state == 16


def model_specs_in(folder: Path) -> list[Path]:
    """Model specs (a top-level `model:`); the folder also holds search specs."""
    import yaml
    return [p for p in sorted(folder.glob("*.yaml"))
            if "model" in (yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("path", model_specs_in(EXAMPLES), ids=lambda p: p.name)
def test_examples_load_and_round_trip(path):
    spec = load_spec(path)
    again = load_spec(dump_spec_yaml(spec), source=spec.source)
    assert again == spec
    assert spec_hash(again) == spec_hash(spec)
    assert dataclasses.asdict(again.model) == dataclasses.asdict(spec.model)
