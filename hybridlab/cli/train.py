"""`hybridlab train SPEC --task NAME ...`: train one model on proxy tasks and report its scores.

Task settings go after a colon: ``--task mqar:seq_len=128,kv_pairs=16`` (values are YAML, so
``--task bytes_lm:paths=[docs,README.md]`` works). Ctrl-C once stops training cleanly (final
evaluation, then saving); twice aborts.

``--nproc N`` (or running under ``torchrun --nproc-per-node N -m hybridlab.cli.main train ...``)
trains the one model data-parallel across N processes (hybridlab.search.distributed): the same
global batch as one process, rank 0 alone prints and saves.
"""
from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

from hybridlab.cli.options import add_allow_plugins, allow_plugins

CLI = "<command line>"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model spec on proxy tasks and print held-out scores",
        description="Train the model of SPEC on one or more generated tasks (MQAR, the MAD suite, "
                    "parity, modular arithmetic, byte-level LM on local text) and print per-task "
                    "held-out scores, the combined quality and the training throughput.")
    p.add_argument("spec", help="model spec YAML file")
    p.add_argument("--task", action="append", required=True, metavar="NAME[:KEY=VALUE,...]",
                   help="task to train on (repeatable); see the list below")
    p.add_argument("--steps", type=int, help="step budget (default 300 when no budget is given)")
    p.add_argument("--tokens", type=int, help="token budget")
    p.add_argument("--time-limit", type=float, metavar="S",
                   help="budget in seconds of training (evaluation time not counted)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="model init and batch order (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--eval-points", type=int, default=4, help="evaluations during training (+ final)")
    p.add_argument("--prune-at", type=float, metavar="FRAC",
                   help="stop early if every task is at chance at this fraction of the budget")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="train eagerly on CUDA instead of replaying each step as a CUDA graph")
    p.add_argument("--save", metavar="DIR",
                   help="write model.safetensors, spec.yaml and train.json to DIR")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel (DistributedDataParallel) across N processes on this "
                        "host: one GPU each on CUDA, gloo on the CPU; the global batch stays "
                        "--batch-size (or run the command under torchrun instead)")
    p.add_argument("--shard", action="store_true",
                   help="with --nproc or torchrun: shard parameters, gradients and optimizer "
                        "state with FSDP2 (chosen anyway on CUDA when the model does not fit one GPU)")
    add_allow_plugins(p)
    p.set_defaults(func=run)
    p.epilog = ("tasks: " + ", ".join(_task_names()) +
                ". Settings: --task mqar:seq_len=128,kv_pairs=16")


def _task_names() -> list[str]:
    from hybridlab.search.tasks import task_names
    return task_names()


