"""Trainer: learning, schedule, clipping, reproducibility, early stops, budgets; `hybridlab train`."""
import math

import pytest
import torch
from torch import nn

import hybridlab
from hybridlab.cli.main import main as cli_main
from hybridlab.errors import SettingError, SpecError
from hybridlab.search.tasks import get_task
from hybridlab.search.trainer import (LRSchedule, NonFiniteLoss, TrainConfig, busy_time,
                                      make_optimizer, train_model, train_step)



PARITY = dict(train_max_len=16, test_min_len=24, test_max_len=64, test_examples=64)


class TinyLM(nn.Module):
    """A small GRU language model with the HybridModel training interface (fast on the CPU)."""

    def __init__(self, vocab, d=32, nan_after=None):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.rnn = nn.GRU(d, d, batch_first=True)
        self.head = nn.Linear(d, vocab)
        self.gate = nn.Parameter(torch.ones(4, 4))    # only the aux loss reaches this one
        self.calls, self.nan_after = 0, nan_after

    def forward(self, x):
        self.calls += 1
        out = self.head(self.rnn(self.embed(x))[0])
        if self.nan_after is not None and self.calls > self.nan_after:
            out = out * float("nan")
        return out

    def aux_loss(self):
        return (self.gate ** 2).sum()


def tiny(vocab=3, seed=0, **kw):
    torch.manual_seed(seed)
    return TinyLM(vocab, **kw)


def test_config_needs_a_budget_and_sane_values():
    with pytest.raises(SpecError, match="give a budget"):
        TrainConfig()
    with pytest.raises(SpecError, match="train.lr"):
        TrainConfig(steps=10, lr=0)
    with pytest.raises(SpecError, match="prune_at_frac"):
        TrainConfig(steps=10, prune_at_frac=1.5)


def test_cuda_graphs_setting_and_environment(monkeypatch):
    from hybridlab.search.graphed_step import env_allows_graphs
    from hybridlab.search.spec import make_train_config
    assert TrainConfig(steps=1).cuda_graphs is True
    assert make_train_config({"steps": 1, "cuda_graphs": False}).cuda_graphs is False  # YAML train:
    with pytest.raises(SpecError, match="train.cuda_graphs"):
        make_train_config({"steps": 1, "cuda_graphs": "sometimes"})
    for value, allowed in [("", True), ("1", True), ("0", False), ("off", False), (" No ", False)]:
        monkeypatch.setenv("HYBRIDLAB_CUDA_GRAPHS", value)
        assert env_allows_graphs() is allowed
    monkeypatch.setenv("HYBRIDLAB_CUDA_GRAPHS", "maybe")
    with pytest.raises(SettingError, match="HYBRIDLAB_CUDA_GRAPHS='maybe'"):
        env_allows_graphs()


