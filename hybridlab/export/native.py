"""Native export: a folder that rebuilds the exact trained model.

    DIR/spec.yaml            the model spec, every field written out
    DIR/model.safetensors    the weights (tied weights stored once)
    DIR/metrics.json         objectives, scores, costs, sizes, provenance
    DIR/README.md            model card: layout, sizes, scores, how to load

    model = hybridlab.load_model(DIR)       # HybridModel in eval mode, identical logits

``load_model`` also reads the Hugging Face export (``--format hf``), whose weights carry a
``model.`` prefix. It never runs code: a spec.yaml naming ``plugins`` is refused unless you
imported those modules yourself; weights are checked against the spec (names, shapes, kinds of
dtype) on the meta device before anything is allocated. Every problem with the folder is an
``ExportError`` naming the file.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hybridlab.composer.builder import build_model
from hybridlab.errors import ExportError
from hybridlab.export.safe import ExportDir, check_out_dir, safe_component
from hybridlab.export.source import TrialSource, find_trial, load_stored_spec
from hybridlab.storage import printable

SPEC_FILE = "spec.yaml"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
HF_PREFIX = "model."


@dataclass
class ExportResult:
    path: Path
    files: list[Path] = field(default_factory=list)
    study: str = ""
    trial: int | None = None
    format: str = "native"
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        what = f"{printable(self.study)} trial {self.trial}" if self.study else "model"
        lines = [f"exported {what} ({self.format}) to {self.path}"]
        lines += [f"  {p.name}  ({p.stat().st_size:,} bytes)" for p in self.files]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- loading -------------------------------------------------------------------------------------
def load_model(path: str | os.PathLike, device=None, dtype=None):
    """Rebuild a model exported by ``hybridlab export`` (native or hf): spec + weights ->
    ``HybridModel`` in eval mode, on ``device`` (default CPU), optionally cast to ``dtype``.
    Raises ``ExportError`` for anything wrong with the folder (see the module docstring)."""
    from safetensors.torch import load_file

    folder = Path(path)
    spec_file, weights = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder: give the folder 'hybridlab export ... "
                          f"--out DIR' wrote")
    for f in (spec_file, weights):
        if f.is_symlink():    # a downloaded folder must not read files from elsewhere
            raise ExportError(f"{f} is a symlink (to {os.readlink(f)}); an export's files are "
                              f"plain files: put a copy of the file in its place")
    if (hf := _load_hf_folder(folder, device, dtype)) is not None:    # transformers folders
        return hf
    if not spec_file.is_file():
        raise ExportError(f"{folder} holds no {SPEC_FILE}: not a hybridlab export (make one "
                          f"with 'hybridlab export ... --out DIR')")
    if not weights.is_file():
        raise ExportError(f"{folder} holds no {WEIGHTS_FILE}: the export is incomplete; export "
                          f"the model again")
    spec = load_export_spec(spec_file)
    prefix = check_weights(spec, weights)
    model = build_model(spec, device="cpu")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as e:           # changed on disk since the check
        raise _unreadable(weights, e) from None
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items()}
    _load_state(model, state, weights)
    if dtype is not None:
        model = model.to(dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _load_hf_folder(folder: Path, device, dtype):
    from hybridlab.export.hf_load import load_hf_folder
    return load_hf_folder(folder, device=device, dtype=dtype)


def load_export_spec(spec_file: Path):
    """An export's spec.yaml: validated, plugins never imported (``ExportError``)."""
    from hybridlab.specs.source import read_text_file

    try:
        text = read_text_file(spec_file, shown_as=str(spec_file))
    except Exception as e:
        raise ExportError(f"cannot read {spec_file}: {_first(e)}") from None
    return load_stored_spec(text, str(spec_file), where=str(spec_file), origin="an export",
                            then="call load_model again")


def _unreadable(weights: Path, e: Exception) -> ExportError:
    detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    return ExportError(f"{weights} is not a readable safetensors file ({detail}): it is "
                       f"damaged, truncated or not this export's weights. Export the model "
                       f"again, or copy the file again")


