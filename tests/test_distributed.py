"""Data-parallel training (hybridlab.search.distributed): 2 processes on gloo train exactly what one
process trains with the same global batch, under DDP and FSDP2; rank 0 alone prints and writes;
a failing rank ends them all with its exit code.

Tolerance: the ranks see the same numbers as one process, summed in another order (each rank's
half-batch matmuls and reductions, then the all-reduce of the two halves), so losses, gradients and
AdamW's updates differ by float32 rounding only. Measured over these 6 steps (DDP and FSDP2 alike):
losses and gradient norms within 1.3e-7 relative, weights within 1.2e-7 absolute (one float32 ulp
at magnitude 1) of the one-process run. The assertions allow 1e-5 relative / 1e-6 absolute: room
for other CPUs' summation orders, and still far below a real mismatch (normalising each shard's
loss by its own target count instead of the global one is off by more than 1e-3 in the first loss,
see test_per_shard_normalisation_would_be_caught).
"""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import hybridlab
from hybridlab.cli.main import main as cli_main
from hybridlab.errors import SettingError
from hybridlab.search.distributed import Parallel, RankFailed, run_ranks
from hybridlab.search.tasks import get_task
from hybridlab.search.trainer import TrainConfig, train_model

# mamba2 (chunked SSD), attention, MLP; tied embeddings (one weight under two names)
SPEC = {"name": "ddp-tiny", "model": {"d_model": 16, "vocab_size": 8, "tie_embeddings": True},
        "blocks": {"M": {"type": "mamba2", "d_state": 8, "headdim": 8, "chunk_size": 4},
                   "*": {"type": "attention", "n_heads": 2}, "-": {"type": "mlp"}},
        "pattern": "M-*-"}
# variable-length parity: padded rows, so the two half-batches hold different target counts
PARITY = dict(train_max_len=8, test_min_len=8, test_max_len=12, test_examples=16)
CFG = TrainConfig(steps=6, batch_size=6, lr=3e-3, eval_points=2, prune_at_frac=None, seed=3)
RTOL, ATOL = 1e-5, 1e-6


def _model_and_task():
    torch.manual_seed(0)
    return hybridlab.build_model(hybridlab.load_spec(SPEC)), get_task("parity", **PARITY)


def _summary(result, weights):
    return {"curves": result.curves, "scores": result.scores, "quality": result.quality,
            "steps": result.steps, "status": result.status,
            "weights": {k: v.numpy().copy() for k, v in weights.items()}}


def _rank_runs(device="cpu", stops=True):
    """Runs on each rank: DDP, FSDP2, then a stop request rank 0 alone sees, a time budget."""
    parallel = Parallel.from_env(device, shard=False)
    out = {"rank": parallel.rank, "world": parallel.world_size}
    try:
        for mode, shard in (("ddp", False), ("fsdp", True)):
            run = replace(parallel, shard_params=shard, module=None)
            model, task = _model_and_task()         # built on the CPU; wrap() moves it
            result = train_model(model, [task], CFG, parallel.device, parallel=run)
            out[mode] = _summary(result, run.full_state_dict(model))
        if not stops:
            return out
        calls = []
        model, task = _model_and_task()
        stop = lambda: parallel.rank == 0 and len(calls) >= 3     # rank 1 never asks to stop
        result = train_model(model, [task], replace(CFG, steps=50), "cpu", parallel=parallel,
                             should_stop=stop, on_step=lambda *a: calls.append(a))
        out["stopped"] = (result.status, result.steps)
        model, task = _model_and_task()
        result = train_model(model, [task], replace(CFG, steps=None, time_limit_s=0.5,
                                                    eval_points=3),
                             "cpu", parallel=parallel)
        out["timed"] = (result.steps, result.curves["lr"], result.curves["eval/quality"])
    finally:
        parallel.close()
    return out


def _fail_on_rank1():
    """Rank 1 hits a user error at step 2 while rank 0 waits for it in a collective."""
    parallel = Parallel.from_env("cpu")
    model, task = _model_and_task()

    def on_step(step, total, loss):
        if parallel.rank == 1 and step == 2:
            raise SettingError("rank 1 refuses step 2")
    train_model(model, [task], replace(CFG, steps=50), "cpu", parallel=parallel, on_step=on_step)
    return 0