def test_warmup_then_cosine_values():
    sched = LRSchedule(TrainConfig(steps=100, warmup_frac=0.1, min_lr_ratio=0.1))
    f = lambda s: sched(s, s / 100, (s + 1) / 100)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)                                 # cosine starts at the peak
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5)                     # halfway through the cosine
    assert f(99) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    by_steps = LRSchedule(TrainConfig(steps=100, warmup_steps=4, min_lr_ratio=0.0))
    g = lambda s: by_steps(s, s / 100, (s + 1) / 100)
    assert [g(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert g(4) == pytest.approx(1.0) and g(52) == pytest.approx(0.5)


def test_lr_curve_follows_the_schedule():
    cfg = TrainConfig(steps=20, batch_size=4, lr=0.01, warmup_frac=0.25, min_lr_ratio=0.0,
                      prune_at_frac=None, eval_points=1)
    result = train_model(tiny(), [get_task("parity", **PARITY)], cfg)
    lrs = [v for _, v in result.curves["lr"]]
    sched = LRSchedule(cfg)
    assert lrs == pytest.approx([0.01 * sched(s, s / 20, (s + 1) / 20) for s in range(20)])
    assert max(lrs) == pytest.approx(0.01) and lrs[-1] < 0.001


def test_learns_parity_well_above_chance():
    task = get_task("parity", **PARITY)
    cfg = TrainConfig(steps=150, batch_size=32, lr=1e-2, prune_at_frac=None, eval_points=2)
    result = train_model(tiny(), [task], cfg)
    assert result.status == "complete" and result.steps == 150
    assert result.scores["parity"] >= 0.9                  # chance 0.5; measured 1.0
    assert result.quality == result.scores["parity"]
    assert [s for s, _ in result.curves["eval/parity/accuracy"]] == [75, 150]
    assert result.train_tokens_per_s > 0 and result.peak_mem_bytes > 0
    assert result.kernel_time_share is None                # CPU
    assert result.cuda_graph is None and result.cuda_graph_fallback is None   # CPU: not tried


def test_same_seed_same_losses_other_seed_other_losses():
    task = get_task("in_context_recall", seq_len=16, train_examples=128, test_examples=8)
    cfg = TrainConfig(steps=12, batch_size=8, lr=3e-3, seed=5, prune_at_frac=None, eval_points=1)
    run = lambda c: [v for _, v in train_model(tiny(16), [task], c).curves["train/loss"]]
    first, second = run(cfg), run(cfg)
    assert first == second
    other = run(TrainConfig(**{**cfg.__dict__, "seed": 6}))
    assert other != first
    assert run(TrainConfig(**{**cfg.__dict__, "cuda_graphs": False})) == first   # CPU: eager anyway


def test_gradients_are_clipped():
    model = tiny()
    cfg = TrainConfig(steps=1, grad_clip=1e-3, aux_loss_weight=0.0)
    inputs, targets = get_task("parity", **PARITY).train_batch(8, torch.Generator().manual_seed(0))
    _, _, norm_before = train_step(model, make_optimizer(model, cfg, torch.device("cpu")),
                                   inputs, targets, cfg, torch.device("cpu"))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm_after = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    assert float(norm_before) > 10 * 1e-3                  # clipping had work to do
    assert norm_after == pytest.approx(1e-3, rel=1e-4)


def test_aux_loss_is_trained_with_its_weight():
    task = get_task("parity", **PARITY)
    model = tiny()
    cfg = TrainConfig(steps=5, batch_size=4, lr=1e-2, aux_loss_weight=0.5, weight_decay=0.0,
                      prune_at_frac=None, eval_points=1)
    result = train_model(model, [task], cfg)
    assert result.curves["train/aux_loss"][0][1] == pytest.approx(16.0)   # ones(4, 4) squared
    assert float(model.gate.detach().abs().max()) < 1.0                  # pushed down by the aux grad


def test_non_finite_loss_stops_with_the_step():
    model = tiny(nan_after=4)     # 1 probe forward + 3 good steps, then NaN
    cfg = TrainConfig(steps=20, batch_size=4, prune_at_frac=None)
    with pytest.raises(NonFiniteLoss) as e:
        train_model(model, [get_task("parity", **PARITY)], cfg)
    assert e.value.step == 3
    assert e.value.result.status == "failed"
    assert e.value.result.stop_reason == "failed: non-finite loss at step 3"
    assert len(e.value.result.curves["train/loss"]) == 3


def test_prunes_at_chance_level():
    # 400 held-out rows: a blind model scores 0.5 +- 0.025, well inside the 0.1 margin
    cfg = TrainConfig(steps=40, batch_size=4, lr=1e-9, prune_at_frac=0.3, prune_margin=0.1,
                      eval_points=1)
    result = train_model(tiny(), [get_task("parity", **{**PARITY, "test_examples": 400})], cfg)
    assert result.status == "pruned" and result.steps == 12
    assert result.stop_reason.startswith("pruned: chance-level accuracy (parity ")
    assert "vs chance 0.500) at 30% of budget" in result.stop_reason


def test_round_robin_over_tasks_and_combined_quality():
    tasks = [get_task("parity", **PARITY),
             get_task("in_context_recall", seq_len=16, train_examples=64, test_examples=8)]
    cfg = TrainConfig(steps=6, batch_size=4, prune_at_frac=None, eval_points=1,
                      task_weights={"parity": 3.0})
    result = train_model(tiny(16), tasks, cfg)
    assert [s for s, _ in result.curves["train/parity/loss"]] == [0, 2, 4]
    assert [s for s, _ in result.curves["train/in_context_recall/loss"]] == [1, 3, 5]
    s = result.scores
    assert result.quality == pytest.approx((3 * s["parity"] + s["in_context_recall"]) / 4)


def test_token_and_time_budgets_and_stop_requests():
    task = get_task("in_context_recall", seq_len=16, train_examples=64, test_examples=8)
    by_tokens = train_model(tiny(16), [task], TrainConfig(tokens=200, batch_size=4, prune_at_frac=None))
    assert by_tokens.tokens == 256 and by_tokens.steps == 4         # 64 tokens a step
    assert by_tokens.stop_reason == "budget used: 200 tokens"
    by_time = train_model(tiny(16), [task], TrainConfig(time_limit_s=0.3, batch_size=4,
                                                        prune_at_frac=None))
    assert by_time.status == "complete" and 0.3 <= by_time.train_s < 5
    calls = []
    stopped = train_model(tiny(16), [task], TrainConfig(steps=50, batch_size=4, prune_at_frac=None),
                          on_step=lambda *a: calls.append(a), should_stop=lambda: len(calls) >= 3)
    assert stopped.status == "stopped" and stopped.steps == 4      # the loss is read one step late
    assert [c[:2] for c in calls] == [(1, 50), (2, 50), (3, 50), (4, 50)]
    assert set(stopped.scores) == {"in_context_recall"}        # evaluated after the stop


def test_rejects_a_vocab_too_small_and_non_fp32_weights():
    with pytest.raises(ValueError, match="vocabulary"):
        train_model(tiny(3), [get_task("mqar")], TrainConfig(steps=1))
    with pytest.raises(ValueError, match="fp32"):
        train_model(tiny(3).to(torch.bfloat16), [get_task("parity")], TrainConfig(steps=1))


def test_busy_time_counts_overlaps_once():
    assert busy_time([(0, 2), (1, 3), (5, 6)]) == 4
    assert busy_time([]) == 0


SPEC = {"name": "tiny-hybrid", "model": {"d_model": 16, "vocab_size": 32},
        "blocks": {"*": {"type": "attention", "n_heads": 2},
                   "E": {"type": "moe", "n_experts": 4, "top_k": 1, "hidden_mult": 1.0}},
        "pattern": "*E"}


def test_real_hybrid_model_trains_with_moe_aux_loss():
    torch.manual_seed(0)
    model = hybridlab.build_model(hybridlab.load_spec(SPEC))
    task = get_task("in_context_recall", seq_len=16, train_examples=64, test_examples=8)
    result = train_model(model, [task], TrainConfig(steps=3, batch_size=4, prune_at_frac=None))
    assert result.status == "complete" and len(result.curves["train/loss"]) == 3
    assert all(v > 0 for _, v in result.curves["train/aux_loss"])      # the MoE balancing loss
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_real_attention_model_learns_in_context_recall():
    spec = hybridlab.load_spec({"name": "attn", "model": {"d_model": 32, "vocab_size": 16},
                                "blocks": {"*": {"type": "attention", "n_heads": 2},
                                           "-": {"type": "mlp", "hidden_mult": 2.0}},
                                "pattern": "*-*-"})
    torch.manual_seed(0)
    model = hybridlab.build_model(spec)
    task = get_task("in_context_recall", seq_len=32, train_examples=2048, test_examples=128)
    result = train_model(model, [task], TrainConfig(steps=120, batch_size=32, lr=3e-3,
                                                    prune_at_frac=None, eval_points=1))
    assert task.chance == 0.125
    assert result.scores["in_context_recall"] > 0.3          # measured 0.375 after 100 steps


@pytest.mark.gpu
def test_cuda_training_uses_bf16_autocast_and_measures_kernel_share():
    torch.manual_seed(0)
    model = hybridlab.build_model(hybridlab.load_spec(SPEC), device="cuda")
    task = get_task("in_context_recall", seq_len=64, test_examples=64)
    result = train_model(model, [task], TrainConfig(steps=30, batch_size=32, prune_at_frac=None),
                         device="cuda")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.kernel_time_share is not None and 0 < result.kernel_time_share <= 1
    assert result.peak_mem_bytes > 0 and result.train_tokens_per_s > 0


# -- the command ----------------------------------------------------------------------------------

def write_spec(tmp_path, vocab=32):
    import yaml
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "model": {"d_model": 16, "vocab_size": vocab}}))
    return path


