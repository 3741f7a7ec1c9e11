"""Kernel tuning knobs read from the environment, in one place, each checked once at import.

They change speed, never results. Each op's launch plan (ops/<op>/plan.py, ``DEFAULT_PLAN``) is
built from them once at import; the defaults are the measured best (BENCHMARKS.md), the others
exist to be timed against them.

| variable | meaning | default |
|---|---|---|
| HYBRIDLAB_AUTOTUNE | 0: launch SSD kernels with their first config instead of autotuning | 1 |
| HYBRIDLAB_FAST_LAUNCH | 0: every launch through Triton's JIT, not the compiled kernel's launcher (launch.py) | 1 |
| HYBRIDLAB_SSD_BLOCK_T | SSD row block inside a chunk (16, 32 or 64) | 64 |
| HYBRIDLAB_SSD_MAX_CHUNK | longest SSD chunk the kernels run (16..256); a caller's longer chunk_size runs at this | 128 |
| HYBRIDLAB_SSD_SEQ_STATE | programs (batch x head x state tile) from which the SSD chunk states run as one sequential kernel per direction (fused_state.py); 0: never | 256 |
| HYBRIDLAB_SSD_SEQ_STATE_FILL | the forward's sequential state walk is cut into segments of chunks, walked in parallel, until (batch x head x state tile x segment) has this many programs | 256 |
| HYBRIDLAB_SSD_SEQ_STATE_BN | state columns per tile of those kernels (32, 64 or 128) | 64 |
| HYBRIDLAB_SSD_SEQ_STATE_ROWS | rows per step of those kernels (16, 32, 64 or 128; at most the chunk) | 128 |
| HYBRIDLAB_MAMBA3_SSD_CHUNK | SSD chunk length for Mamba-3, SISO and MIMO (power of two, 16..256; at most HYBRIDLAB_SSD_MAX_CHUNK) | SISO 64 where the sequential state kernels run, else 128; MIMO 128 |
| HYBRIDLAB_MAMBA3_ROTATE_PAIRS | rotation pairs per Mamba-3 backward program (power of two) | 16 |
| HYBRIDLAB_MAMBA3_ANGLE_CHUNK | steps per Mamba-3 rotation program (16, 32 or 64) | 64 |
| HYBRIDLAB_MAMBA3_ROTATE_FWD_WARPS | warps per Mamba-3 forward rotation program (4, 8 or 16) | 8 |
| HYBRIDLAB_MAMBA3_ROTATE_FWD_MAXNREG | register cap per thread of the forward rotation (0: none; 64, 96, 128, 168 or 255) | 128 |
| HYBRIDLAB_MAMBA3_ROTATE_BWD_WARPS | warps per Mamba-3 backward rotation program (4, 8 or 16) | 4 SISO, 8 MIMO |
| HYBRIDLAB_MAMBA3_MIMO_ROWS | rows (step, rank) per Mamba-3 MIMO output-kernel program (16, 32 or 64) | 16 |
| HYBRIDLAB_MAMBA3_MIMO_WARPS | warps per Mamba-3 MIMO output-kernel program (2, 4 or 8) | 2 |

(HYBRIDLAB_KERNELS, which picks Triton or the reference, belongs to dispatch.py.) Triton's own
TRITON_INTERPRET is read here too, once, as `INTERPRET`: the ops launch one warp per program
and exact math instead of PTX approximations under the interpreter.
"""
from __future__ import annotations

import os

from hybridlab.errors import SettingError


def _raw(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def env_int(name: str, default: int | None, allowed=None) -> int | None:
    """An integer knob; a clear error naming the variable for anything else."""
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected an integer") from None
    if allowed is not None and number not in allowed:
        raise SettingError(f"{name}={number}: expected one of {sorted(allowed)}")
    return number


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(name) or default).lower()
    if value not in choices:
        raise SettingError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


POWERS_OF_TWO = {1 << i for i in range(11)}

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

AUTOTUNE = env_choice("HYBRIDLAB_AUTOTUNE", "1", ("0", "1")) == "1"
FAST_LAUNCH = env_choice("HYBRIDLAB_FAST_LAUNCH", "1", ("0", "1")) == "1"
SSD_BLOCK_T = env_int("HYBRIDLAB_SSD_BLOCK_T", 64, {16, 32, 64})
SSD_MAX_CHUNK = env_int("HYBRIDLAB_SSD_MAX_CHUNK", 128, {16, 32, 64, 128, 256})
SSD_SEQ_STATE = env_int("HYBRIDLAB_SSD_SEQ_STATE", 256)
SSD_SEQ_STATE_FILL = env_int("HYBRIDLAB_SSD_SEQ_STATE_FILL", 256)
SSD_SEQ_STATE_BN = env_int("HYBRIDLAB_SSD_SEQ_STATE_BN", 64, {32, 64, 128})
SSD_SEQ_STATE_ROWS = env_int("HYBRIDLAB_SSD_SEQ_STATE_ROWS", 128, {16, 32, 64, 128})
MAMBA3_SSD_CHUNK = env_int("HYBRIDLAB_MAMBA3_SSD_CHUNK", None, {16, 32, 64, 128, 256})
MAMBA3_ROTATE_PAIRS = env_int("HYBRIDLAB_MAMBA3_ROTATE_PAIRS", None, POWERS_OF_TWO)
MAMBA3_ANGLE_CHUNK = env_int("HYBRIDLAB_MAMBA3_ANGLE_CHUNK", None, {16, 32, 64})
MAMBA3_ROTATE_FWD_WARPS = env_int("HYBRIDLAB_MAMBA3_ROTATE_FWD_WARPS", 8, {4, 8, 16})
MAMBA3_ROTATE_FWD_MAXNREG = env_int("HYBRIDLAB_MAMBA3_ROTATE_FWD_MAXNREG", 128, {0, 64, 96, 128, 168, 255})
MAMBA3_ROTATE_BWD_WARPS = env_int("HYBRIDLAB_MAMBA3_ROTATE_BWD_WARPS", None, {4, 8, 16})
MAMBA3_MIMO_ROWS = env_int("HYBRIDLAB_MAMBA3_MIMO_ROWS", None, {16, 32, 64})
MAMBA3_MIMO_WARPS = env_int("HYBRIDLAB_MAMBA3_MIMO_WARPS", None, {2, 4, 8})