@pytest.fixture(scope="module")
def two_ranks():
    return run_ranks(2, _rank_runs)


@pytest.fixture(scope="module")
def one_process():
    model, task = _model_and_task()
    result = train_model(model, [task], CFG, "cpu")
    return _summary(result, {k: v.detach() for k, v in model.state_dict().items()})


def _assert_same_run(got, want):
    assert got["steps"] == want["steps"] and got["status"] == want["status"]
    assert got["curves"].keys() == want["curves"].keys()
    for key, curve in want["curves"].items():
        steps, values = zip(*curve)
        assert [s for s, _ in got["curves"][key]] == list(steps), key
        np.testing.assert_allclose([v for _, v in got["curves"][key]], values, rtol=RTOL,
                                   atol=ATOL, err_msg=key)
    assert got["scores"] == pytest.approx(want["scores"], rel=RTOL)
    assert got["weights"].keys() == want["weights"].keys()
    for name, w in want["weights"].items():
        np.testing.assert_allclose(got["weights"][name], w, rtol=0, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_train_what_one_process_trains(two_ranks, one_process, mode):
    assert sorted(two_ranks) == [0, 1] and two_ranks[0]["world"] == 2
    rank0, rank1 = two_ranks[0][mode], two_ranks[1][mode]
    _assert_same_run(rank0, one_process)             # per-step losses, lr, grad norms, eval
    assert rank1["curves"] == rank0["curves"]        # every rank logs the same global numbers
    assert rank1["weights"] == {}                    # the gathered weights are rank 0's alone
    assert one_process["curves"]["train/loss"][0][1] != one_process["curves"]["train/loss"][-1][1]


def test_per_shard_normalisation_would_be_caught(one_process):
    """The tolerance can fail: averaging per-half mean losses (not the global mean) is a
    different update on these padded batches, far outside ATOL."""
    model, task = _model_and_task()
    inputs, targets = task.train_batch(CFG.batch_size, torch.Generator().manual_seed(0))
    counts = [(t != -100).sum().item() for t in targets.tensor_split(2)]
    assert counts[0] != counts[1]                   # the shards really are uneven
    half = [torch.nn.functional.cross_entropy(model(i).flatten(0, 1), t.flatten(),
                                              ignore_index=-100)
            for i, t in zip(inputs.tensor_split(2), targets.tensor_split(2))]
    whole = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(),
                                              ignore_index=-100)
    assert abs((half[0] + half[1]).item() / 2 - whole.item()) > 1e3 * ATOL


def test_rank0_decides_stops_and_time_budgets(two_ranks):
    # on_step hears of a step one step late (its loss is read then): rank 0 asks after 4 steps
    assert two_ranks[0]["stopped"] == two_ranks[1]["stopped"] == ("stopped", 4)
    steps0, lr0, evals0 = two_ranks[0]["timed"]
    assert two_ranks[1]["timed"] == (steps0, lr0, evals0)     # same clock: same steps, lr, evals
    assert steps0 >= 1 and len(evals0) >= 1


def test_a_failing_rank_ends_all_with_its_exit_code(capfd):
    with pytest.raises(RankFailed) as failed:
        run_ranks(2, _fail_on_rank1)
    assert failed.value.exit_code == 2
    err = capfd.readouterr().err
    assert "[rank 1] rank 1 refuses step 2" in err and "Traceback" not in err


# -- the command line ---------------------------------------------------------------------------

TASK_ARGS = ["--task", "parity:" + ",".join(f"{k}={v}" for k, v in PARITY.items()),
             "--steps", "4", "--batch-size", "6", "--lr", "3e-3", "--seed", "3",
             "--eval-points", "2", "--device", "cpu"]


def _write_spec(tmp_path):
    path = tmp_path / "ddp-tiny.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return path


def _saved(directory: Path):
    from safetensors.torch import load_file
    info = json.loads((directory / "train.json").read_text())
    return info, load_file(str(directory / "model.safetensors"))


