"""The peer, mamba-ssm 2.3.2.post1, loaded from the git-ignored ``.peer/`` for side-by-side timing.

None of the peer's code is part of hybridlab. ``benchmarks/gpu/prepare_local.sh`` unpacks its source
archive into ``.peer/``; on the GPU machine ``load_peer()`` imports its modules from there:

* ``import mamba_ssm`` would run its ``__init__``, which needs the compiled CUDA extension and
  more; a bare package object whose ``__path__`` points at the unpacked folder skips it, and the
  ``mamba_ssm.ops.triton...`` modules then import directly (Mamba-2 SSD, Mamba-3 SISO, ...).
* Mamba-1's scan is CUDA: ``build_selective_scan()`` compiles ``csrc/selective_scan`` for sm_90
  with ``torch.utils.cpp_extension.load`` (about 150 s on 16 cores, once per machine: ninja
  skips it when the build folder is current). ``load_peer()`` only imports an existing build,
  so a benchmark never starts a compile by surprise.

``python -m benchmarks.peer [--build]`` prints what is available and why not.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PEER_VERSION = "2.3.2.post1"
_REPO = Path(__file__).resolve().parents[1]

# our op -> (peer module, function): the entry points timed against ours
ENTRY_POINTS = {
    "selective_scan": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "selective_state_update": ("mamba_ssm.ops.triton.selective_state_update", "selective_state_update"),
    "ssd": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined"),
    "ssd_state_update": ("mamba_ssm.ops.triton.selective_state_update", "selective_state_update"),
    "mamba3": ("mamba_ssm.ops.triton.mamba3.mamba3_siso_combined", "mamba3_siso_combined"),
    "rmsnorm_gated": ("mamba_ssm.ops.triton.layernorm_gated", "rmsnorm_fn"),
}
_CONV = "the peer's conv is the separate causal-conv1d CUDA package, which this loader does not load"
NO_PEER = {"causal_conv1d": _CONV, "causal_conv1d_update": _CONV,
           "mamba3_state_update": "the peer's Mamba-3 decode step is CuTe DSL (quack-kernels), which this "
                                  "loader does not load"}
_EXT = "selective_scan_cuda"


@dataclass
class Peer:
    """What could be loaded: ``functions[op]`` or ``unavailable[op]`` (a reason) for every op."""
    root: Path | None
    functions: dict[str, Callable] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def get(self, op: str) -> Callable | None:
        return self.functions.get(op)

    def reason(self, op: str) -> str:
        return self.unavailable.get(op, "" if op in self.functions else "no peer entry point")


def peer_root(root: str | Path | None = None) -> Path | None:
    """The unpacked sdist: ``root``, else $HYBRIDLAB_PEER_DIR, else <repo>/.peer/mamba_ssm-<version>."""
    candidates = [root, os.environ.get("HYBRIDLAB_PEER_DIR"),
                  _REPO / ".peer" / f"mamba_ssm-{PEER_VERSION}", Path.cwd() / ".peer" / f"mamba_ssm-{PEER_VERSION}"]
    for c in candidates:
        if c and (Path(c) / "mamba_ssm" / "ops").is_dir():
            return Path(c).resolve()
    return None


def build_dir() -> Path:
    # Outside .peer/: copying .peer/ to the GPU machine again replaces that folder, build and all.
    return Path(os.environ.get("HYBRIDLAB_PEER_BUILD", "/tmp/hybridlab-peer-build"))


def _install_bare_package(root: Path) -> None:
    pkg_path = str(root / "mamba_ssm")
    current = sys.modules.get("mamba_ssm")
    if current is not None:
        if list(getattr(current, "__path__", [])) == [pkg_path]:
            return
        raise ImportError(f"another mamba_ssm is already imported ({getattr(current, '__file__', current)})")
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = [pkg_path]          # submodules resolve here; its __init__ never runs
    pkg.__version__ = PEER_VERSION
    sys.modules["mamba_ssm"] = pkg


def _nvcc_flags() -> list[str]:
    # The peer's own setup.py flags. The C++ standard is left to torch, and the target to
    # TORCH_CUDA_ARCH_LIST (9.0 = sm_90 only), which torch turns into -gencode flags.
    return ["-O3", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
            "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo"]


def build_selective_scan(root: Path | None = None, verbose: bool = False):
    """Compile (or, when the build folder is current, just load) the Mamba-1 CUDA scan."""
    from torch.utils.cpp_extension import load

    root = peer_root(root)
    if root is None:
        raise FileNotFoundError("peer source not found: run benchmarks/gpu/prepare_local.sh")
    csrc = root / "csrc" / "selective_scan"
    sources = [str(csrc / "selective_scan.cpp")] + sorted(glob.glob(str(csrc / "*.cu")))
    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")    # else torch builds for the GPU it sees (+ PTX)
    os.environ.setdefault("MAX_JOBS", "16")
    module = load(name=_EXT, sources=sources, extra_cflags=["-O3"], extra_cuda_cflags=_nvcc_flags(),
                  extra_include_paths=[str(csrc)], build_directory=str(out), verbose=verbose)
    sys.modules[_EXT] = module
    return module


def _import_built_selective_scan():
    if _EXT in sys.modules:
        return sys.modules[_EXT]
    built = sorted(build_dir().glob(f"{_EXT}*.so"))
    if not built:
        raise ImportError(f"Mamba-1 CUDA scan not compiled in {build_dir()}: run benchmarks/gpu/peer_setup.sh")
    import torch  # noqa: F401  -- loads the libraries the extension links against
    # a rebuild within one process is named selective_scan_cuda_v1.so; its init function too
    spec = importlib.util.spec_from_file_location(built[-1].name.split(".")[0], built[-1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[_EXT] = module
    return module


def load_peer(root: str | Path | None = None, ops=None, build: bool = False) -> Peer:
    """Import the peer's entry points for ``ops`` (default: all). Never raises: each op either
    lands in ``functions`` or gets a reason in ``unavailable``."""
    ops = list(ops) if ops is not None else list(ENTRY_POINTS) + list(NO_PEER)
    found = peer_root(root)
    peer = Peer(root=found)
    for op in ops:
        if op in NO_PEER:
            peer.unavailable[op] = NO_PEER[op]
    wanted = [op for op in ops if op in ENTRY_POINTS]
    if found is None:
        why = (f"no mamba_ssm-{PEER_VERSION} source under .peer/ "
               "(run benchmarks/gpu/prepare_local.sh where PyPI is reachable, and bring .peer/ along)")
        peer.unavailable.update({op: why for op in wanted})
        return peer
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception as e:  # pragma: no cover
        has_cuda, torch = False, None
        peer.unavailable.update({op: f"torch import failed: {e}" for op in wanted})
        return peer
    if not has_cuda:
        peer.unavailable.update({op: "no CUDA GPU here (the peer's kernels need one)" for op in wanted})
        return peer
    try:
        _install_bare_package(found)
    except ImportError as e:
        peer.unavailable.update({op: str(e) for op in wanted})
        return peer
    for op in wanted:
        module_name, fn_name = ENTRY_POINTS[op]
        try:
            if op == "selective_scan":
                build_selective_scan(found) if build else _import_built_selective_scan()
            peer.functions[op] = getattr(importlib.import_module(module_name), fn_name)
        except Exception as e:  # import errors, a failed build, missing triton features ...
            lines = str(e).strip().splitlines()
            peer.unavailable[op] = f"{type(e).__name__}: {lines[0] if lines else ''}"
    return peer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer",
                                     description="Load (and with --build compile) the peer mamba-ssm.")
    parser.add_argument("--build", action="store_true", help="compile the Mamba-1 CUDA scan if needed")
    parser.add_argument("--root", default=None, help="unpacked mamba_ssm sdist (default: .peer/...)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.build:
        try:
            build_selective_scan(args.root, verbose=args.verbose)
            print(f"selective_scan_cuda: built/loaded from {build_dir()}")
        except Exception as e:
            print(f"selective_scan_cuda: build failed: {type(e).__name__}: {e}", file=sys.stderr)
    peer = load_peer(args.root)
    print(f"peer root: {peer.root}")
    for op in sorted(set(peer.functions) | set(peer.unavailable)):
        print(f"  {op:24s} {'ok' if op in peer.functions else peer.unavailable[op]}")
    needed = [op for op in ("selective_scan", "ssd", "mamba3") if op not in peer.functions]
    return 1 if needed else 0


if __name__ == "__main__":
    sys.exit(main())
