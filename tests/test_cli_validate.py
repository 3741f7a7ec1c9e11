"""`hybridlab validate` and `hybridlab convert`: output, exit codes, never a traceback."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybridlab.cli.main import main

BAD = Path(__file__).parent / "bad_specs"
GOOD = "model: {d_model: 64, vocab_size: 16}\npattern: \"(M-) x 2 *-\"\n"


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok(capsys, good):
    code, out, err = run(capsys, "validate", good)
    assert (code, out, err) == (0, f"ok  {good}  6 layers  M-M-*-\n", "")


def test_validate_reports_every_problem_and_exits_2(capsys, good, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {d_model: 64, vocab_size: 16}\n"
                   "blocks:\n  M: {type: mamba2, d_sate: 8}\n"
                   "pattern: \"M-Q\"\n")
    code, out, err = run(capsys, "validate", good, bad)
    assert code == 2
    assert out == f"ok  {good}  6 layers  M-M-*-\n"
    assert err.splitlines() == [
        f"{bad}:3:21: blocks.M.d_sate: unknown key 'd_sate' in block 'M' (mamba2)",
        "    hint: did you mean 'd_state'?",
        f"{bad}:4:13: pattern: block 'Q' is not defined",
        "    hint: defined blocks: M; defaults: M (mamba2), * (attention), - (mlp), E (moe)"]


def test_validate_every_bad_spec_fails_cleanly(capsys):
    files = sorted(BAD.glob("*.yaml"))
    code, out, err = run(capsys, "validate", *files)
    assert code == 2 and out == ""
    for f in files:
        assert f"{f}:" in err, f.name
    assert "Traceback" not in err


def test_convert_to_megatron_and_hf(capsys, good):
    assert run(capsys, "convert", good, "--to", "megatron") == (0, "M-M-*-\n", "")
    code, out, _ = run(capsys, "convert", good, "--to", "hf")
    assert code == 0            # Mamba-2 / attention mixers with SwiGLU MLPs: a Bamba layout
    config = json.loads(out)
    assert (config["model_type"], config["num_hidden_layers"], config["attn_layer_indices"]) == \
        ("bamba", 3, [2])


def test_convert_to_yaml_writes_a_spec_that_validates(capsys, good, tmp_path):
    code, out, _ = run(capsys, "convert", good, "--to", "yaml")
    assert code == 0
    written = tmp_path / "written.yaml"
    written.write_text(out)
    assert run(capsys, "validate", written)[:2] == (0, f"ok  {written}  6 layers  M-M-*-\n")


def test_convert_from_megatron_round_trip(capsys, tmp_path):
    pattern = "M-M-M*-|M-ME*E"
    code, out, err = run(capsys, "convert", "--from", "megatron", pattern, "--d-model", "128")
    assert (code, err) == (0, "")
    spec_file = tmp_path / "from.yaml"
    spec_file.write_text(out)
    assert run(capsys, "validate", spec_file)[0] == 0
    assert run(capsys, "convert", spec_file, "--to", "megatron") == (0, pattern + "\n", "")


def test_convert_errors_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, "convert", "--from", "megatron", "MGM")
    assert (code, out) == (2, "")
    assert err.startswith("<megatron>:1:2: Megatron symbol 'G' has no hybridlab block")
    shared = tmp_path / "shared.yaml"
    shared.write_text("model: {d_model: 64, vocab_size: 16}\n"
                      "blocks: {S: {type: shared_attention, n_heads: 4}}\npattern: MSMS\n")
    code, out, err = run(capsys, "convert", shared, "--to", "megatron")
    assert (code, out) == (2, "")
    assert err.startswith(f"{shared}:2:20: blocks.S: layers 1, 3 ('S': shared_attention) cannot be "
                          f"expressed in Megatron notation")
    code, _, err = run(capsys, "convert", "--from", "megatron", "M", "--vocab-size", "0")
    assert code == 2 and err.startswith("<command line>:0:0: --vocab-size must be >= 1, got 0")


def test_real_command_never_prints_a_traceback(tmp_path, good):
    """The installed entry point, on garbage of every kind. Files with a model-spec key get the
    detailed YAML errors; any other file is "not a hybridlab model spec", quoting nothing."""
    (tmp_path / "garbage.yaml").write_text("{{{: : ]]\n\t- *&!\n")
    (tmp_path / "typo.yaml").write_text("model: {d_model: 8}\n\t- *&!\n")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)   # \x80 is on line 2, col 118
    (tmp_path / "nul.yaml").write_text("name: a\x00\n")
    (tmp_path / "nul-spec.yaml").write_text("model: a\x00\n")
    (tmp_path / "scalar.yaml").write_text("42\n")
    args = [good, tmp_path / "garbage.yaml", tmp_path / "typo.yaml", tmp_path / "binary.yaml",
            tmp_path / "nul.yaml", tmp_path / "nul-spec.yaml", tmp_path / "scalar.yaml",
            tmp_path / "missing.yaml", tmp_path]
    proc = subprocess.run([sys.executable, "-m", "hybridlab.cli.main", "validate", *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == f"ok  {good}  6 layers  M-M-*-\n"
    err = proc.stderr
    not_a_spec = "is not a hybridlab model spec"
    assert f"{tmp_path / 'garbage.yaml'}:0:0: {tmp_path / 'garbage.yaml'} {not_a_spec}: it is " \
           "not valid YAML" in err
    assert f"{tmp_path / 'typo.yaml'}:2:1: YAML syntax error: found character '\\t'" in err
    assert f"{tmp_path / 'binary.yaml'}:2:118: not a text file (invalid UTF-8)" in err
    assert f"{tmp_path / 'nul.yaml'}:0:0: {tmp_path / 'nul.yaml'} {not_a_spec}" in err
    assert f"{tmp_path / 'nul-spec.yaml'}:1:9: YAML error: unacceptable character U+0000" in err
    assert f"{tmp_path / 'scalar.yaml'}:0:0: {tmp_path / 'scalar.yaml'} {not_a_spec}: it is not " \
           "a YAML mapping" in err
    assert "42" not in err.replace(str(tmp_path), "")
    assert f"{tmp_path / 'missing.yaml'}:0:0: file not found" in err
    assert f"{tmp_path}:0:0: is a directory, not a spec file" in err


def test_validate_accepts_every_example_including_search_specs(capsys):
    examples = sorted(str(p) for p in (Path(__file__).parent.parent / "examples").glob("*.yaml"))
    assert main(["validate", *examples]) == 0
    out = capsys.readouterr().out
    assert out.count("ok  ") == len(examples)
    assert "search 'search-quick'" in out


def test_validate_reports_search_spec_errors_with_position(capsys, tmp_path):
    quick = Path(__file__).parent.parent / "examples" / "search-quick.yaml"
    bad = tmp_path / "bad-search.yaml"
    bad.write_text(quick.read_text().replace("lr: 3.0e-3", "lrr: 3.0e-3"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "lrr:" in text)
    assert f"{bad}:{line}:" in err and "train.lrr" in err and "did you mean 'lr'" in err
