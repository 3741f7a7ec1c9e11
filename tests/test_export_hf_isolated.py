"""A Python process where hybridlab cannot be imported: how the HF export tests load a folder
"with transformers alone".

``run_isolated(jobs)`` starts ``python -I -S`` (no user site, no ``.pth`` files -- so not
hybridlab's editable install -- no PYTHONPATH, no current directory on the path) with only the
installed packages' folder on ``sys.path``; the child first checks that ``import hybridlab``
fails, then for each job loads the folder with ``AutoModelForCausalLM.from_pretrained`` and
returns its logits and greedy tokens (and, if asked, a text-generation pipeline's output).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

CHILD = r"""
import json, sys
try:
    import hybridlab
except ModuleNotFoundError:
    pass
else:
    raise SystemExit(f"hybridlab is importable in the isolated process: {hybridlab.__file__}")
import torch
from transformers import AutoModelForCausalLM
jobs = json.load(open(sys.argv[1]))
report = []
for job in jobs:
    hf = AutoModelForCausalLM.from_pretrained(
        job["dir"], trust_remote_code=job.get("trust_remote_code", False)).eval()
    x = torch.tensor(job["inputs"])
    prompt = torch.tensor(job["prompt"])
    with torch.no_grad():
        logits = hf(x).logits
        tokens = hf.generate(prompt, max_new_tokens=job["new_tokens"], do_sample=False)
    torch.save({"logits": logits, "tokens": tokens}, job["out"])
    entry = {"class": type(hf).__name__, "module": type(hf).__module__}
    if job.get("pipeline"):
        from transformers import pipeline
        pipe = pipeline("text-generation", model=job["dir"],
                        trust_remote_code=job.get("trust_remote_code", False))
        entry["pipeline"] = pipe(job["pipeline"], max_new_tokens=8, do_sample=False)
    report.append(entry)
print(json.dumps(report))
"""


def run_isolated(jobs: list[dict], timeout: int = 900) -> list[dict]:
    """Run ``jobs`` in a hybridlab-free interpreter; each job's results are merged into it:
    ``class``, ``module``, ``logits``, ``tokens`` (and ``pipeline``)."""
    site = sysconfig.get_paths()["purelib"]
    first = Path(jobs[0]["dir"])
    job_file = first.parent / f".{first.name}-jobs.json"
    for i, job in enumerate(jobs):
        job["out"] = str(first.parent / f".{first.name}-out-{i}.pt")
    job_file.write_text(json.dumps(jobs))
    code = f"import sys; sys.path.append({site!r})\n" + CHILD
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(job_file)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(first.parent))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for job, entry in zip(jobs, report):
        job.update(entry)
        job.update(torch.load(job["out"]))
    return jobs


def assert_same_greedy(got: torch.Tensor, expected: torch.Tensor, prompt_len: int,
                       eos: int | None = 0) -> None:
    """transformers' greedy tokens equal hybridlab's, row by row, up to and including the first
    eos (after it transformers pads with pad = eos; hybridlab's generate_tokens runs on)."""
    assert got.shape[0] == expected.shape[0]
    for row_got, row_want in zip(got.tolist(), expected.tolist()):
        new = row_want[prompt_len:]
        end = prompt_len + (new.index(eos) + 1 if eos is not None and eos in new else len(new))
        assert row_got[:end] == row_want[:end], (row_got, row_want)
        assert all(t == eos for t in row_got[end:]), row_got


def test_the_isolated_process_cannot_import_hybridlab(tmp_path):
    site = sysconfig.get_paths()["purelib"]
    code = (f"import sys; sys.path.append({site!r})\n"
            "import importlib.util\n"
            "print(importlib.util.find_spec('hybridlab') is None, "
            "importlib.util.find_spec('transformers') is not None)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                          text=True, timeout=120, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