def _assert_same_saved(got_dir, want_dir):
    got, got_w = _saved(got_dir)
    want, want_w = _saved(want_dir)
    assert sorted(p.name for p in got_dir.iterdir()) == ["model.safetensors", "spec.yaml",
                                                         "train.json"]
    assert got["steps"] == want["steps"] and got["status"] == want["status"]
    for key in ("train/loss", "eval/quality"):
        np.testing.assert_allclose([v for _, v in got["curves"][key]],
                                   [v for _, v in want["curves"][key]], rtol=RTOL, atol=ATOL)
    assert got_w.keys() == want_w.keys()
    for name, w in want_w.items():
        torch.testing.assert_close(got_w[name], w, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def single_cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    assert cli_main(["train", str(_write_spec(tmp)), *TASK_ARGS, "--save", str(tmp / "out")]) == 0
    return tmp / "out"


def test_cli_nproc_trains_once_prints_and_saves_once(tmp_path, capfd, single_cli_run):
    capfd.readouterr()
    out_dir = tmp_path / "out"
    code = cli_main(["train", str(_write_spec(tmp_path)), *TASK_ARGS, "--nproc", "2",
                     "--save", str(out_dir)])
    out = capfd.readouterr().out
    assert code == 0
    assert out.count("data-parallel: DistributedDataParallel over 2 processes (gloo, cpu)") == 1
    assert out.count("quality:") == 1 and out.count("saved ") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp-tiny.yaml", "out"]
    _assert_same_saved(out_dir, single_cli_run)


def test_torchrun_with_fsdp2_matches_one_process(tmp_path, single_cli_run):
    out_dir = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "hybridlab.cli.main", "train", str(_write_spec(tmp_path)), *TASK_ARGS, "--shard",
         "--save", str(out_dir)], capture_output=True, text=True, env=env, timeout=300,
        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("data-parallel: FSDP2 (fully_shard) over 2 processes") == 1
    assert proc.stdout.count("quality:") == 1
    _assert_same_saved(out_dir, single_cli_run)


@pytest.mark.parametrize("args, words", [
    (["--nproc", "0"], "--nproc: must be a positive integer"),
    (["--nproc", "2", "--batch-size", "1"], "--batch-size 1 cannot be split over 2 processes"),
    (["--shard"], "--shard trains across processes"),
    (["--nproc", "2", "--device", "cuda"], "--device"),
])
def test_cli_user_errors_before_any_process_starts(tmp_path, capfd, args, words):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA present: --device cuda is valid here")
    code = cli_main(["train", str(_write_spec(tmp_path)), *TASK_ARGS, *args])
    err = capfd.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_builtin_blocks_use_every_parameter():
    """DDP runs without its unused-parameter search for hybridlab's own blocks
    (distributed._builtin_blocks_only): every example model gives every parameter a gradient."""
    from hybridlab.errors import UserError
    from hybridlab.search.distributed import _builtin_blocks_only
    examples = sorted(Path(__file__).resolve().parents[1].glob("examples/*.yaml"))
    checked = 0
    for path in examples:
        try:
            spec = hybridlab.load_spec(str(path))
        except UserError:                       # a search spec, not a model spec
            continue
        if spec.model.d_model > 512:            # the full-size layouts: same blocks, too slow
            continue
        torch.manual_seed(0)
        model = hybridlab.build_model(spec)
        model(torch.randint(0, spec.model.vocab_size, (2, 16))).float().square().mean().add(
            model.aux_loss()).backward()
        assert _builtin_blocks_only(model), path.name
        assert [n for n, p in model.named_parameters() if p.grad is None] == [], path.name
        checked += 1
    assert checked >= 8
    assert not _builtin_blocks_only(torch.nn.Linear(2, 2))   # any other model: DDP searches


@pytest.mark.gpu
def test_nccl_ranks_train_on_gpus():
    """The CUDA path: NCCL, one GPU per rank (2 where there are, else 1), DDP then FSDP2, under
    bf16 autocast. Every rank logs the same global numbers and the loss falls. (How close bf16
    runs come to one GPU's has not been measured yet, so no tolerance against it is asserted.)"""
    n = min(2, torch.cuda.device_count())
    ranks = run_ranks(n, _rank_runs, "cuda", False)
    assert sorted(ranks) == list(range(n))
    for mode in ("ddp", "fsdp"):
        curves = ranks[0][mode]["curves"]
        assert all(ranks[r][mode]["curves"] == curves for r in range(n)), mode
        losses = [v for _, v in curves["train/loss"]]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0], mode
        assert ranks[0][mode]["weights"].keys() == set(hybridlab.build_model(
            hybridlab.load_spec(SPEC), device="meta").state_dict()), mode