def parse_task_arg(text: str) -> tuple[str, dict]:
    """``"mqar:seq_len=128,kv_pairs=16"`` -> ("mqar", {"seq_len": 128, "kv_pairs": 16})."""
    import yaml
    from hybridlab.errors import Problem, SpecError

    name, _, rest = text.partition(":")
    settings: dict = {}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SpecError(Problem(f"task setting {item!r} is not KEY=VALUE", file=CLI,
                                    field="--task", hint="e.g. --task mqar:seq_len=128,kv_pairs=16"))
        try:
            settings[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise SpecError(Problem(f"cannot read the value of {key.strip()!r}: {e}", file=CLI,
                                    field="--task")) from None
    return name.strip(), settings


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside [] and {} (YAML lists may hold commas)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def _on_command_line(e):
    """Re-point a SpecError raised while reading command-line values at the command line."""
    from hybridlab.errors import SpecError
    return SpecError([dataclasses.replace(p, file=CLI) for p in e.problems])


def run(args) -> int:
    from hybridlab.errors import Problem, SpecError
    from hybridlab.search import distributed

    prepared = _prepare(args)               # user errors surface here, before any process starts
    nproc, torchrun = getattr(args, "nproc", None), distributed.launched()
    if nproc is not None:
        if torchrun:
            raise SpecError(Problem("--nproc under torchrun: torchrun already started the processes",
                                    file=CLI, field="--nproc", hint="drop --nproc"))
        distributed.check_nproc(nproc, args.device)
        if prepared[2].batch_size < nproc:
            raise SpecError(Problem(f"--batch-size {prepared[2].batch_size} cannot be split over "
                                    f"{nproc} processes", file=CLI, field="--batch-size",
                                    hint=f"use at least {nproc}"))
        try:
            distributed.run_ranks(nproc, _train_rank, args)
        except distributed.RankFailed as e:
            return e.exit_code
        return 0
    if torchrun:        # errors as under --nproc: the first failing rank's message, its exit code
        return distributed.rank_main(_train_rank, (args, prepared))
    if getattr(args, "shard", False):
        raise SpecError(Problem("--shard trains across processes", file=CLI, field="--shard",
                                hint="add --nproc N, or run under torchrun"))
    return _train(args, *prepared, parallel=None)


def _train_rank(args, prepared=None) -> int:
    """One rank of a data-parallel run (started by --nproc or torchrun)."""
    from hybridlab.search.distributed import Parallel
    prepared = prepared or _prepare(args)
    parallel = Parallel.from_env(args.device, shard=True if args.shard else None)
    try:
        return _train(args, *prepared, parallel=parallel)
    finally:
        parallel.close()


def _prepare(args):
    """-> (spec, tasks, TrainConfig) from the command line."""
    import hybridlab
    from hybridlab.errors import Problem, SpecError
    from hybridlab.search.tasks import get_task, required_vocab
    from hybridlab.search.trainer import TrainConfig

    spec = hybridlab.load_spec(Path(args.spec), source=args.spec,
                               allow_plugins=allow_plugins(args))
    try:
        tasks = [get_task(name, **settings) for name, settings in map(parse_task_arg, args.task)]
        no_budget = args.steps is None and args.tokens is None and args.time_limit is None
        steps = 300 if no_budget else args.steps
        cfg = TrainConfig(steps=steps, tokens=args.tokens, time_limit_s=args.time_limit,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          eval_points=args.eval_points, prune_at_frac=args.prune_at,
                          cuda_graphs=args.cuda_graphs)
    except SpecError as e:
        raise _on_command_line(e) from None
    needed = required_vocab(tasks)
    if spec.model.vocab_size < needed:
        raise SpecError(Problem(
            f"vocab_size {spec.model.vocab_size} is smaller than the {needed} tokens the tasks need",
            file=spec.source or "<spec>", field="model.vocab_size",
            hint=f"set model.vocab_size: {needed} (or more)"))
    return spec, tasks, cfg


def _train(args, spec, tasks, cfg, parallel) -> int:
    import torch
    from tqdm import tqdm

    import hybridlab
    from hybridlab.search.trainer import NonFiniteLoss, train_model

    rank0 = parallel is None or parallel.is_rank0       # rank 0 alone prints and saves
    if parallel is None:
        device = place = _pick_device(args.device)
    else:
        device = parallel.device
        place = parallel.build_device(hybridlab.build_model(spec, device="meta").num_parameters())
        if rank0:
            print(parallel.describe(), flush=True)
    torch.manual_seed(args.seed)
    model = hybridlab.build_model(spec, device=place)
    bar = tqdm(desc=f"train {spec.name}", total=cfg.steps, unit="step", dynamic_ncols=True,
               disable=not rank0)

    def on_step(step, total, loss):
        if bar.total != total:
            bar.total = total
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    stop = _StopOnCtrlC(announce=rank0)     # every rank hears Ctrl-C; rank 0's decides
    try:
        with stop:
            result = train_model(model, tasks, cfg, device, on_step=on_step, should_stop=stop,
                                 parallel=parallel)
    except NonFiniteLoss as e:
        bar.close()
        if rank0:
            print(f"training failed: {e.result.stop_reason} (try a lower --lr)")
        return 1
    finally:
        bar.close()

    if parallel is not None and parallel.sharded and args.save:
        weights = parallel.full_state_dict(model)     # a collective: every rank gathers
        if rank0:
            model = hybridlab.build_model(spec, device="cpu")
            model.load_state_dict(weights)
    if not rank0:
        return 0
    print(format_result(result, tasks, device))
    if args.save:
        for line in save_run(Path(args.save), model, spec, result):
            print(line)
    return 0


def _pick_device(choice: str):
    import torch
    from hybridlab.errors import Problem, SpecError
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpecError(Problem("--device cuda, but CUDA is not available here", file=CLI,
                                field="--device", hint="use --device cpu or auto"))
    return torch.device(choice)


class _StopOnCtrlC:
    """should_stop() for the trainer: the first Ctrl-C asks for a clean stop, a second aborts."""

    def __init__(self, announce: bool = True):
        self.requested, self.announce = False, announce
        self._previous = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("\nstopping after this step (Ctrl-C again to abort)", flush=True)

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:      # not the main thread: keep the default behaviour
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def format_result(result, tasks, device) -> str:
    lines = [f"device {device}: {result.steps} steps, {result.tokens:,} tokens, "
             f"{result.wall_s:.1f} s ({result.train_tokens_per_s:,.0f} train tokens/s)",
             f"status: {result.status} ({result.stop_reason})"]
    if result.kernel_time_share is not None:
        lines.append(f"GPU busy share of step time: {result.kernel_time_share:.0%}")
    if result.cuda_graph is not None:
        why = result.cuda_graph_fallback
        lines.append("CUDA graphs: " + ("used" if result.cuda_graph else "not used")
                     + (f" (capture failed, trained eagerly: {why})" if why else ""))
    width = max(len("task"), *(len(t.label) for t in tasks))
    lines.append(f"{'task':<{width}}  {'held-out':>16}  {'score':>6}  {'chance':>6}")
    for t in tasks:
        metric = result.metrics[t.label]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metric.items())
        lines.append(f"{t.label:<{width}}  {shown:>16}  {result.scores[t.label]:6.3f}  {t.chance:6.3f}")
    lines.append(f"quality: {result.quality:.4f}")
    return "\n".join(lines)


def save_run(directory: Path, model, spec, result) -> list[str]:
    """Weights (safetensors), the spec YAML and the training result; returns lines to print."""
    import yaml
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors"
    save_model(model, str(weights))       # handles tied weights (embedding = head)
    spec_path = directory / "spec.yaml"
    source = Path(spec.source) if spec.source else None
    if source is not None and source.is_file():
        spec_path.write_text(source.read_text())            # keeps the author's comments
    else:
        spec_path.write_text(yaml.safe_dump(spec.raw, sort_keys=False))
    info = directory / "train.json"
    info.write_text(json.dumps(result.to_dict(), indent=1))
    return [f"saved {weights}", f"saved {spec_path}", f"saved {info}"]
