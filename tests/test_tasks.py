"""Task generators: shapes, masking, layouts, determinism, held-out splits, metrics, scoring."""
import math
import sysconfig
from pathlib import Path

import pytest
import torch
from torch import nn

from hybridlab.errors import SpecError
from hybridlab.search.tasks import (IGNORE, combine_quality, get_task, required_vocab,
                                    task_names)



# Small settings per task so the whole file runs in seconds.
SMALL = {
    "mqar": dict(seq_len=32, kv_pairs=4, test_examples=16),
    "in_context_recall": dict(seq_len=32, train_examples=64, test_examples=16),
    "fuzzy_recall": dict(seq_len=32, train_examples=64, test_examples=16),
    "noisy_recall": dict(seq_len=32, train_examples=64, test_examples=16),
    "selective_copying": dict(seq_len=32, num_tokens_to_copy=4, train_examples=64, test_examples=16),
    "compression": dict(seq_len=8, train_examples=64, test_examples=16),
    "memorization": dict(train_examples=64, test_examples=16),
    "parity": dict(train_max_len=12, test_min_len=16, test_max_len=32, test_examples=16),
    "modular_arithmetic": dict(train_max_len=8, test_min_len=10, test_max_len=20, test_examples=16),
    "bytes_lm": dict(seq_len=32, max_train_bytes=20_000, max_val_bytes=2_000),
}
# Tasks whose target at a position is the next input token (all but the state-tracking ones).
NEXT_TOKEN = [n for n in SMALL if n not in ("parity", "modular_arithmetic")]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registry_lists_every_task():
    assert task_names() == sorted(SMALL)


def test_unknown_task_is_a_spec_error_with_a_suggestion():
    with pytest.raises(SpecError) as e:
        get_task("mqr")
    text = str(e.value)
    assert "unknown task 'mqr'" in text and "did you mean 'mqar'" in text


