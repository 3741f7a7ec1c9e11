"""Search specs: loading into typed objects, path syntax, space patching, samplers, and clear
errors (file:line:col, field, did-you-mean) for malformed specs."""
from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from hybridlab.errors import SpecError
from hybridlab.search import space as S
from hybridlab.search.spec import (PathSyntaxError, format_path, load_search_spec, parse_path)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

BASE = textwrap.dedent("""\
    name: tiny
    model: {d_model: 32, vocab_size: 64}
    blocks:
      M: {type: mamba2, d_state: 16, headdim: 16, expand: 2, chunk_size: 16}
      "*": {type: attention, n_heads: 2}
      "-": {type: mlp, hidden_mult: 2}
    layout: {layers: 3, mix: {M: 2, "*": 1}, ffn: ["-"]}
    """)

GOOD = textwrap.dedent("""\
    name: demo
    base: base.yaml
    space:
      blocks.M.type: {choice: [mamba1, mamba2, mamba3]}
      blocks.M.d_state: {choice: [4, 16]}
      layout.mix.M: {int: [1, 3]}
      blocks."*".n_heads: {choice: [1, 2]}
      train.lr: {float: [1.0e-4, 3.0e-3], log: true}
    tasks: [{name: mqar, vocab_size: 64, seq_len: 32, kv_pairs: 4, weight: 2}, parity]
    train: {steps: 20, batch_size: 4, lr: 1.0e-3}
    objectives:
      - {metric: quality, direction: maximize}
      - {metric: state_bytes@32768, direction: minimize}
    constraints: {params_max: 5.0e7, quality_min: 0.1}
    sampler: {name: nsga2, seed: 3, population_size: 4}
    trials: 6
    baselines:
      - {blocks.M.type: mamba2, layout.mix.M: 2}
    """)


def write(tmp_path, text, name="search.yaml", base=BASE):
    (tmp_path / "base.yaml").write_text(base)
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path, text, **kw):
    p = write(tmp_path, text, **kw)
    with pytest.raises(SpecError) as e:
        load_search_spec(p)
    return e.value.problems


def one(probs, field):
    found = [p for p in probs if p.field == field]
    assert found, f"no problem for {field}: {[p.format() for p in probs]}"
    return found[0]


# -- loading -----------------------------------------------------------------------------------
def test_good_spec_loads_into_typed_objects(tmp_path):
    spec = load_search_spec(write(tmp_path, GOOD))
    assert spec.name == "demo" and spec.trials == 6
    assert spec.base["model"]["d_model"] == 32 and spec.base_source.endswith("base.yaml")
    assert [p.name for p in spec.space] == ["blocks.M.type", "blocks.M.d_state", "layout.mix.M",
                                            'blocks."*".n_heads', "train.lr"]
    lr = spec.param("train.lr")
    assert (lr.kind, lr.target, lr.log, lr.low, lr.high) == ("float", "train", True, 1e-4, 3e-3)
    assert spec.param('blocks."*".n_heads').path == ("blocks", "*", "n_heads")
    assert spec.directions == ["maximize", "minimize"]
    assert spec.contexts() == [32768]
    c = {c.key: c for c in spec.constraints}
    assert c["params_max"].metric == "params_total" and c["params_max"].analytic   # 5.0e7 text
    assert c["params_max"].violation(6e7) > 0 >= c["params_max"].violation(4e7)
    assert not c["quality_min"].analytic and c["quality_min"].violation(0.05) > 0
    assert [t.label for t in spec.tasks] == ["mqar", "parity"] and spec.tasks[0].weight == 2.0
    assert spec.sampler.name == "nsga2" and spec.sampler.options == {"population_size": 4}
    assert spec.baselines == ({"blocks.M.type": "mamba2", "layout.mix.M": 2},)


def test_yaml_text_with_a_base_dir(tmp_path):
    write(tmp_path, GOOD)
    text = (tmp_path / "search.yaml").read_text()
    spec = load_search_spec(text, file="<editor>", base_dir=tmp_path)
    assert spec.base_source == str(tmp_path / "base.yaml") and spec.source == "<editor>"
    with pytest.raises(SpecError) as e:      # a missing base: the error points into the text
        load_search_spec(text.replace("base: base.yaml", "base: nowhere/base.yaml"),
                         file="<editor>", base_dir=tmp_path)
    assert e.value.problems[0].file == "<editor>" and e.value.problems[0].line == 2