def check_weights(spec, weights: Path) -> str:
    """Compare the tensors in ``weights`` (header only: nothing loaded) with what ``spec``
    builds (on the meta device: nothing allocated). Returns the name prefix to strip ("" or
    the HF export's ``model.``); raises ``ExportError`` naming what does not match."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                      for k in f.keys()}
    except Exception as e:
        raise _unreadable(weights, e) from None
    prefix = HF_PREFIX if stored and all(k.startswith(HF_PREFIX) for k in stored) else ""
    stored = {k[len(prefix):]: v for k, v in stored.items()}
    meta = build_model(spec, device="meta")
    own = meta.state_dict()
    missing = _really_missing(meta, [k for k in own if k not in stored], stored)
    unexpected = [k for k in stored if k not in own]
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"not in the model: {_names(unexpected)}")
    for k, (shape, dt) in stored.items():
        want = own.get(k)
        if want is None:
            continue
        if tuple(want.shape) != shape:
            problems.append(f"{k} has shape {list(shape)}, the spec makes {list(want.shape)}")
        elif _kind(dt) != _kind(str(want.dtype)):
            problems.append(f"{k} is {dt}, the spec makes {str(want.dtype).replace('torch.', '')}")
        if len(problems) >= 6:
            break
    if problems:
        raise ExportError(f"{weights} does not match {weights.parent / SPEC_FILE}: "
                          + "; ".join(problems) + ". The spec or the weights were changed "
                          "after export; export the model again")
    return prefix


def _kind(dtype: str) -> str:
    """float / int / bool / complex, from a safetensors ("F32", "BF16", "I64") or torch name."""
    d = dtype.lower().replace("torch.", "")
    if d.startswith(("f", "bf")) or d in ("half", "double"):
        return "float"
    if d.startswith("c"):
        return "complex"
    if d.startswith("bool"):
        return "bool"
    return "int"


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _really_missing(model, missing: list[str], present) -> list[str]:
    """Missing names that are not tied copies of a present parameter (tied weights are
    stored once)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    ids: dict[int, list[str]] = {}
    for name, p in params.items():
        ids.setdefault(id(p), []).append(name)
    return [k for k in missing
            if not any(o in present for o in ids.get(id(params.get(k)), []) if o != k)]


def _load_state(model, state: dict, source: Path | str = WEIGHTS_FILE) -> None:
    """Load ``state`` strictly, allowing only tied copies to be absent from the file."""
    own = model.state_dict()
    missing = _really_missing(model, [k for k in own if k not in state], state)
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ExportError(f"{source}: the weights do not match the spec: missing "
                          f"{_names(missing) or 'nothing'}, not in the model "
                          f"{_names(unexpected) or 'nothing'}")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ExportError(f"{source}: the weights do not match the spec: "
                          f"{_first(e)}") from None


# -- writing -------------------------------------------------------------------------------------
def export_native(store, study: str, out_dir: str | os.PathLike, *, trial: int | None = None,
                  best: str | None = None, force: bool = False) -> ExportResult:
    """Export a trained trial (``trial`` number, or ``best`` by a metric) into ``out_dir``,
    which must be new or empty unless ``force`` (then the export's files are replaced)."""
    check_out_dir(out_dir, force)                  # refuse before any work
    src = find_trial(store, study, trial=trial, best=best)
    model = load_trial_model(src)
    return write_native(out_dir, model, source=src, force=force)


def load_trial_model(src: TrialSource):
    """The trial's trained model (its spec read without plugins, its weights checked)."""
    from safetensors.torch import load_file

    spec = src.spec
    prefix = check_weights(spec, src.weights)
    model = build_model(spec, device="cpu")
    state = load_file(str(src.weights), device="cpu")
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items()}
    _load_state(model, state, src.weights)
    return model.eval()


def write_native(out_dir: str | os.PathLike, model, *, source: TrialSource | None = None,
                 extra_metrics: dict | None = None, force: bool = False) -> ExportResult:
    """Write ``model`` (a HybridModel) as a native export; ``source`` adds the trial's metrics
    and provenance to metrics.json and the model card. ``out_dir`` must be new or empty
    unless ``force``."""
    from safetensors.torch import save_model

    from hybridlab.composer.canonical import dump_spec_yaml

    spec = model.spec
    out = ExportDir(out_dir, force=force)
    metrics = export_metrics(model, source)
    if extra_metrics:
        metrics.update(extra_metrics)
    files = [out.write_text(SPEC_FILE, dump_spec_yaml(spec))]
    meta = {"format": "hybridlab-native", "spec_name": spec.name}
    if source is not None:
        meta.update({"study": source.study, "trial": str(source.number)})
    files.append(out.write_with(WEIGHTS_FILE, lambda tmp: save_model(
        model.cpu(), tmp, metadata={k: str(v) for k, v in meta.items()})))
    from hybridlab.storage.repository import file_sha256
    metrics["weights_sha256"] = file_sha256(files[-1])[0]
    files.append(out.write_text(METRICS_FILE, json.dumps(metrics, indent=2, default=str) + "\n"))
    files.append(out.write_text(CARD_FILE, model_card(metrics)))
    return ExportResult(path=out.path, files=files, study=source.study if source else "",
                        trial=source.number if source else None, format="native")


