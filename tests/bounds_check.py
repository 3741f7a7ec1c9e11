"""The Triton interpreter, checking every load and store against the storages of the launched
kernel's tensor arguments (the interpreter itself does not: an out-of-bounds read there silently
reads host memory that happens to be mapped). tests/conftest.py installs it for every CPU test
run; to check a script of your own:

    TRITON_INTERPRET=1 python tests/bounds_check.py SCRIPT.py [ARGS...]

The first access outside every argument's storage raises with the kernel, the pointer's byte
offset from the nearest argument, and how many lanes were out of bounds.
"""
import os
import runpy
import sys

import numpy as np

assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1"
import triton.runtime.interpreter as interp  # noqa: E402

_ranges: list[tuple[int, int, str]] = []      # (start, end, argument name) of the current launch
_kernel = [""]


def _record(self, args_dev, kwargs):
    args_hst, kwargs_hst = _orig_init(self, args_dev, kwargs)
    _ranges.clear()
    _kernel[0] = getattr(self.fn, "__name__", "?")
    names = list(self.arg_names)
    for i, a in enumerate(list(args_hst) + list(kwargs_hst.values())):
        if hasattr(a, "untyped_storage"):
            st = a.untyped_storage()
            name = names[i] if i < len(names) else "?"
            _ranges.append((st.data_ptr(), st.data_ptr() + st.nbytes(), name))
    return args_hst, kwargs_hst


def _check(ptrs, mask, what):
    addr = np.asarray(ptrs.data).astype(np.int64)
    on = np.broadcast_to(np.asarray(mask.data, dtype=bool), addr.shape)
    size = np.dtype(interp._get_np_dtype(ptrs.get_element_ty())).itemsize
    live = addr[on]
    if live.size == 0 or not _ranges:
        return
    ok = np.zeros(live.shape, dtype=bool)
    for lo, hi, _ in _ranges:
        ok |= (live >= lo) & (live + size <= hi)
    if not ok.all():
        bad = live[~ok]
        first = int(bad[0])
        lo, hi, name = min(_ranges, key=lambda r: min(abs(first - r[0]), abs(first - r[1])))
        raise RuntimeError(f"{what} out of bounds in {_kernel[0]}: {bad.size} lane(s); first at "
                           f"byte {first - lo} of {name!r} (storage {hi - lo} bytes)")


def _load(self, ptrs, mask, other, cache_policy, is_volatile):
    _check(ptrs, mask, "load")
    return _orig_load(self, ptrs, mask, other, cache_policy, is_volatile)


def _store(self, ptrs, value, mask, cache_policy):
    _check(ptrs, mask, "store")
    return _orig_store(self, ptrs, value, mask, cache_policy)


_orig_init = interp.GridExecutor._init_args_hst
_orig_load = interp.InterpreterBuilder.create_masked_load
_orig_store = interp.InterpreterBuilder.create_masked_store


def install() -> None:
    """Patch the interpreter (idempotent)."""
    interp.GridExecutor._init_args_hst = _record
    interp.InterpreterBuilder.create_masked_load = _load
    interp.InterpreterBuilder.create_masked_store = _store


if __name__ == "__main__":
    install()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