@pytest.mark.parametrize("name", ["search-quick.yaml", "search-ratio-and-state.yaml"])
def test_examples_load(name):
    spec = load_search_spec(EXAMPLES / name)
    assert spec.space and spec.objectives and spec.trials >= (24 if "ratio" in name else 6)


def test_path_syntax():
    assert parse_path('blocks."*".n_heads') == ("blocks", "*", "n_heads")
    assert parse_path("blocks['*'].n_heads") == ("blocks", "*", "n_heads")
    assert parse_path("blocks.*.n_heads") == ("blocks", "*", "n_heads")
    assert parse_path("layout.ffn[0]") == ("layout", "ffn", 0)
    assert parse_path('a."x.y".b') == ("a", "x.y", "b")
    assert format_path(("blocks", "*", "n_heads")) == "blocks.*.n_heads"
    assert parse_path(format_path(("a", "x.y", 2))) == ("a", "x.y", 2)
    for bad, offset in [("a..b", 2), (".a", 0), ("a.", 1), ("a['x'", 1), ('a."x', 2),
                        ("a[x]", 1)]:
        with pytest.raises(PathSyntaxError) as e:
            parse_path(bad)
        assert e.value.offset == offset, bad


# -- applying candidates -----------------------------------------------------------------------
def test_apply_patches_a_copy_and_drops_fields_the_new_type_lacks(tmp_path):
    spec = load_search_spec(write(tmp_path, GOOD))
    values = {"blocks.M.type": "mamba1", "blocks.M.d_state": 4, "layout.mix.M": 3,
              'blocks."*".n_heads': 1, "train.lr": 2e-3}
    model, train, dropped = S.apply(spec, values)
    assert model["blocks"]["M"] == {"type": "mamba1", "d_state": 4, "expand": 2}
    assert dropped == {"M": ["headdim", "chunk_size"]}
    assert model["blocks"]["*"]["n_heads"] == 1 and model["layout"]["mix"]["M"] == 3
    assert train == {"steps": 20, "batch_size": 4, "lr": 2e-3}
    assert spec.base["blocks"]["M"]["type"] == "mamba2"        # base untouched
    import hybridlab
    assert hybridlab.load_spec(model).pattern.count("M") >= 1   # a valid model spec


def test_suggest_and_samplers(tmp_path):
    spec = load_search_spec(write(tmp_path, GOOD))
    study = optuna.create_study(directions=spec.directions,
                                sampler=S.make_sampler(spec.sampler, spec.space))
    trial = study.ask()
    values = S.suggest(trial, spec.space)
    assert values["blocks.M.type"] in ("mamba1", "mamba2", "mamba3")
    assert 1e-4 <= values["train.lr"] <= 3e-3 and 1 <= values["layout.mix.M"] <= 3
    assert isinstance(S.make_sampler(spec.sampler, spec.space), optuna.samplers.NSGAIISampler)

    grid = load_search_spec(write(tmp_path, """\
        name: g
        base: base.yaml
        space:
          layout.place: {choice: [even, [0]]}        # a list value: passed to Optuna as JSON
          layout.mix.M: {int: [1, 3], step: 2}
        tasks: [parity]
        train: {steps: 5}
        objectives: [{metric: quality, direction: maximize}]
        sampler: grid
        trials: 4
        """, name="g.yaml"))
    assert grid.param("layout.place").encoded
    points = list(S.enumerate_grid(grid.space))
    assert len(points) == 4 == S.grid_size(grid.space)
    study = optuna.create_study(sampler=S.make_sampler(grid.sampler, grid.space))
    seen = []

    def objective(t):
        v = S.suggest(t, grid.space)
        seen.append((repr(v["layout.place"]), v["layout.mix.M"]))
        return 0.0

    study.optimize(objective, n_trials=10)      # the grid sampler stops after 4
    assert sorted(seen) == sorted({(repr(p), m) for p in ("even", [0]) for m in (1, 3)})


