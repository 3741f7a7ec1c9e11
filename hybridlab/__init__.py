"""hybridlab: design hybrid sequence models (Mamba-1/2/3, attention, MoE, meta tokens, shared
attention) from YAML layer patterns, and search for the best mix."""
from hybridlab.blocks import register_block
from hybridlab.errors import Problem, SpecError

__version__ = "0.1.0"


def load_spec(path_or_dict, *, source: str | None = None, allow_plugins: bool = False):
    """YAML path, YAML text or dict -> validated ``ModelSpec``. Raises ``SpecError``.

    ``allow_plugins=True`` imports the modules a spec lists under ``plugins:`` (runs their code);
    by default only modules you have already imported are accepted."""
    from hybridlab.composer.loader import load_spec as _load
    return _load(path_or_dict, source=source, allow_plugins=allow_plugins)


def build_model(spec, device=None, dtype=None):
    """``ModelSpec`` (or anything ``load_spec`` takes) -> ``HybridModel`` (an nn.Module)."""
    from hybridlab.composer.builder import build_model as _build
    return _build(spec, device=device, dtype=dtype)


def load_model(path, device=None, dtype=None):
    """Rebuild an exported model (``hybridlab export`` directory) with its trained weights."""
    from hybridlab.export.native import load_model as _load
    return _load(path, device=device, dtype=dtype)


# Register the Hugging Face config/model classes once transformers is imported (now, if it
# already is); installing the hook imports nothing, so `import hybridlab` stays fast.
from hybridlab.export import hf_hook as _hf_hook  # noqa: E402

_hf_hook.install()

__all__ = ["load_spec", "build_model", "load_model", "register_block", "SpecError", "Problem",
           "__version__"]