@pytest.mark.parametrize("settings, words", [
    (dict(seq_ln=3), "unknown setting 'seq_ln'"),
    (dict(seq_len="long"), "expected int"),
    (dict(kv_pairs=20, seq_len=32), r"at least 4 \* kv_pairs"),
    (dict(vocab_size=7), "even"),
])
def test_bad_settings_are_spec_errors(settings, words):
    with pytest.raises(SpecError, match=words):
        get_task("mqar", **settings)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_batches_have_the_right_shapes_ranges_and_masks(name):
    task = get_task(name, **SMALL[name])
    inputs, targets = task.train_batch(8, gen())
    assert inputs.dtype == targets.dtype == torch.long
    assert inputs.shape == targets.shape and inputs.shape[0] == 8
    assert 0 <= int(inputs.min()) and int(inputs.max()) < task.vocab_size
    has_target = targets != IGNORE
    assert has_target.any() and int(targets[has_target].max()) < task.vocab_size
    assert int(targets[has_target].min()) >= 0
    assert 0 <= task.chance < 1
    held_in, held_tgt = task.heldout()
    assert held_in.shape == held_tgt.shape and (held_tgt != IGNORE).any()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_data_is_deterministic_given_seeds(name):
    a, b = get_task(name, **SMALL[name]), get_task(name, **SMALL[name])
    x1, y1 = a.train_batch(4, gen(3))
    x2, y2 = b.train_batch(4, gen(3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = a.train_batch(4, gen(4))
    assert not torch.equal(x1, x3)
    assert torch.equal(a.heldout()[0], b.heldout()[0])
    if name != "bytes_lm":   # bytes_lm's held-out text is fixed by the file split, not a seed
        other = get_task(name, **{**SMALL[name], "seed": 1})
        assert not torch.equal(a.heldout()[0], other.heldout()[0])


@pytest.mark.parametrize("name", NEXT_TOKEN)
def test_targets_are_the_next_input_token(name):
    inputs, targets = get_task(name, **SMALL[name]).train_batch(16, gen())
    inner = targets[:, :-1]
    mask = inner != IGNORE
    assert torch.equal(inner[mask], inputs[:, 1:][mask])


def test_mqar_layout_and_answers():
    task = get_task("mqar", seq_len=32, kv_pairs=4, vocab_size=64)
    inputs, targets = task.train_batch(64, gen())
    assert ((targets != IGNORE).sum(1) == 4).all()           # every key queried once
    assert (targets[:, :8] == IGNORE).all()                   # no loss inside the context
    for row_in, row_tgt in zip(inputs, targets):
        context = dict(zip(row_in[0:8:2].tolist(), row_in[1:8:2].tolist()))
        assert len(context) == 4 and all(k < 32 <= v for k, v in context.items())
        for pos in (row_tgt != IGNORE).nonzero().flatten().tolist():
            assert context[int(row_in[pos])] == int(row_tgt[pos])


def _query_slot_counts(power_a):
    task = get_task("mqar", seq_len=64, kv_pairs=8, power_a=power_a)
    _, targets = task.train_batch(4000, gen())
    slots = ((targets != IGNORE).nonzero()[:, 1] - 16) // 2
    return torch.bincount(slots, minlength=24).float()


def test_mqar_query_positions_follow_a_power_law():
    skewed = _query_slot_counts(0.01)
    assert skewed[:6].sum() > 3 * skewed[-6:].sum()            # most queries near the context
    assert (skewed[:-1] >= skewed[1:] * 0.9).all()             # decreasing (up to noise)
    flat = _query_slot_counts(1.0)                             # power_a = 1 is uniform
    assert 0.9 < float(flat[:6].sum() / flat[-6:].sum()) < 1.1


def test_in_context_recall_targets_only_repeated_keys():
    inputs, targets = get_task("in_context_recall", seq_len=64).train_batch(32, gen())
    for row_in, row_tgt in zip(inputs, targets):
        seen = {}
        for i in range(0, 64, 2):
            k, v = int(row_in[i]), int(row_in[i + 1])
            assert k < 8 <= v
            assert int(row_tgt[i]) == (v if k in seen else IGNORE)
            assert seen.setdefault(k, v) == v                  # one map per sequence
        assert (row_tgt[1::2] == IGNORE).all()


def test_noisy_recall_noise_tokens_never_carry_targets():
    task = get_task("noisy_recall", seq_len=64, frac_noise=0.4)
    inputs, targets = task.train_batch(32, gen())
    noise = inputs >= 16
    assert noise.float().mean() > 0.1
    assert (targets[noise] == IGNORE).all()


def test_fuzzy_recall_targets_are_value_tokens():
    task = get_task("fuzzy_recall", seq_len=64)
    inputs, targets = task.train_batch(32, gen())
    tgt = targets[targets != IGNORE]
    assert ((tgt >= 8) & (tgt < 16)).all()
    assert (inputs == task.pad).any()                          # rows end with padding


def test_selective_copying_answers_are_the_data_tokens_in_order():
    task = get_task("selective_copying", seq_len=32, num_tokens_to_copy=4, vocab_size=16)
    inputs, targets = task.train_batch(16, gen())
    for row_in, row_tgt in zip(inputs, targets):
        region = row_in[:28]
        data = region[region < 16]
        assert len(data) == 4 and int(row_in[28]) == 17          # data tokens, then the marker
        assert torch.equal(row_tgt[28:], data)
        assert (row_tgt[:28] == IGNORE).all()


def test_compression_reconstructs_the_sequence():
    inputs, targets = get_task("compression", seq_len=8).train_batch(4, gen())
    assert inputs.shape[1] == 16 and (inputs[:, 8] == 16).all()
    assert torch.equal(targets[:, 8:], inputs[:, :8])


def test_memorization_uses_one_fixed_map():
    task = get_task("memorization", train_examples=64, test_examples=64)
    facts = {}
    for inputs, _ in (task.train_batch(64, gen()), task.heldout()):
        for k, v in zip(inputs[:, 0::2].flatten().tolist(), inputs[:, 1::2].flatten().tolist()):
            assert facts.setdefault(k, v) == v
    assert len(facts) > 64


def test_parity_labels_and_length_split():
    task = get_task("parity")                                   # train 3..40, test 40..256
    inputs, targets = task.train_batch(64, gen())
    lengths = (inputs != task.pad).sum(1)
    assert 3 <= int(lengths.min()) and int(lengths.max()) <= 40
    for row, tgt, n in zip(inputs, targets, lengths.tolist()):
        assert torch.equal(tgt[:n], row[:n].cumsum(0) % 2)     # parity of every prefix
        assert (tgt[n:] == IGNORE).all()
    held_in, held_tgt = task.heldout()
    held_len = (held_in != task.pad).sum(1)
    assert int(held_len.min()) >= 40 and int(held_len.max()) > 100
    assert ((held_tgt != IGNORE).sum(1) == 1).all()             # final state only
    final = held_tgt.gather(1, (held_len - 1).unsqueeze(1)).squeeze(1)
    assert torch.equal(final, held_in.masked_fill(held_in == task.pad, 0).sum(1) % 2)


def test_modular_arithmetic_evaluates_left_to_right():
    task = get_task("modular_arithmetic", modulus=5, train_max_len=10)
    inputs, targets = task.train_batch(16, gen())
    for row, tgt in zip(inputs.tolist(), targets.tolist()):
        value = row[0]
        assert tgt[0] == value
        for i in range(1, len(row) - 1, 2):
            op, b = row[i], row[i + 1]
            if op == task.pad:
                break
            value = {5: value + b, 6: value - b, 7: value * b}[op] % 5
            assert tgt[i] == IGNORE and tgt[i + 1] == value


class ParityOracle(nn.Module):
    """Computes the running parity exactly (pad counts as 0)."""

    def forward(self, x):
        bits = x.masked_fill(x == 2, 0)
        return nn.functional.one_hot(bits.cumsum(1) % 2, 3).float()


class Constant(nn.Module):
    def __init__(self, vocab, token=0):
        super().__init__()
        self.vocab, self.token = vocab, token

    def forward(self, x):
        out = torch.zeros(*x.shape, self.vocab)
        out[..., self.token] = 1.0
        return out


def test_accuracy_of_a_perfect_and_a_blind_model():
    task = get_task("parity", test_examples=400)
    assert task.evaluate(ParityOracle(), "cpu") == {"accuracy": 1.0}
    blind = task.evaluate(Constant(3), "cpu")["accuracy"]
    assert 0.4 < blind < 0.6                                     # 400 coin flips: 5 sigma


def test_bytes_lm_reads_real_stdlib_text_split_by_file():
    task = get_task("bytes_lm", seq_len=64, max_train_bytes=200_000, max_val_bytes=20_000)
    corpus = task.corpus()
    root = Path(sysconfig.get_paths()["stdlib"])
    assert corpus["train"].numel() == 200_000 and corpus["val"].numel() == 20_000
    assert not set(task.train_files) & set(task.val_files)
    for f in task.train_files + task.val_files:
        assert f.suffix == ".py" and root in f.parents and "site-packages" not in f.parts
    text = corpus["train"].numpy().tobytes()
    assert b"def " in text and b"import " in text
    again = get_task("bytes_lm", seq_len=64, max_train_bytes=200_000, max_val_bytes=20_000)
    again.corpus()
    assert again.train_files == task.train_files and again.val_files == task.val_files


def test_bytes_lm_uniform_model_scores_8_bits_per_byte():
    task = get_task("bytes_lm", **SMALL["bytes_lm"])
    metrics = task.evaluate(_Uniform(300), "cpu")    # a vocab larger than 256: bytes only count
    assert metrics["bpb"] == pytest.approx(8.0, abs=1e-5)
    assert task.score(metrics) == pytest.approx(0.0, abs=1e-6)
    assert task.score({"bpb": 2.0}) == 0.75


class _Uniform(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


def test_bytes_lm_user_paths(tmp_path):
    for i in range(40):
        (tmp_path / f"note{i}.txt").write_text(f"note number {i}\n" * 50)
    task = get_task("bytes_lm", paths=[str(tmp_path)], seq_len=16, max_val_bytes=64)
    task.corpus()
    assert task.val_files and not set(task.train_files) & set(task.val_files)
    assert b"note number" in task.corpus()["train"].numpy().tobytes()
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.txt").write_text("x" * 1000)
    with pytest.raises(SpecError, match="too little text"):
        get_task("bytes_lm", paths=[str(tmp_path / "only")], seq_len=16).corpus()
    with pytest.raises(SpecError, match="does not exist"):
        get_task("bytes_lm", paths=[str(tmp_path / "missing")])


def test_combine_quality_and_required_vocab():
    assert combine_quality({"a": 1.0, "b": 0.0}) == 0.5
    assert combine_quality({"a": 1.0, "b": 0.0}, {"a": 3.0}) == 0.75
    with pytest.raises(ValueError):
        combine_quality({"a": 1.0}, {"zzz": 1.0})
    with pytest.raises(ValueError):
        combine_quality({})
    tasks = [get_task("parity"), get_task("in_context_recall"), get_task("noisy_recall")]
    assert required_vocab(tasks) == 32
    assert math.isclose(get_task("mqar").chance, 2 / 256)