def test_missing_leaf_with_a_default_is_accepted(tmp_path):
    spec = load_search_spec(write(tmp_path, """\
        name: d
        base: base.yaml
        space:
          blocks.M.d_conv: {choice: [2, 4]}     # not written in the base: a default field
          blocks.M.dt_rank: {choice: [2, 4]}    # only mamba1 has it; the type is searched
          blocks.M.type: {choice: [mamba1, mamba2]}
        tasks: [parity]
        train: {steps: 5}
        objectives: [{metric: quality, direction: maximize}]
        """))
    assert len(spec.space) == 3


# -- errors --------------------------------------------------------------------------------------
def test_errors_point_at_file_line_and_field(tmp_path):
    probs = problems(tmp_path, """\
        name: bad
        base: base.yaml
        space:
          blocks.M.d_stat: {choice: [16, 32]}
          blocks.Q.type: {choice: [mamba1]}
          layout.mix.M: {int: [15, 4]}
          train.lrr: {float: [1.0e-4, 1.0e-3]}
          train.lr: {float: [0, 1.0e-3], log: true}
          layout.layers: {int: [2, 4], bogus: 1}
        tasks: [{name: mqarr}, {name: parity, bogus: 1}]
        train: {steps: 10, batchsize: 4}
        objectives:
          - {metric: qualty, direction: maximize}
          - {metric: state_bytes@32768, direction: up}
          - {metric: state_bytes, direction: minimize}
        constraints: {params: 5, quality_min: high}
        sampler: {name: nsga, seed: 0, populaton_size: 4}
        trails: 4
        """)
    files = {p.file for p in probs}
    assert files == {str(tmp_path / "search.yaml")}
    p = one(probs, "trails")
    assert (p.line, p.col) == (18, 1) and "trials" in p.hint
    p = one(probs, "space.blocks.M.d_stat")
    assert p.line == 4 and "does not exist in the base spec" in p.message and "d_state" in p.hint
    p = one(probs, "space.blocks.Q.type")
    assert p.line == 5 and "blocks.Q" in p.message
    assert one(probs, "space.layout.mix.M.int").message == "low 15 is above high 4"
    assert one(probs, "space.train.lrr").line == 7
    assert "log range" in one(probs, "space.train.lr.float").message
    assert one(probs, "space.layout.layers.bogus").line == 9
    p = one(probs, "tasks.0.name")
    assert p.line == 10 and "unknown task" in p.message and "mqar" in p.hint
    assert one(probs, "tasks.1.bogus").line == 10
    p = one(probs, "train.batchsize")
    assert p.line == 11 and "batch_size" in p.hint
    p = one(probs, "objectives.0.metric")
    assert p.line == 13 and "unknown metric" in p.message and "quality" in p.hint
    assert one(probs, "objectives.1.direction").line == 14
    assert "context length" in one(probs, "objectives.2.metric").message
    assert "_max or _min" in one(probs, "constraints.params").message
    assert "number" in one(probs, "constraints.quality_min").message
    p = one(probs, "sampler.name")
    assert p.line == 17 and "nsga2" in p.hint
    # problems come in file order
    lines = [p.line for p in probs]
    assert lines == sorted(lines)


def test_type_and_range_errors(tmp_path):
    probs = problems(tmp_path, """\
        name: ""
        base: base.yaml
        space:
          blocks.M.d_state: {choice: []}
          layout.mix.M: {int: [1.5, 3]}
          layout.layers: {int: [1, 4], float: [1, 2]}
          layout.place: oops
        tasks: [parity]
        train: {steps: ten, lr: -1}
        objectives: [{metric: quality, direction: maximize}]
        sampler: {name: tpe, n_startup_trialz: 3}
        trials: 0
        baselines:
          - {layout.mix.M: 9, blocks.M.d_state: 16, nothere: 1}
        """)
    assert one(probs, "name").line == 1
    assert "non-empty" in one(probs, "space.blocks.M.d_state.choice").message
    assert "integers" in one(probs, "space.layout.mix.M.int").message
    assert "exactly one" in one(probs, "space.layout.layers").message
    assert one(probs, "space.layout.place").line == 7
    assert "integer" in one(probs, "train.steps").message
    assert one(probs, "sampler.n_startup_trialz").line == 11
    assert "n_startup_trials" in one(probs, "sampler.n_startup_trialz").hint
    assert ">= 1" in one(probs, "trials").message