def export_metrics(model, source: TrialSource | None) -> dict:
    """Everything metrics.json holds: sizes from the summary, layout notations, and the
    trial's objectives, scores, costs and training figures."""
    import hybridlab
    from hybridlab.composer import convert
    from hybridlab.composer.summary import summarize

    spec = model.spec
    summary = summarize(spec, contexts=(4096, 32768))
    out: dict = {
        "hybridlab_version": hybridlab.__version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "name": spec.name,
        "pattern": spec.pattern,
        "n_layers": len(spec.layers),
        "d_model": spec.model.d_model,
        "vocab_size": spec.model.vocab_size,
        "layer_types": dict(Counter(layer.type for layer in spec.layers)),
        "sizes": {k: summary[k] for k in ("params_total", "params_active", "params_embedding",
                                          "params_non_embedding", "state_bytes", "kv_bytes",
                                          "dtype")},
    }
    try:
        out["megatron_pattern"] = convert.to_megatron(spec)
    except Exception as e:          # a layout Megatron cannot express: say why
        out["megatron_pattern"] = None
        out["megatron_problem"] = _first(e)
    try:
        out["hf_layer_types"] = convert.to_hf(spec)
    except Exception as e:
        out["hf_layer_types"] = None
        out["hf_problem"] = _first(e)
    if source is not None:
        d = source.detail
        out.update({
            "study": source.study,
            "trial": source.number,
            "chosen_by": source.chosen_by,
            "state": d.get("state"),
            "objectives": source.objectives,
            "scores": d.get("scores") or {},
            "costs": d.get("costs") or {},
            "metrics": d.get("metrics") or {},
            "params": d.get("params") or {},
            "reused_from": d.get("reused_from"),
            "trained_on": (d.get("run") or {}).get("device"),
        })
    return out


def _first(e: Exception) -> str:
    problems = getattr(e, "problems", None)
    if problems:
        return "; ".join(p.message for p in problems)
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _md(text) -> str:
    """A database string made safe for one Markdown table cell or code span."""
    return str(text).replace("`", "'").replace("|", "/").replace("\n", " ").replace("\r", " ")


def model_card(m: dict) -> str:
    from hybridlab.composer.summary import human_bytes, human_count

    sizes = m["sizes"]
    title = _md(m.get("name", "model"))
    lines = [f"# {title}", ""]
    if m.get("study") is not None:
        lines += [f"Exported by hybridlab {m['hybridlab_version']} from study `{_md(m['study'])}`, "
                  f"trial {m['trial']} ({_md(m.get('chosen_by', ''))}).", ""]
    lines += ["## Layout", "",
              f"{m['n_layers']} layers, d_model {m['d_model']}, vocab {m['vocab_size']}.", "",
              "```", m["pattern"], "```", ""]
    lines += ["| block type | layers |", "|---|---|"]
    lines += [f"| {_md(t)} | {n} |" for t, n in sorted(m["layer_types"].items())]
    lines.append("")
    if m.get("megatron_pattern"):
        lines.append(f"Megatron `hybrid_layer_pattern`: `{m['megatron_pattern']}`  ")
    elif m.get("megatron_problem"):
        lines.append(f"Megatron pattern: not expressible ({_md(m['megatron_problem'])})  ")
    if m.get("hf_layer_types"):
        lines.append(f"Hugging Face layer types: `{json.dumps(m['hf_layer_types'])}`")
    lines += ["", "## Sizes", "", "| | |", "|---|---|",
              f"| parameters | {human_count(sizes['params_total'])} ({sizes['params_total']:,}) |",
              f"| active parameters | {human_count(sizes['params_active'])} |",
              f"| embedding parameters | {human_count(sizes['params_embedding'])} |",
              f"| decode state per sequence | {human_bytes(sizes['state_bytes'])} "
              f"({sizes['dtype']}) |"]
    for ctx, b in sizes["kv_bytes"].items():
        lines.append(f"| KV cache per sequence @ {ctx} | {human_bytes(b)} |")
    if m.get("objectives"):
        lines += ["", "## Search results", "", "| objective | direction | value |", "|---|---|---|"]
        lines += [f"| {_md(o['metric'])} | {o['direction']} | {_fmt(o['value'])} |"
                  for o in m["objectives"]]
    if m.get("scores"):
        lines += ["", "| task | score |", "|---|---|"]
        lines += [f"| {_md(k)} | {_fmt(v)} |" for k, v in sorted(m["scores"].items())]
    if m.get("costs"):
        lines += ["", "| cost metric | value |", "|---|---|"]
        lines += [f"| {_md(k)} | {_fmt(v)} |" for k, v in sorted(m["costs"].items())]
    lines += ["", "## How to load", "", "```python", "import hybridlab",
              "model = hybridlab.load_model(\"path/to/this/folder\")   # HybridModel, eval mode",
              "logits = model(input_ids)                                # (B, L, vocab)",
              "```", "",
              "Generate (byte-level models, vocab >= 256):", "", "```",
              "hybridlab generate path/to/this/folder --prompt \"Hello\" --max-new-tokens 32",
              "```", "",
              f"Weights: `{WEIGHTS_FILE}` (safetensors, sha256 `{m.get('weights_sha256', '')}`); "
              f"full spec: `{SPEC_FILE}`; all numbers: `{METRICS_FILE}`.", ""]
    return "\n".join(lines)


def bundle_name(study: str, number: int | None, fmt: str = "native") -> str:
    """Folder / zip name of an export of a trial: safe whatever the study is called."""
    base = safe_component(study, default="study")
    return f"{base}-trial-{number}" + ("-hf" if fmt == "hf" else "")