def test_cli_trains_prints_scores_and_saves(tmp_path, capsys):
    from safetensors.torch import load_model
    spec = write_spec(tmp_path)
    out_dir = tmp_path / "run"
    code = cli_main(["train", str(spec), "--task", "in_context_recall:seq_len=16,test_examples=8",
                     "--task", "parity:train_max_len=8,test_min_len=8,test_max_len=12,test_examples=8",
                     "--steps", "4", "--batch-size", "4", "--device", "cpu", "--save", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0
    assert "in_context_recall" in out and "parity" in out and "quality:" in out
    assert "train tokens/s" in out
    assert (out_dir / "spec.yaml").read_text() == spec.read_text()
    assert '"status": "complete"' in (out_dir / "train.json").read_text()
    fresh = hybridlab.build_model(hybridlab.load_spec(str(out_dir / "spec.yaml")))
    load_model(fresh, str(out_dir / "model.safetensors"))   # loads back without missing keys


def test_cli_reports_cuda_graph_use_and_can_turn_it_off():
    from hybridlab.cli.main import build_parser
    from hybridlab.cli.train import format_result
    from hybridlab.search.trainer import TrainResult
    args = ["train", "spec.yaml", "--task", "parity"]
    assert build_parser().parse_args(args).cuda_graphs is True
    assert build_parser().parse_args(args + ["--no-cuda-graphs"]).cuda_graphs is False
    task = get_task("parity", **PARITY)
    result = TrainResult("complete", "budget used: 4 steps", 4, 256, 1.0, 1.0, 256.0, 1,
                         {"parity": 0.5}, {"parity": {"accuracy": 0.5}}, 0.5, {})
    assert "CUDA graphs" not in format_result(result, [task], "cpu")         # not tried
    result.cuda_graph = True
    assert "CUDA graphs: used\n" in format_result(result, [task], "cuda")
    result.cuda_graph, result.cuda_graph_fallback = False, "RuntimeError: sync while capturing"
    assert ("CUDA graphs: not used (capture failed, trained eagerly: RuntimeError: sync while "
            "capturing)") in format_result(result, [task], "cuda")


@pytest.mark.parametrize("args, words", [
    (["--task", "mqr"], "unknown task 'mqr'"),
    (["--task", "mqar:seq_ln=4"], "unknown setting 'seq_ln'"),
    (["--task", "mqar:seq_len"], "is not KEY=VALUE"),
    (["--task", "parity", "--steps", "0"], "train.steps"),
    (["--task", "bytes_lm"], "vocab_size 32 is smaller than the 256 tokens"),
])
def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys, args, words):
    code = cli_main(["train", str(write_spec(tmp_path)), "--device", "cpu"] + args)
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


class SlowFirstStepsLM(TinyLM):
    """Stands in for kernel compilation: the first forwards take a long time."""

    def __init__(self, vocab, slow_calls=2, delay_s=0.6):
        super().__init__(vocab)
        self.slow_calls, self.delay_s = slow_calls, delay_s

    def forward(self, x):
        if self.calls < self.slow_calls:
            import time
            time.sleep(self.delay_s)
        return super().forward(x)


def test_warmup_steps_count_neither_towards_time_budget_nor_throughput():
    from hybridlab.search.trainer import WARMUP_STEPS
    torch.manual_seed(0)
    task = get_task("in_context_recall", seq_len=16, train_examples=64, test_examples=8)
    model = SlowFirstStepsLM(16, slow_calls=WARMUP_STEPS + 1, delay_s=0.6)  # +1: a vocab check
    # prune_margin 1.0: the early-stop check always fires, at 30% of the 0.5 s time budget
    result = train_model(model, [task], TrainConfig(time_limit_s=0.5, batch_size=4,
                                                    prune_at_frac=0.3, prune_margin=1.0))
    # 1.2 s of "compilation" would pass the 30% point on the first step if it counted; excluded,
    # the check comes after real training steps
    assert result.status == "pruned" and result.steps > WARMUP_STEPS + 5
    assert 0.15 <= result.train_s < 1.0
    assert result.wall_s >= 0.6 + result.train_s        # the slow steps ran, off the clock
    # throughput from the timed steps only: far above what the slow first steps would give
    slow_rate = WARMUP_STEPS * 64 / (WARMUP_STEPS * 0.6)
    assert result.train_tokens_per_s > 5 * slow_rate