def test_numbers_beyond_any_float_and_a_list_as_sampler_name(tmp_path):
    big = "1" + "0" * 400
    probs = problems(tmp_path, f"""\
        name: big
        base: base.yaml
        space:
          train.lr: {{float: [1, {big}]}}
        tasks: [{{name: parity, weight: {big}}}]
        train: {{steps: 5}}
        objectives: [{{metric: quality, direction: maximize}}]
        constraints: {{params_max: {big}}}
        sampler: {{name: [tpe]}}
        """)
    assert one(probs, "space.train.lr.float").message == \
        f"float bounds must be numbers, got [1, {big}]"
    assert one(probs, "tasks.0.weight").message == f"weight must be a number > 0, got {big}"
    assert one(probs, "constraints.params_max").message == \
        f"the limit must be a number, got {big}"
    p = one(probs, "sampler.name")
    assert (p.line, p.message, p.hint) == (9, "unknown sampler ['tpe']", "did you mean 'tpe'?")


def test_baseline_errors(tmp_path):
    probs = problems(tmp_path, """\
        name: b
        base: base.yaml
        space:
          layout.mix.M: {int: [1, 3]}
          blocks.M.type: {choice: [mamba1, mamba2]}
        tasks: [parity]
        train: {steps: 5}
        objectives: [{metric: quality, direction: maximize}]
        trials: 2
        baselines:
          - {layout.mix.M: 9, blocks.M.type: mamba4}
          - {layout.layers: 3}
          - {layout.mix.M: 2}
        """)
    assert "outside [1, 3]" in one(probs, "baselines.0.layout.mix.M").message
    assert "not one of the choices" in one(probs, "baselines.0.blocks.M.type").message
    p = one(probs, "baselines.1.layout.layers")
    assert p.line == 12 and "not in the space" in p.message
    assert "3 baselines but only 2 trials" in one(probs, "baselines").message


def test_syntax_duplicates_missing_keys_and_bad_base(tmp_path):
    probs = problems(tmp_path, "name: x\nspace: {a: [1]\n")
    assert probs[0].line >= 2 and "YAML syntax error" in probs[0].message
    probs = problems(tmp_path, """\
        name: x
        name: y
        base: nothere.yaml
        tasks: [parity]
        """)
    assert any("written twice" in p.message and p.line == 2 and p.field == "name" for p in probs)
    assert any("missing required key 'space'" in p.message for p in probs)
    assert any("missing required key 'objectives'" in p.message for p in probs)
    p = one(probs, "base")
    assert p.line == 3 and "file not found" in p.message
    # an invalid inline base: the model spec's own error, pointed into this file
    probs = problems(tmp_path, """\
        name: x
        base:
          name: t
          model: {d_model: 32, vocab_size: 64}
          pattern: "MQ"
        space: {model.d_model: {choice: [32, 64]}}
        tasks: [parity]
        train: {steps: 5}
        objectives: [{metric: quality, direction: maximize}]
        """)
    assert any(p.field.startswith("base") and p.line >= 2 for p in probs), \
        [p.format() for p in probs]


def test_vocab_too_small_for_the_tasks(tmp_path):
    probs = problems(tmp_path, """\
        name: v
        base: base.yaml
        space: {layout.mix.M: {int: [1, 3]}}
        tasks: [{name: mqar, vocab_size: 128}]
        train: {steps: 5}
        objectives: [{metric: quality, direction: maximize}]
        """)
    p = one(probs, "tasks")
    assert "vocabulary of 128" in p.message and p.line == 4


def test_cli_prints_errors_and_exits_2(tmp_path, capsys):
    from hybridlab.cli.main import main
    p = write(tmp_path, """\
        name: c
        base: base.yaml
        space: {blocks.M.d_stat: {choice: [1]}}
        tasks: [parity]
        train: {steps: 5}
        objectives: [{metric: quality, direction: maximize}]
        """)
    assert main(["search", str(p), "--db", str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err
    assert f"{p}:3:" in err and "blocks.M.d_stat" in err and "d_state" in err
    assert not (tmp_path / "x.db").exists()     # nothing created for a broken spec
