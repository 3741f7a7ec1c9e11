"""GPU: every tiny example trains through the fused Triton kernels.

For each example: the Triton path's forward matches the reference path on the same weights
(fp32, where the only differences are the kernels' tf32/fp32 summation order), a few bf16-autocast
training steps run with finite loss on the Triton path, and the dispatcher really chose Triton.
"""
from pathlib import Path

import pytest
import torch

import hybridlab
from hybridlab.kernels import dispatch
from hybridlab.search.tasks import get_task
from hybridlab.search.trainer import TrainConfig, train_model

pytestmark = pytest.mark.gpu

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PUBLISHED = {"jamba-v0.1.yaml", "nemotron-h-8b.yaml"}
TINY = sorted(p.name for p in EXAMPLES.glob("*.yaml")
              if not p.name.startswith("search-") and p.name not in PUBLISHED)


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", TINY)
def test_example_trains_through_triton_kernels(name, monkeypatch):
    torch.manual_seed(0)
    spec = hybridlab.load_spec(EXAMPLES / name)
    model = hybridlab.build_model(spec, device="cuda")
    ids = torch.randint(0, spec.model.vocab_size, (2, 96), device="cuda")

    monkeypatch.setenv("HYBRIDLAB_KERNELS", "reference")
    with torch.no_grad():
        ref = model(ids)
    monkeypatch.delenv("HYBRIDLAB_KERNELS")
    assert dispatch.backend_for(ids) == "triton"
    with torch.no_grad():
        out = model(ids)
    assert torch.isfinite(out).all()
    # fp32 weights and activations; Triton's tl.dot runs in tf32 (10-bit mantissa) -> ~1e-3
    assert rel_err(out, ref) < 5e-3, name

    task = get_task("in_context_recall", vocab_size=16, seq_len=64, train_examples=512,
                    test_examples=32)
    result = train_model(model, [task], TrainConfig(steps=8, batch_size=8, lr=1e-3, seed=0),
                         device="cuda")
    losses = [v for _, v in result.curves["train/loss"]]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
